"""LLM clients survive `copy.deepcopy` (optimizers and trainers deep-copy them)."""

from __future__ import annotations

import copy

import pytest
from opto.utils.llm import LiteLLM
from opto.utils.testing import OpenAIServer, ScriptedLLM, ServerReply

ASK = [{"role": "user", "content": "x"}]


def test_scripted_llm_copy_keeps_its_position_and_is_independent():
    llm = ScriptedLLM(["a", "b", "c"])
    llm(messages=ASK)
    twin = copy.deepcopy(llm)
    assert twin(messages=ASK).choices[0].message.content == "b"
    assert llm(messages=ASK).choices[0].message.content == "b"


def test_litellm_client_deep_copies():
    llm = LiteLLM("gpt-4o-mini")
    twin = copy.deepcopy(llm)
    assert twin is not llm and twin.model_name == llm.model_name


def test_custom_llm_copy_still_talks_to_the_server():
    pytest.importorskip("openai")
    from opto.utils.llm import CustomLLM

    with OpenAIServer(default=ServerReply.ok("hi")) as server:
        llm = CustomLLM("m", base_url=server.base_url, api_key="k", cache=False)
        twin = copy.deepcopy(llm)
        assert twin(messages=ASK).choices[0].message.content == "hi"
        assert llm(messages=ASK).choices[0].message.content == "hi"
        assert len(server.requests) == 2
