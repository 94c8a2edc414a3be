"""LLM(): resolution order, reference environment variables, profiles and the local fallback."""

from __future__ import annotations

import logging

import pytest
from opto.utils.llm import LLM, LLMConfigurationError, LLMFactory, local
from opto.utils.llm import factory as factory_module
from opto.utils.testing import ScriptedLLM


class FakeLocal(ScriptedLLM):
    """Stands in for LocalLLM so the fallback is tested without llama.cpp."""

    def __init__(self, model_path=None, **kwargs):
        super().__init__(default="{}", model="local/fake", **kwargs)
        self.model_path = model_path


@pytest.fixture
def no_local(monkeypatch):
    monkeypatch.setattr(factory_module, "local_model_available", lambda: False)


@pytest.fixture
def fake_local(monkeypatch):
    monkeypatch.setattr(factory_module, "local_model_available", lambda: True)
    monkeypatch.setattr(local, "LocalLLM", FakeLocal)


def test_explicit_model_wins(monkeypatch):
    monkeypatch.setenv("OPTO_LLM_MODEL", "openai/env-model")
    llm = LLM("anthropic/claude-x", temperature=0.1)
    assert type(llm).__name__ == "LiteLLM" and llm.model_name == "anthropic/claude-x"
    assert llm.options == {"temperature": 0.1}
    assert LLM(model="gpt-4o-mini").model_name == "gpt-4o-mini"


def test_opto_env_then_reference_env(monkeypatch, no_local):
    monkeypatch.setenv("TRACE_LITELLM_MODEL", "openai/trace-model")
    assert LLM().model_name == "openai/trace-model"
    monkeypatch.setenv("OPTO_LLM_MODEL", "openai/opto-model")
    assert LLM().model_name == "openai/opto-model"


def test_trace_default_backend(monkeypatch):
    pytest.importorskip("openai", reason="CustomLLM's default client needs openai")
    monkeypatch.setenv("TRACE_DEFAULT_LLM_BACKEND", "CustomLLM")
    monkeypatch.setenv("TRACE_CUSTOMLLM_MODEL", "served-model")
    monkeypatch.setenv("TRACE_CUSTOMLLM_URL", "http://127.0.0.1:9/v1")
    llm = LLM()
    assert type(llm).__name__ == "CustomLLM" and llm.model_name == "served-model"
    monkeypatch.setenv("TRACE_DEFAULT_LLM_BACKEND", "Nope")
    with pytest.raises(LLMConfigurationError, match="valid backends"):
        LLM()
    monkeypatch.setenv("TRACE_DEFAULT_LLM_BACKEND", "AutoGen")
    with pytest.raises(LLMConfigurationError, match="AutoGen"):
        LLM()


def test_provider_key_picks_its_default_model(monkeypatch, fake_local):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    assert LLM().model_name.startswith("anthropic/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-oai")
    assert LLM().model_name == "gpt-4o-mini"


def test_local_fallback_logs_that_it_is_tiny(fake_local, caplog):
    with caplog.at_level(logging.INFO, logger="opto.utils.llm.factory"):
        llm = LLM()
    assert isinstance(llm, FakeLocal)
    (record,) = [r for r in caplog.records if r.name == "opto.utils.llm.factory"]
    assert "tiny model" in record.getMessage() and "offline" in record.getMessage()


def test_nothing_configured_lists_the_ways(no_local):
    with pytest.raises(LLMConfigurationError) as info:
        LLM()
    text = str(info.value)
    for hint in ("LLM(model=", "OPTO_LLM_MODEL", "OPENAI_API_KEY", "opto-utils[local]"):
        assert hint in text


def test_local_model_strings(fake_local, tmp_path):
    assert isinstance(LLM("local"), FakeLocal)
    gguf = str(tmp_path / "m.gguf")
    assert LLM(gguf).model_path == gguf
    assert LLM(f"local/{gguf}").model_path == gguf


def test_explicit_backend_class_and_name():
    llm = LLM(backend=ScriptedLLM, script=["x"])
    assert llm(messages=[{"role": "user", "content": "q"}]).content == "x"
    assert type(LLM(backend="LiteLLM", model="openai/m")).__name__ == "LiteLLM"


def test_profiles_carry_options(no_local):
    LLMFactory.register_profile("judge", "LiteLLM", model="openai/judge", temperature=0.0,
                                max_tokens=64)  # fmt: skip
    try:
        llm = LLM(profile="judge")
        assert llm.model_name == "openai/judge"
        assert llm.options == {"temperature": 0.0, "max_tokens": 64}
        override = LLM(profile="judge", temperature=0.7, model="openai/other")
        assert override.options["temperature"] == 0.7 and override.model_name == "openai/other"
        assert "judge" in LLMFactory.list_profiles()
        assert LLMFactory.get_profile_info("judge")["options"]["max_tokens"] == 64
    finally:
        factory_module._PROFILES.pop("judge")


def test_profile_options_reach_the_request():
    LLMFactory.register_profile("scripted", ScriptedLLM, script=["ok"], temperature=0.3)
    try:
        llm = LLM(profile="scripted")
        llm(messages=[{"role": "user", "content": "q"}])
        assert llm.requests[0].options == {"temperature": 0.3}
    finally:
        factory_module._PROFILES.pop("scripted")


def test_reference_profiles_exist_with_real_model_ids():
    info = LLMFactory.get_profile_info()
    assert {"default", "cheap", "premium", "fast", "reasoning", "local"} <= set(info)
    assert info["fast"]["model"] != "gpt-3.5-turbo-mini"


def test_unknown_profile():
    with pytest.raises(LLMConfigurationError, match="registered profiles"):
        LLM(profile="nope")


def test_default_profile_resolves_like_llm(monkeypatch):
    monkeypatch.setenv("OPTO_LLM_MODEL", "openai/x")
    assert LLM(profile="default").model_name == "openai/x"
