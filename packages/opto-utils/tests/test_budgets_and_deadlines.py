"""Budgets per request across threads, hard timeouts, retry deadlines, invalid messages."""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import threading
import time

import pytest
from opto.utils import usage
from opto.utils.concurrency import (
    ContextThreadPoolExecutor,
    DeadlineExceeded,
    call_with_deadline,
    start_thread,
)
from opto.utils.llm import (
    BadRequestError,
    CustomLLM,
    InvalidMessageError,
    LLMError,
    LLMTimeoutError,
    RetryPolicy,
    ServerError,
)
from opto.utils.testing import OpenAIServer, ScriptedLLM, ServerReply
from opto.utils.usage import BudgetExceeded, track_usage

USER = [{"role": "user", "content": "hello"}]
HAS_LITELLM = importlib.util.find_spec("litellm") is not None
HAS_OPENAI = importlib.util.find_spec("openai") is not None

# --- the context-propagating thread helpers ------------------------------------------------

_MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="unset")


def test_pool_calls_see_the_submitters_context():
    token = _MARK.set("caller")
    try:
        with ContextThreadPoolExecutor(max_workers=3) as pool:
            seen = list(pool.map(lambda _: _MARK.get(), range(6)))
            seen.append(pool.submit(_MARK.get).result())
    finally:
        _MARK.reset(token)
    assert seen == ["caller"] * 7


def test_start_thread_sees_the_callers_context():
    token = _MARK.set("starter")
    seen: list[str] = []
    try:
        start_thread(lambda: seen.append(_MARK.get()), name="probe").join()
    finally:
        _MARK.reset(token)
    assert seen == ["starter"]


def test_call_with_deadline_returns_raises_and_gives_up():
    assert call_with_deadline(lambda: 41 + 1, 5.0) == 42
    with pytest.raises(ZeroDivisionError):
        call_with_deadline(lambda: 1 / 0, 5.0)
    release = threading.Event()
    try:
        with pytest.raises(DeadlineExceeded, match="deadline"):
            call_with_deadline(release.wait, 0.05)
    finally:
        release.set()


def test_pool_threads_are_held_to_the_scopes_max_calls():
    llm = ScriptedLLM(default="ok")
    with track_usage(max_calls=2) as scope, ContextThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(llm, messages=USER, cache=False) for _ in range(8)]
        outcomes = [f.exception() for f in futures]
    assert llm.calls == 2 and scope.requests == 2 and scope.calls == 2
    assert sum(isinstance(e, BudgetExceeded) for e in outcomes) == 6


# --- budgets count requests, retries included -------------------------------------------


def test_retries_count_against_max_calls():
    llm = ScriptedLLM([ServerError("busy"), ServerError("busy"), "ok"])
    with track_usage(max_calls=2) as scope, pytest.raises(BudgetExceeded, match="max_calls=2"):
        llm(messages=USER)
    assert llm.calls == 2  # the third request never left
    assert scope.requests == 2 and scope.errors == 1


def test_cache_hits_are_not_requests(tmp_path):
    llm = ScriptedLLM(default="ok", cache=tmp_path / "cache.db")
    with track_usage(max_calls=1) as scope:
        llm(messages=USER)
        llm(messages=USER)
    assert llm.calls == 1 and scope.requests == 1 and scope.cached_calls == 1


def test_concurrent_requests_overshoot_max_usd_by_at_most_the_reserved_estimates():
    """Every thread holds its request open until all have been admitted or refused, so
    without reservations they would all see an untouched budget."""
    workers, cost, limit = 10, 0.01, 0.03
    lock = threading.Condition()
    decided = 0
    release = threading.Event()

    def decide() -> None:
        nonlocal decided
        with lock:
            decided += 1
            if decided == workers:
                release.set()

    def reply(messages, **options):
        decide()
        release.wait()
        return "ok"

    llm = ScriptedLLM(reply, cost_per_call=cost)
    refused: list[BudgetExceeded] = []

    def one() -> None:
        try:
            llm(messages=USER, cache=False)
        except BudgetExceeded as exc:
            refused.append(exc)
            decide()

    with track_usage(max_usd=limit) as scope, ContextThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(one) for _ in range(workers)]:
            future.result()
    assert scope.cost_usd <= limit + cost + 1e-9
    assert llm.calls + len(refused) == workers and refused[0].limit == "usd"
    assert scope.remaining().max_usd == pytest.approx(0.0, abs=1e-9)


def test_a_failed_request_releases_its_cost_estimate():
    llm = ScriptedLLM([BadRequestError("no"), "ok"], cost_per_call=0.01)
    with track_usage(max_usd=0.015) as scope:
        with pytest.raises(BadRequestError):
            llm(messages=USER)
        llm(messages=USER)  # the failed request's reservation did not stay
    assert scope.requests == 2 and scope.cost_usd == pytest.approx(0.01)


