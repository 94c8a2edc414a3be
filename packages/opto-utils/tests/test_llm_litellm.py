"""LiteLLM over real HTTP against the local OpenAI-compatible server (sync and async)."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import sys
import time

import pytest
from opto.utils import track_usage
from opto.utils.llm import (
    AuthenticationError,
    BadRequestError,
    LiteLLM,
    LLMConfigurationError,
    LLMConnectionError,
    LLMConnectionRefusedError,
    LLMTimeoutError,
    MalformedResponseError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from opto.utils.testing import OpenAIServer, ServerReply

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("litellm") is None, reason="the litellm extra is not installed"
    ),
    # litellm's own pydantic models warn when first used; not ours to fix.
    pytest.mark.filterwarnings("ignore::UserWarning:pydantic"),
]

USER = [{"role": "user", "content": "hello"}]


class Sleeps(list):
    """Records the delays the retry policy asked for (no real waiting)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def a(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make(server: OpenAIServer, sleeps: Sleeps, **kwargs) -> LiteLLM:
    retry = RetryPolicy(max_retries=2, base_delay=0.01, jitter=0.0, sleep=sleeps, asleep=sleeps.a)
    return LiteLLM("openai/test-model", api_base=server.base_url, api_key="sk-test-secret",
                   retry=retry, **kwargs)  # fmt: skip


def test_success_carries_usage(openai_server, sleeps):
    openai_server.enqueue(ServerReply.ok("hi there", prompt_tokens=12, completion_tokens=4))
    with track_usage() as u:
        reply = make(openai_server, sleeps)(messages=USER, temperature=0)
    assert reply.choices[0].message.content == "hi there"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 4)
    assert reply.usage.cost_usd is None  # an unmapped model has unknown cost, not zero
    assert reply.usage.latency_s > 0 and not reply.cached
    sent = openai_server.requests[0]
    assert sent["messages"] == USER and sent["model"] == "test-model" and sent["temperature"] == 0
    assert sent["_headers"]["authorization"] == "Bearer sk-test-secret"
    assert u.calls == 1 and u.prompt_tokens == 12 and u.unknown_cost_calls == 1


def test_429_honours_retry_after(openai_server, sleeps):
    openai_server.enqueue(ServerReply.error(429, retry_after=2), ServerReply.ok("later"))
    assert make(openai_server, sleeps)(messages=USER).content == "later"
    assert sleeps == [2.0] and len(openai_server.requests) == 2


def test_500_then_success(openai_server, sleeps):
    openai_server.enqueue(ServerReply.error(500), ServerReply.ok("recovered"))
    assert make(openai_server, sleeps)(messages=USER).content == "recovered"
    assert len(sleeps) == 1


def test_persistent_5xx_raises_typed_error_with_cause(openai_server, sleeps):
    openai_server.enqueue(*[ServerReply.error(503)] * 3)
    with track_usage() as u, pytest.raises(ServerError) as info:
        make(openai_server, sleeps)(messages=USER)
    assert info.value.status == 503 and info.value.attempts == 3
    assert type(info.value.__cause__).__module__.startswith("litellm")
    assert len(openai_server.requests) == 3 and u.errors == 1


def test_timeout(openai_server, sleeps):
    openai_server.enqueue(*[ServerReply.slow(5)] * 3)
    llm = make(openai_server, sleeps, timeout=0.3)
    with pytest.raises(LLMTimeoutError) as info:
        llm(messages=USER)
    assert info.value.__cause__ is not None and len(sleeps) == 2


def test_connection_refused_names_host_port_and_is_not_retried(sleeps):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm = LiteLLM("openai/m", api_base=f"http://127.0.0.1:{port}/v1", api_key="sk-x",
                  retry=RetryPolicy(max_retries=3, sleep=sleeps))  # fmt: skip
    with track_usage() as u, pytest.raises(LLMConnectionRefusedError) as info:
        llm(messages=USER)
    assert isinstance(info.value, LLMConnectionError) and not info.value.transient
    assert f"127.0.0.1:{port}" in str(info.value) and "server running" in str(info.value)
    assert info.value.attempts == 1 and sleeps == [] and u.errors == 1


def test_malformed_json_is_retried_then_typed(openai_server, sleeps):
    openai_server.enqueue(ServerReply.malformed(), ServerReply.ok("valid"))
    assert make(openai_server, sleeps)(messages=USER).content == "valid"
    openai_server.enqueue(*[ServerReply.malformed()] * 3)
    with pytest.raises(ServerError):
        make(openai_server, sleeps)(messages=USER)


def test_empty_choices(openai_server, sleeps):
    openai_server.enqueue(*[ServerReply.empty_choices()] * 3)
    with pytest.raises(MalformedResponseError, match="no choices"):
        make(openai_server, sleeps)(messages=USER)
    openai_server.enqueue(ServerReply.empty_choices(), ServerReply.ok("now"))
    assert make(openai_server, sleeps)(messages=USER).content == "now"


def test_client_errors_are_not_retried(openai_server, sleeps):
    openai_server.enqueue(ServerReply.error(401), ServerReply.error(400))
    with pytest.raises(AuthenticationError):
        make(openai_server, sleeps)(messages=USER)
    with pytest.raises(BadRequestError):
        make(openai_server, sleeps)(messages=USER)
    assert sleeps == [] and len(openai_server.requests) == 2


def test_rate_limit_exhausted(openai_server, sleeps):
    openai_server.enqueue(*[ServerReply.error(429, retry_after=1)] * 3)
    with pytest.raises(RateLimitError) as info:
        make(openai_server, sleeps)(messages=USER)
    assert info.value.retry_after == 1.0 and sleeps == [1.0, 1.0]


SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}


def test_json_schema_sent_natively_when_supported(openai_server, sleeps):
    openai_server.enqueue(ServerReply.ok('{"answer": 4}'))
    llm = make(openai_server, sleeps, supports_json_schema=True)
    assert llm(messages=USER, response_format=FORMAT).content == '{"answer": 4}'
    sent = openai_server.requests[0]
    assert sent["response_format"]["json_schema"]["schema"] == SCHEMA
    assert sent["messages"] == USER


def test_json_schema_in_prompt_when_unsupported(openai_server, sleeps):
    llm = make(openai_server, sleeps)
    assert llm.supports_json_schema is False  # litellm does not know this model
    llm(messages=USER, response_format=FORMAT)
    sent = openai_server.requests[0]
    assert sent["response_format"] == {"type": "json_object"}  # JSON mode, schema in prompt
    assert (
        sent["messages"][0]["role"] == "system"
        and '"required": ["answer"]' in (sent["messages"][0]["content"])
    )


def test_capability_comes_from_litellm_for_known_models():
    assert LiteLLM("gpt-4o-mini").supports_json_schema is True


def test_async_path(openai_server, sleeps):
    openai_server.enqueue(ServerReply.error(500), ServerReply.ok("async ok"))
    llm = make(openai_server, sleeps)

    async def main():
        with track_usage() as u:
            reply = await llm.acall(messages=USER)
            results = await asyncio.gather(*(llm.acall(messages=USER) for _ in range(3)))
        return reply, results, u

    reply, results, u = asyncio.run(main())
    assert reply.content == "async ok" and len(sleeps) == 1
    assert [r.content for r in results] == ["ok"] * 3 and u.calls == 4


def test_cache_hit_over_http_and_key_has_no_secrets(openai_server, sleeps, tmp_path):
    llm = make(openai_server, sleeps, cache=tmp_path / "c.db")
    first = llm(messages=USER)
    second = llm(messages=USER)
    assert second.cached and first.content == second.content
    assert len(openai_server.requests) == 1
    other_endpoint = LiteLLM("openai/test-model", api_base="http://127.0.0.1:9/v1",
                             api_key="sk-other", cache=tmp_path / "c.db")  # fmt: skip
    assert other_endpoint(messages=USER).cached  # endpoint and key are not in the key
    assert b"sk-test-secret" not in (tmp_path / "c.db").read_bytes()


def test_model_resolution_from_env(monkeypatch):
    monkeypatch.setenv("TRACE_LITELLM_MODEL", "openai/from-env")
    assert LiteLLM().model_name == "openai/from-env"
    monkeypatch.setenv("OPTO_LLM_MODEL", "openai/opto-env")
    assert LiteLLM().model_name == "openai/opto-env"


def test_no_model_is_a_configuration_error():
    with pytest.raises(LLMConfigurationError, match="OPTO_LLM_MODEL"):
        LiteLLM()


def test_reference_retry_arguments():
    llm = LiteLLM("openai/x", max_retries=2, base_delay=0.5)
    assert (llm.retry.max_retries, llm.retry.base_delay) == (2, 0.5)


def test_import_is_lazy_and_price_map_fetch_disabled():
    code = (
        "import os, sys\n"
        "os.environ.pop('LITELLM_LOCAL_MODEL_COST_MAP', None)\n"
        "import opto.utils.llm as m\n"
        "llm = m.LiteLLM('openai/x')\n"
        "assert 'litellm' not in sys.modules, 'imported too early'\n"
        "from opto.utils.llm.litellm_backend import get_litellm\n"
        "get_litellm()\n"
        "print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert "fetch" not in done.stderr.lower()


def test_missing_litellm_gives_install_hint(monkeypatch):
    from opto.utils.llm import litellm_backend

    monkeypatch.setattr(litellm_backend, "_LITELLM", None)
    monkeypatch.setitem(sys.modules, "litellm", None)
    with pytest.raises(ImportError, match=r"opto-utils\[litellm\]"):
        litellm_backend.get_litellm()


def test_importing_litellm_is_not_counted_as_call_latency(openai_server, sleeps, monkeypatch):
    # The first call imports litellm (seconds); that time was reported as the call's latency.
    from opto.utils.llm import litellm_backend

    real = litellm_backend.get_litellm
    pending_import = []

    def get_litellm():
        if pending_import:  # simulate the (slow) first import
            pending_import.clear()
            time.sleep(0.5)
        return real()

    monkeypatch.setattr(litellm_backend, "get_litellm", get_litellm)
    openai_server.enqueue(
        ServerReply.ok("warm-up"), ServerReply.ok("sync"), ServerReply.ok("async")
    )
    make(openai_server, sleeps)(messages=USER)  # litellm's own first-use work, not measured
    with track_usage() as u:
        pending_import.append(True)
        start = time.perf_counter()
        reply = make(openai_server, sleeps)(messages=USER)
        sync_wall = time.perf_counter() - start
        pending_import.append(True)
        start = time.perf_counter()
        areply = asyncio.run(make(openai_server, sleeps).acall(messages=USER))
        async_wall = time.perf_counter() - start
    assert reply.content == "sync" and areply.content == "async"
    # Each call took its wall time including the 0.5 s import; the latency must leave the
    # import out, however long the request itself took on a loaded machine.
    assert reply.usage.latency_s <= sync_wall - 0.5
    assert areply.usage.latency_s <= async_wall - 0.5
    assert [record.latency_s for record in u.records] == [
        reply.usage.latency_s,
        areply.usage.latency_s,
    ]
