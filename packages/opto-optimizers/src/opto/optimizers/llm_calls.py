"""How the optimizers talk to their LLM: one request, or several at once.

Every optimizer sends its requests through :func:`send` / :func:`send_all`, so the rules
live in one place:

- independent requests run concurrently in a :class:`ContextThreadPoolExecutor`, so each
  one sees the caller's usage scopes and budgets (``track_usage(max_calls=N)`` holds);
- a request the backend rejects as a bad request while it carried a ``response_format``
  is sent once more without it (a context-window error is never retried);
- every request that reached the LLM is reported to ``on_call`` with its usage (None when
  it failed), which is how step records and ``llm_calls`` count;
- a :class:`~opto.utils.usage.BudgetExceeded` is raised even when other failures are
  returned as results: a spent budget ends the step, not just one request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from opto.utils.concurrency import ContextThreadPoolExecutor
from opto.utils.llm.types import ChatResponse, Usage, response_from_openai
from opto.utils.usage import BudgetExceeded

__all__ = ["LLMRequest", "chat_messages", "check_llm", "send", "send_all"]

logger = logging.getLogger(__name__)

#: ``on_call(usage)``: one request reached the LLM (usage None when it failed).
CallCounter = Callable[[Usage | None], None]

#: Options only opto's own backends understand; other callables do not receive them.
_OPTO_ONLY_OPTIONS = ("rollout_id",)


@attrs.frozen(kw_only=True)
class LLMRequest:
    """One chat request: the messages, the options, and the LLM to ask (None: the default
    LLM given to :func:`send_all`). ``meta`` travels with it for the caller's bookkeeping."""

    messages: list[dict[str, str]]
    options: Mapping[str, Any] = attrs.field(factory=dict)
    llm: Any = None
    meta: Mapping[str, Any] = attrs.field(factory=dict)


def chat_messages(system: str | None, user: str) -> list[dict[str, str]]:
    """``[system, user]`` chat messages (no system message when ``system`` is None)."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": user})
    return messages


def check_llm(llm: Any) -> None:
    """Raise a TypeError naming the fix when ``llm`` is neither None nor callable."""
    if llm is not None and not callable(llm):
        raise TypeError(
            f"llm must be callable as llm(messages=..., **options), got {type(llm).__name__}."
        )


def send(
    llm: Any,
    messages: list[dict[str, str]],
    options: Mapping[str, Any],
    on_call: CallCounter | None = None,
) -> ChatResponse:
    """One request, with the ``response_format`` fallback; errors of the LLM propagate.

    Safe to run in a worker thread: it touches nothing but ``on_call``.
    """
    from opto.utils.llm.base import AbstractModel
    from opto.utils.llm.errors import BadRequestError, ContextWindowExceededError

    opts = dict(options)
    if not isinstance(llm, AbstractModel):
        for key in _OPTO_ONLY_OPTIONS:
            opts.pop(key, None)
    try:
        raw = llm(messages=messages, **opts)
    except (BudgetExceeded, ContextWindowExceededError):
        raise
    except BadRequestError as error:
        if opts.get("response_format") is None:
            _count(on_call, None)
            raise
        logger.warning(
            "The LLM rejected the request (%s); retrying without response_format.", error
        )
        _count(on_call, None)
        del opts["response_format"]
        return send(llm, messages, opts, on_call)
    except Exception:
        _count(on_call, None)
        raise
    response = response_from_openai(raw)
    _count(on_call, response.usage)
    return response


def send_all(
    requests: Sequence[LLMRequest],
    *,
    llm: Any,
    on_call: CallCounter | None = None,
    max_workers: int | None = None,
    return_exceptions: bool = False,
) -> list[ChatResponse | BaseException]:
    """Send the requests, concurrently when there are several; responses in order.

    ``on_call`` hears of every request from the calling thread once all have finished.

    ``llm`` answers requests that name none. With ``return_exceptions`` a failed request
    gives its exception in place of a response; otherwise the first failure (in request
    order) is raised once all requests have finished. A ``BudgetExceeded`` is always raised.
    """
    if not requests:
        return []

    calls: list[list[Usage | None]] = [[] for _ in requests]

    def one(index: int) -> ChatResponse:
        request = requests[index]
        chosen = request.llm if request.llm is not None else llm
        return send(chosen, request.messages, request.options, calls[index].append)

    results: list[ChatResponse | BaseException] = []
    workers = min(len(requests), max_workers or len(requests))
    if workers <= 1:
        for index in range(len(requests)):
            try:
                results.append(one(index))
            except Exception as error:
                results.append(error)
                if isinstance(error, BudgetExceeded) or not return_exceptions:
                    break  # nothing more to send: the budget is spent, or the call fails
    else:
        # Each submitted request runs in contextvars.copy_context() of this thread, so the
        # caller's usage scopes and budgets hold in the workers.
        with ContextThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(one, index) for index in range(len(requests))]
            for future in futures:
                try:
                    results.append(future.result())
                except Exception as error:
                    results.append(error)
    for usages in calls:  # reported here, in request order, from the caller's thread
        for usage in usages:
            _count(on_call, usage)
    refused = next((r for r in results if isinstance(r, BudgetExceeded)), None)
    if refused is not None:
        raise refused
    if not return_exceptions:
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed
    return results


def _count(on_call: CallCounter | None, usage: Usage | None) -> None:
    if on_call is not None:
        on_call(usage)
