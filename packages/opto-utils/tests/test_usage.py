"""Usage ledger: every call recorded, thread/task-safe totals, scopes and budgets."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from opto.utils import Budget, BudgetExceeded, track_usage
from opto.utils.llm import AuthenticationError, LLMError
from opto.utils.testing import ScriptedLLM
from opto.utils.usage import UsageLedger, UsageRecord, ledger

USER = [{"role": "user", "content": "hello there"}]


def test_every_call_is_recorded_with_model_tokens_cost_latency():
    llm = ScriptedLLM(["four words of reply"], model="m-1", cost_per_call=0.002)
    before = ledger().calls
    with track_usage() as u:
        llm(messages=USER)
    (rec,) = u.records
    assert rec.model == "m-1" and rec.cost_usd == 0.002 and rec.error is None
    assert rec.prompt_tokens > 0 and rec.completion_tokens > 0 and rec.latency_s > 0
    assert u.calls == 1 and u.cost_usd == 0.002 and u.total_tokens == rec.total_tokens
    assert ledger().calls >= before + 1


def test_failed_calls_are_recorded_with_the_error():
    llm = ScriptedLLM([AuthenticationError("bad key")])
    with track_usage() as u, pytest.raises(LLMError):
        llm(messages=USER)
    assert u.errors == 1 and u.records[0].error == "AuthenticationError"
    assert u.calls == 1 and u.unknown_cost_calls == 0 and u.by_model() == {}


def test_unknown_cost_is_counted_not_zeroed():
    with track_usage() as u:
        ScriptedLLM(["x"], cost_per_call=None)(messages=USER)
    assert u.unknown_cost_calls == 1 and u.cost_usd == 0.0


def test_sixteen_threads_exact_totals():
    llm = ScriptedLLM(default="reply text", cost_per_call=0.001)
    with track_usage(all_threads=True) as u:

        def work(_: int) -> None:
            for _ in range(25):
                llm(messages=USER)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(work, range(16)))
    assert u.calls == 400 and llm.calls == 400
    assert u.cost_usd == pytest.approx(0.4)
    per_call = u.records[0].total_tokens
    assert u.total_tokens == 400 * per_call
    assert u.by_model()["scripted"]["calls"] == 400


def test_scope_is_context_local_unless_all_threads():
    llm = ScriptedLLM(default="x")
    with track_usage() as u:
        t = threading.Thread(target=lambda: llm(messages=USER))
        t.start()
        t.join()
        assert u.calls == 0  # a plain thread does not inherit the scope
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(lambda: llm(messages=USER),))
        t.start()
        t.join()
        assert u.calls == 1


def test_asyncio_tasks_share_the_enclosing_scope():
    llm = ScriptedLLM(default="x")

    async def main() -> UsageLedger:
        with track_usage() as u:
            await asyncio.gather(*(llm.acall(messages=USER) for _ in range(20)))
        return u

    assert asyncio.run(main()).calls == 20


def test_nested_scopes_see_inner_calls():
    llm = ScriptedLLM(default="x")
    with track_usage() as outer:
        llm(messages=USER)
        with track_usage() as inner:
            llm(messages=USER)
        llm(messages=USER)
    assert (outer.calls, inner.calls) == (3, 1)


def test_max_calls_refuses_before_the_call():
    llm = ScriptedLLM(default="x")
    with track_usage(max_calls=3) as u:
        for _ in range(3):
            llm(messages=USER)
        with pytest.raises(BudgetExceeded, match="max_calls=3") as info:
            llm(messages=USER)
    assert llm.calls == 3 and u.calls == 3
    assert info.value.limit == "calls" and info.value.used == 3


def test_max_calls_holds_under_threads():
    llm = ScriptedLLM(default="x")
    refused = []
    with track_usage(max_calls=10, all_threads=True) as u:

        def work(_: int) -> None:
            try:
                llm(messages=USER)
            except BudgetExceeded:
                refused.append(1)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(work, range(40)))
    assert llm.calls == 10 and u.calls == 10 and len(refused) == 30


def test_max_tokens_counts_the_requested_completion():
    llm = ScriptedLLM(default="x" * 40)
    with track_usage(max_tokens=100) as u:
        llm(messages=USER, max_tokens=20)
        with pytest.raises(BudgetExceeded, match="max_tokens=100"):
            llm(messages=USER, max_tokens=1000)
    assert llm.calls == 1 and u.calls == 1


def test_max_usd_stops_once_spent():
    llm = ScriptedLLM(default="x", cost_per_call=0.4)
    with track_usage(Budget(max_usd=1.0)):
        llm(messages=USER)
        llm(messages=USER)
        llm(messages=USER)  # 1.2 spent now
        with pytest.raises(BudgetExceeded) as info:
            llm(messages=USER)
    assert info.value.limit == "usd" and llm.calls == 3


def test_outer_budget_applies_inside_inner_scope():
    llm = ScriptedLLM(default="x")
    with track_usage(max_calls=1):
        llm(messages=USER)
        with track_usage() as inner, pytest.raises(BudgetExceeded):
            llm(messages=USER)
    assert inner.calls == 0


def test_refused_call_leaves_no_pending_reservation():
    llm = ScriptedLLM(default="x")
    with track_usage(max_calls=1) as u:
        with track_usage(max_calls=0), pytest.raises(BudgetExceeded):
            llm(messages=USER)
        llm(messages=USER)  # the outer budget still has its one call
    assert u.calls == 1


def test_budget_exceeded_is_not_an_llm_error():
    assert not issubclass(BudgetExceeded, LLMError)


def test_budget_validation():
    with pytest.raises(ValueError):
        Budget(max_calls=-1)


def test_summary_is_jsonable():
    led = UsageLedger()
    led.record(UsageRecord(model="m", prompt_tokens=2, completion_tokens=3, cost_usd=0.5))
    led.record(UsageRecord(model="m", cached=True))
    assert led.summary() == {
        "calls": 2, "requests": 0, "errors": 0, "cached_calls": 1, "prompt_tokens": 2,
        "completion_tokens": 3, "total_tokens": 5, "cost_usd": 0.5, "unknown_cost_calls": 0,
        "eval_cache_hits": 0, "eval_cache_misses": 0,
    }  # fmt: skip


def test_evaluation_cache_lookups_are_counted_in_every_scope_and_cost_nothing():
    from opto.utils.usage import record_evaluations

    with track_usage(max_calls=0) as outer, track_usage() as inner:
        record_evaluations(hits=3, misses=1)
        record_evaluations(hits=2)
    for scope in (outer, inner):
        summary = scope.summary()
        assert summary["eval_cache_hits"] == 5 and summary["eval_cache_misses"] == 1
        assert summary["calls"] == summary["requests"] == 0 and summary["cost_usd"] == 0
    with pytest.raises(ValueError, match="hits and misses"):
        record_evaluations(hits=-1)
