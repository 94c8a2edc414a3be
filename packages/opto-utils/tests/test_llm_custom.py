"""CustomLLM: any OpenAI-compatible client object, and the openai SDK over real HTTP."""

from __future__ import annotations

import asyncio
import pickle
from types import SimpleNamespace

import pytest
from opto.utils import track_usage
from opto.utils.llm import CustomLLM, RateLimitError, RetryPolicy, ServerError
from opto.utils.testing import ServerReply

USER = [{"role": "user", "content": "hi"}]


class FakeClient:
    """The shape of `openai.OpenAI`: client.chat.completions.create(**kwargs)."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.sent = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def _create(self, **kwargs):
        self.sent.append(kwargs)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return {
            "model": kwargs["model"],
            "choices": [{"message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }


class AsyncFakeClient(FakeClient):
    def _create(self, **kwargs):
        result = super()._create(**kwargs)

        async def later():
            return result

        return later()


def test_any_client_object():
    client = FakeClient(["hello"])
    llm = CustomLLM("my-model", client=client, temperature=0)
    with track_usage() as u:
        reply = llm(messages=USER, max_tokens=5)
    assert reply.content == "hello" and reply.usage.prompt_tokens == 3
    assert client.sent == [{"model": "my-model", "messages": USER, "temperature": 0,
                            "max_tokens": 5}]  # fmt: skip
    assert u.calls == 1


def test_client_errors_go_through_the_retry_policy():
    err = RateLimitError("429", retry_after=0)
    llm = CustomLLM("m", client=FakeClient([err, "ok"]), retry=RetryPolicy(sleep=lambda s: None))
    assert llm(messages=USER).content == "ok"


def test_async_client_is_awaited():
    llm = CustomLLM("m", client=FakeClient([]), async_client=AsyncFakeClient(["async"]))
    assert asyncio.run(llm.acall(messages=USER)).content == "async"


def test_sync_client_used_in_a_thread_for_acall():
    llm = CustomLLM("m", client=FakeClient(["threaded"]))
    assert asyncio.run(llm.acall(messages=USER)).content == "threaded"


def test_reference_env_defaults(monkeypatch):
    pytest.importorskip("openai")
    monkeypatch.setenv("TRACE_CUSTOMLLM_MODEL", "env-model")
    monkeypatch.setenv("TRACE_CUSTOMLLM_URL", "http://127.0.0.1:9/v1")
    llm = CustomLLM()
    assert llm.model_name == "env-model" and str(llm.model.base_url).startswith(
        "http://127.0.0.1:9"
    )


def test_openai_sdk_over_http(openai_server):
    pytest.importorskip("openai")
    openai_server.enqueue(ServerReply.error(500), ServerReply.ok("via sdk", prompt_tokens=9))
    sleeps = []
    llm = CustomLLM("served", base_url=openai_server.base_url, api_key="sk-x",
                    retry=RetryPolicy(sleep=sleeps.append))  # fmt: skip
    reply = llm(messages=USER)
    assert reply.content == "via sdk" and reply.usage.prompt_tokens == 9 and len(sleeps) == 1
    assert openai_server.requests[-1]["model"] == "served"
    openai_server.enqueue(*[ServerReply.error(502)] * 5)
    with pytest.raises(ServerError) as info:
        llm(messages=USER)
    assert info.value.status == 502
    assert asyncio.run(llm.acall(messages=USER)).content == "ok"


def test_pickles_and_rebuilds_its_client(openai_server):
    pytest.importorskip("openai")
    llm = CustomLLM("served", base_url=openai_server.base_url, api_key="sk-x")
    clone = pickle.loads(pickle.dumps(llm))
    assert clone(messages=USER).content == "ok"


def test_schema_capability_is_configurable():
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    native = FakeClient(["{}"])
    CustomLLM("m", client=native)(messages=USER, response_format=fmt)
    assert native.sent[0]["response_format"] == fmt
    prompted = FakeClient(["{}"])
    CustomLLM("m", client=prompted, supports_json_schema=False)(messages=USER, response_format=fmt)
    assert "response_format" not in prompted.sent[0]
    assert "JSON schema" in prompted.sent[0]["messages"][0]["content"]
