"""The default LLM: `configure(llm=...)` process-wide and `using(llm)` per context."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator

import pytest
from opto.utils.llm import (
    LLM,
    LiteLLM,
    LLMConfigurationError,
    LLMFactory,
    configure,
    default_llm,
    using,
)
from opto.utils.testing import DummyLLM

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def no_default() -> Iterator[None]:
    configure(llm=None)
    yield
    configure(llm=None)


def test_configure_makes_llm_return_the_default():
    judge = DummyLLM(lambda **_: "configured")
    assert configure(llm=judge) is judge
    assert LLM() is judge and default_llm() is judge
    assert LLMFactory.get_llm() is judge  # the "default" profile resolves as LLM() does
    assert LLM()(messages=USER).content == "configured"


def test_explicit_arguments_still_win_over_the_default():
    configure(llm=DummyLLM(lambda **_: "default"))
    explicit = LLM("openai/some-model", api_key="sk-x")
    assert isinstance(explicit, LiteLLM) and explicit.model_name == "openai/some-model"


def test_a_model_id_is_built_with_llm():
    configured = configure(llm="openai/served-model")
    assert isinstance(configured, LiteLLM) and LLM() is configured


def test_clearing_goes_back_to_the_environment(monkeypatch):
    monkeypatch.setattr("opto.utils.llm.factory.local_model_available", lambda: False)
    configure(llm=DummyLLM(lambda **_: "x"))
    configure(llm=None)
    with pytest.raises(LLMConfigurationError, match=r"configure\(llm=") as info:
        LLM()
    assert "opto-trainers[litellm]" in str(info.value)  # which extra brings the client


def test_configure_rejects_what_is_not_an_llm():
    with pytest.raises(LLMConfigurationError, match="not int"):
        configure(llm=3)


def test_using_overrides_within_the_block_only():
    outer = configure(llm=DummyLLM(lambda **_: "outer"))
    inner = DummyLLM(lambda **_: "inner")
    with using(inner) as active:
        assert active is inner and LLM() is inner
        with using(DummyLLM(lambda **_: "innermost")):
            assert LLM()(messages=USER).content == "innermost"
        assert LLM() is inner
    assert LLM() is outer


def test_using_is_scoped_to_the_context():
    """Another thread without the context sees the process-wide default; one started
    with the caller's context sees the override."""
    outer = configure(llm=DummyLLM(lambda **_: "outer"))
    seen: dict[str, object] = {}
    with using(DummyLLM(lambda **_: "scoped")) as scoped:
        plain = threading.Thread(target=lambda: seen.update(plain=LLM()))
        ctx = contextvars.copy_context()
        carried = threading.Thread(target=lambda: ctx.run(lambda: seen.update(carried=LLM())))
        for thread in (plain, carried):
            thread.start()
            thread.join()
    assert seen == {"plain": outer, "carried": scoped}


def test_using_in_concurrent_tasks_does_not_leak():
    async def task(name: str) -> str:
        with using(DummyLLM(lambda **_: name)):
            await asyncio.sleep(0)
            return LLM()(messages=USER).content

    async def main() -> list[str]:
        return await asyncio.gather(*(task(f"t{i}") for i in range(5)))

    assert asyncio.run(main()) == [f"t{i}" for i in range(5)]
    assert default_llm() is None
