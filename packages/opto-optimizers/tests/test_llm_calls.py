"""The one LLM-call helper every optimizer uses: order, threads, fallback, budgets, usage."""

from __future__ import annotations

import contextvars
import threading

import pytest
from opto.optimizers.llm_calls import LLMRequest, chat_messages, check_llm, send, send_all
from opto.utils.llm.errors import BadRequestError, ContextWindowExceededError
from opto.utils.testing import ScriptedLLM
from opto.utils.usage import BudgetExceeded, track_usage

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def requests(*texts, **options):
    return [LLMRequest(messages=chat_messages("sys", t), options=options) for t in texts]


def test_responses_come_back_in_request_order_and_every_call_is_counted():
    barrier = threading.Barrier(3)  # all three must run at once, or the barrier breaks

    def echo(messages, **options):
        barrier.wait()
        return messages[-1]["content"].upper()

    llm = ScriptedLLM(echo)
    usages = []
    results = send_all(requests("a", "b", "c"), llm=llm, on_call=usages.append, max_workers=3)
    assert [r.content for r in results] == ["A", "B", "C"]
    assert len(usages) == 3 and all(u is not None for u in usages)


def test_workers_see_the_callers_context():
    REQUEST_ID.set("caller-1")
    llm = ScriptedLLM(lambda messages, **options: REQUEST_ID.get())
    results = send_all(requests("a", "b"), llm=llm, max_workers=2)
    assert [r.content for r in results] == ["caller-1", "caller-1"]


def test_a_request_may_name_its_own_llm():
    default, other = ScriptedLLM(default="default"), ScriptedLLM(default="other")
    jobs = [*requests("a"), LLMRequest(messages=chat_messages(None, "b"), llm=other)]
    assert [r.content for r in send_all(jobs, llm=default)] == ["default", "other"]
    assert other.requests[0].messages == ({"role": "user", "content": "b"},)


def test_a_rejected_response_format_is_retried_once_without_it_and_both_calls_count():
    llm = ScriptedLLM([BadRequestError("no schemas here"), "ok"])
    usages = []
    response = send(llm, chat_messages("s", "u"), {"response_format": {"type": "x"}}, usages.append)
    assert response.content == "ok"
    assert [("response_format" in r.options) for r in llm.requests] == [True, False]
    assert usages[0] is None and usages[1] is not None


@pytest.mark.parametrize(
    ("error", "options"),
    [
        (BadRequestError("bad"), {}),  # nothing to drop: not retried
        (ContextWindowExceededError("too long"), {"response_format": {"type": "x"}}),
    ],
)
def test_other_bad_requests_are_not_retried(error, options):
    llm = ScriptedLLM([error, "never"])
    with pytest.raises(type(error)):
        send(llm, chat_messages("s", "u"), options)
    assert llm.calls == 1


def test_failures_are_returned_in_place_or_the_first_is_raised():
    llm = ScriptedLLM(
        lambda messages, **o: ValueError("down") if messages[-1]["content"] == "b" else "up"
    )
    results = send_all(requests("a", "b", "c"), llm=llm, max_workers=3, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["ChatResponse", "ValueError", "ChatResponse"]
    with pytest.raises(ValueError, match="down"):
        send_all(requests("a", "b", "c"), llm=llm, max_workers=3)


def test_sequential_requests_stop_at_the_first_failure_unless_failures_are_returned():
    llm = ScriptedLLM([ValueError("down"), "never"])
    with pytest.raises(ValueError):
        send_all(requests("a", "b"), llm=llm, max_workers=1)
    assert llm.calls == 1


def test_a_spent_budget_is_raised_even_when_failures_are_returned():
    llm = ScriptedLLM(default="ok")
    with track_usage(max_calls=2) as scope, pytest.raises(BudgetExceeded):
        send_all(requests(*"abcdef"), llm=llm, max_workers=6, return_exceptions=True)
    assert llm.calls == 2 and scope.requests == 2


def test_opto_only_options_are_not_sent_to_plain_callables():
    seen = []

    def plain(messages, **options):
        seen.append(options)
        return "ok"

    send(plain, chat_messages(None, "u"), {"rollout_id": "r1", "temperature": 0.5})
    assert seen == [{"temperature": 0.5}]
    scripted = ScriptedLLM(default="ok")  # an opto backend takes it (part of cache keys)
    assert send(scripted, chat_messages(None, "u"), {"rollout_id": "r1"}).content == "ok"


def test_check_llm_names_the_fix():
    check_llm(None)
    check_llm(lambda **kw: "ok")
    with pytest.raises(TypeError, match=r"llm\(messages=\.\.\."):
        check_llm("gpt-4o")
