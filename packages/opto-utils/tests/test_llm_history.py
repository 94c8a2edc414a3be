"""Call history: off and empty by default; per-LLM and process-wide ring buffers."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator

import pytest
from opto.utils.llm import (
    CustomLLM,
    History,
    disable_history,
    enable_history,
    inspect_history,
)
from opto.utils.llm import history as history_module
from opto.utils.testing import DummyLLM, ServerReply

USER = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "line one\nline two"},
]


@pytest.fixture(autouse=True)
def no_global_history() -> Iterator[None]:
    disable_history()
    yield
    disable_history()


def echo(**kwargs) -> str:
    return "echo: " + kwargs["messages"][-1]["content"]


def test_off_by_default_records_nothing():
    llm = DummyLLM(echo)
    llm(messages=USER)
    assert llm.history is None and history_module.global_history() is None
    assert "history is off" in llm.inspect_history()
    assert "enable_history()" in inspect_history()


def test_per_llm_ring_buffer_keeps_the_newest_calls():
    llm = DummyLLM(echo, history=2)
    for text in ("a", "b", "c"):
        llm(messages=[{"role": "user", "content": text}], temperature=0)
    records = llm.history.last(5)
    assert [r.messages[0]["content"] for r in records] == ["b", "c"]
    assert records[-1].reply.content == "echo: c" and records[-1].options == {"temperature": 0}
    shown = llm.inspect_history(1)
    assert "user: c" in shown and "-> reply: echo: c" in shown and "options:" in shown
    assert "prompt +" in shown and "completion tokens" in shown


def test_multiline_messages_and_usage_are_readable():
    llm = DummyLLM(echo, history=5)
    llm(messages=USER)
    shown = llm.inspect_history()
    assert "  system: be brief" in shown
    assert "  user: line one\n    line two" in shown
    assert "dummy" in shown.splitlines()[0]


def test_global_history_sees_every_llm_and_failures():
    enable_history(10)

    def broken(**_):
        raise ValueError("not a provider error")

    DummyLLM(echo, model="first")(messages=USER)
    DummyLLM(echo, model="second")(messages=USER)
    with pytest.raises(ValueError):
        DummyLLM(broken, model="third")(messages=USER)
    models = [r.model for r in history_module.global_history().last(10)]
    assert models == ["first", "second", "third"]
    shown = inspect_history(3)
    assert "-> error: ValueError: not a provider error" in shown and "(failed)" in shown
    assert inspect_history(1).count("[") == 1


def test_env_var_turns_both_on(monkeypatch):
    monkeypatch.setenv("OPTO_LLM_HISTORY", "3")
    llm = DummyLLM(echo)
    llm(messages=USER)
    assert llm.history is not None and llm.history.capacity == 3 and len(llm.history) == 1


def test_copies_start_empty_with_the_same_capacity():
    llm = DummyLLM(echo, history=4)
    llm(messages=USER)
    for clone in (copy.deepcopy(llm), pickle.loads(pickle.dumps(History(4)))):
        target = clone.history if hasattr(clone, "history") else clone
        assert isinstance(target, History) and target.capacity == 4 and len(target) == 0


def test_records_real_http_calls_with_usage(openai_server):
    pytest.importorskip("openai")
    openai_server.enqueue(ServerReply.ok("served", prompt_tokens=7, completion_tokens=3))
    llm = CustomLLM("served", base_url=openai_server.base_url, api_key="sk-x", history=1)
    llm(messages=USER)
    record = llm.history.last()[0]
    assert record.usage.prompt_tokens == 7 and record.usage.completion_tokens == 3
    assert "(7 prompt + 3 completion tokens" in llm.inspect_history()
