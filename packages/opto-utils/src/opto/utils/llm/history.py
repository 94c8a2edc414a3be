"""Call history: the last LLM calls (messages, reply, usage), per LLM and process-wide.

Off by default and free when off (nothing is recorded or kept). Turn it on

- for one LLM: `LLM("gpt-4o-mini", history=20)`, then `llm.inspect_history(3)`;
- for every LLM: `opto.utils.llm.enable_history(50)`, then `opto.utils.llm.inspect_history()`;
- from the environment: `OPTO_LLM_HISTORY=50` does both (each new LLM keeps its own 50).

Each kind of history is a ring buffer: only the newest `capacity` calls are kept.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "CallRecord",
    "History",
    "disable_history",
    "enable_history",
    "env_capacity",
    "global_history",
    "inspect_history",
]

ENV_VAR = "OPTO_LLM_HISTORY"


def env_capacity() -> int:
    """Calls to keep per `OPTO_LLM_HISTORY` (0 when unset, empty or not a positive integer)."""
    raw = os.environ.get(ENV_VAR, "").strip()
    try:
        return max(0, int(raw)) if raw else 0
    except ValueError:
        return 0


@attrs.frozen(kw_only=True)
class CallRecord:
    """One LLM call: when, which model, what was sent, what came back (or the error)."""

    time: datetime.datetime
    model: str
    messages: tuple[Mapping[str, Any], ...]
    options: Mapping[str, Any]
    reply: Any = None  # the ChatResponse, None when the call failed
    error: str | None = None

    @property
    def usage(self) -> Any:
        """The reply's `Usage` (None when the call failed)."""
        return None if self.reply is None else self.reply.usage

    def format(self) -> str:
        """A readable block: header with usage, each message, then the reply or error."""
        lines = [f"[{self.time:%Y-%m-%d %H:%M:%S} UTC] {self.model}  {self._usage_text()}"]
        if self.options:
            lines.append(f"  options: {_text(dict(self.options))}")
        for message in self.messages:
            lines.extend(_block(str(message.get("role", "?")), message.get("content")))
        if self.error is not None:
            lines.append(f"  -> error: {self.error}")
        else:
            for index, choice in enumerate(self.reply.choices):
                label = "reply" if len(self.reply.choices) == 1 else f"reply[{index}]"
                lines.extend(_block(f"-> {label}", choice.message.content))
        return "\n".join(lines)

    def _usage_text(self) -> str:
        u = self.usage
        if u is None:
            return "(failed)"
        cost = "cost unknown" if u.cost_usd is None else f"${u.cost_usd:.6f}"
        cached = ", cached" if u.cached else ""
        return (
            f"({u.prompt_tokens} prompt + {u.completion_tokens} completion tokens, {cost}, "
            f"{u.latency_s:.2f}s{cached})"
        )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def _block(label: str, content: Any) -> list[str]:
    text = _text(content) if content is not None else ""
    body = text.splitlines() or [""]
    return [f"  {label}: {body[0]}", *(f"    {line}" for line in body[1:])]


class History:
    """A thread-safe ring buffer of the last `capacity` `CallRecord`s.

    Copies and pickles of it start empty, with the same capacity.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            msg = f"a call history keeps at least 1 call, got capacity={capacity}"
            raise ValueError(msg)
        self.capacity = capacity
        self._records: collections.deque[CallRecord] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.capacity,))

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: CallRecord) -> None:
        """Keep `record`, dropping the oldest when full."""
        with self._lock:
            self._records.append(record)

    def last(self, n: int = 1) -> list[CallRecord]:
        """The newest `n` records, oldest first."""
        with self._lock:
            records = list(self._records)
        return records[-n:] if n > 0 else []

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()

    def format(self, n: int = 1) -> str:
        """The newest `n` calls as readable text, oldest first."""
        records = self.last(n)
        if not records:
            return "(no LLM calls recorded yet)"
        return "\n\n".join(record.format() for record in records)


def record_call(
    histories: Sequence[History | None],
    *,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any],
    reply: Any = None,
    error: BaseException | None = None,
) -> None:
    """Add one call to every history in `histories` that is on (None: off)."""
    record = CallRecord(
        time=datetime.datetime.now(datetime.timezone.utc),
        model=model,
        messages=tuple(dict(m) for m in messages),
        options=dict(options),
        reply=reply,
        error=None if error is None else f"{type(error).__name__}: {error}",
    )
    for history in histories:
        if history is not None:
            history.add(record)


_GLOBAL_LOCK = threading.Lock()
_GLOBAL: History | None = History(env_capacity()) if env_capacity() else None


def global_history() -> History | None:
    """The process-wide history (None when off)."""
    return _GLOBAL


def enable_history(capacity: int = 50) -> History:
    """Record the last `capacity` calls of every LLM in the process-wide history (kept
    when already on with the same capacity); returns it."""
    global _GLOBAL
    with _GLOBAL_LOCK:
        if _GLOBAL is None or _GLOBAL.capacity != capacity:
            _GLOBAL = History(capacity)
        return _GLOBAL


def disable_history() -> None:
    """Stop recording process-wide and forget what was recorded."""
    global _GLOBAL
    with _GLOBAL_LOCK:
        _GLOBAL = None


def inspect_history(n: int = 1) -> str:
    """The last `n` calls of any LLM, readable (messages, reply, usage); says how to turn
    recording on when it is off."""
    history = _GLOBAL
    if history is None:
        return (
            "LLM call history is off: call opto.utils.llm.enable_history() or set "
            f"{ENV_VAR}=50, or pass history=N to one LLM"
        )
    return history.format(n)