def test_remaining_budget_is_the_tightest_of_the_active_scopes():
    llm = ScriptedLLM(default="ok", cost_per_call=0.5)
    with track_usage(max_calls=5, max_usd=10.0):
        llm(messages=USER)
        with track_usage(max_calls=2):
            left = usage.remaining_budget()
    assert (left.max_calls, left.max_usd, left.max_tokens) == (2, 9.5, None)


def test_budget_exceeded_survives_pickling():
    import pickle

    error = BudgetExceeded("spent", limit="usd", budget=1.0, used=1.5)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.limit, copy.budget, copy.used) == ("spent", "usd", 1.0, 1.5)


def test_remote_usage_counts_its_requests():
    with track_usage(max_calls=3) as scope:
        usage.record_remote(usage.UsageRecord(model="m", prompt_tokens=3, attempts=2))
        usage.record_remote(usage.UsageRecord(model="m", cached=True))
        assert usage.remaining_budget().max_calls == 1
    assert scope.requests == 2 and scope.calls == 2


# --- messages that cannot be sent -------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "broken \ud800 text"}],
        [{"role": "user", "content": [{"type": "text", "text": "x\udfff"}]}],
    ],
)
def test_lone_surrogate_is_a_typed_error_before_any_request(messages):
    llm = ScriptedLLM(default="ok")
    with track_usage() as scope, pytest.raises(InvalidMessageError, match="surrogate") as info:
        llm(messages=messages)
    assert isinstance(info.value, LLMError) and not info.value.transient
    assert llm.calls == 0 and scope.calls == 0 and scope.requests == 0
    with pytest.raises(InvalidMessageError):
        asyncio.run(llm.acall(messages=messages))
    assert llm.calls == 0


# --- the retry deadline ---------------------------------------------------------------


def test_no_retry_wait_runs_past_the_deadline():
    sleeps: list[float] = []
    policy = RetryPolicy(base_delay=10.0, max_delay=10.0, jitter=0.0, deadline=1.0,
                         sleep=sleeps.append)  # fmt: skip
    llm = ScriptedLLM([ServerError("busy"), "ok"], retry=policy)
    with pytest.raises(ServerError):
        llm(messages=USER)
    assert llm.calls == 1 and sleeps == []


def test_retry_deadline_is_validated():
    with pytest.raises(ValueError):
        RetryPolicy(deadline=0)


# --- timeouts are deadlines against a reply trickling in byte by byte --------------------

TIMEOUT = 2.0


def _trickling_server() -> OpenAIServer:
    # ~300 bytes at 0.2 s each: a minute of reply, every read well inside the timeout.
    return OpenAIServer(default=ServerReply.trickle(0.2))


def _raises_timeout_within_bound(call) -> None:
    start = time.monotonic()
    with pytest.raises(LLMTimeoutError):
        call()
    # A correctness bound, not performance: a client without a deadline reads the whole
    # minute-long reply; one with it stops after TIMEOUT plus its own set-up, which on a
    # loaded machine can take seconds of its own.
    assert time.monotonic() - start < 10 * TIMEOUT


@pytest.mark.skipif(not HAS_OPENAI, reason="the openai package (litellm extra) is missing")
def test_custom_llm_timeout_is_a_deadline_against_a_trickling_reply():
    with _trickling_server() as server:
        llm = CustomLLM("m", base_url=server.base_url, api_key="sk-x", timeout=TIMEOUT,
                        retry=RetryPolicy(max_retries=0))  # fmt: skip
        with track_usage() as scope:
            _raises_timeout_within_bound(lambda: llm(messages=USER))
            _raises_timeout_within_bound(lambda: asyncio.run(llm.acall(messages=USER)))
    assert scope.requests == 2 and scope.errors == 2


@pytest.mark.skipif(not HAS_LITELLM, reason="the litellm extra is not installed")
@pytest.mark.filterwarnings("ignore::UserWarning:pydantic")
def test_litellm_timeout_is_a_deadline_against_a_trickling_reply():
    from opto.utils.llm import LiteLLM
    from opto.utils.llm.litellm_backend import get_litellm

    get_litellm()  # its import takes seconds; not part of the call being bounded
    with _trickling_server() as server:
        llm = LiteLLM("openai/test-model", api_base=server.base_url, api_key="sk-x",
                      timeout=TIMEOUT, retry=RetryPolicy(max_retries=0))  # fmt: skip
        _raises_timeout_within_bound(lambda: llm(messages=USER))
        _raises_timeout_within_bound(lambda: asyncio.run(llm.acall(messages=USER)))


@pytest.mark.skipif(not HAS_OPENAI, reason="the openai package (litellm extra) is missing")
def test_retries_stop_at_the_overall_deadline():
    policy = RetryPolicy(max_retries=10, base_delay=0.0, jitter=0.0, deadline=TIMEOUT)
    with _trickling_server() as server:
        llm = CustomLLM("m", base_url=server.base_url, api_key="sk-x", timeout=1.0,
                        retry=policy)  # fmt: skip
        _raises_timeout_within_bound(lambda: llm(messages=USER))
        assert 1 <= len(server.requests) <= 3
