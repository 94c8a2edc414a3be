"""Typed, immutable records returned by the run storage.

Records are plain values: reading one never touches the database again, and `to_dict()`
gives a JSON-able form (timestamps as ISO 8601 strings in UTC) used by `Storage.export_run`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs

__all__ = ["CheckpointRecord", "EventRecord", "RunRecord", "RunStatus", "StepRecord"]


class RunStatus(str, enum.Enum):
    """Lifecycle of a run; every status but RUNNING marks the run finished."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        """Whether a run in this status has stopped (and carries `finished_at`)."""
        return self is not RunStatus.RUNNING


class _Record:
    """Base of the records: their JSON-able form."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of this record (datetimes as ISO strings, enums as
        their values)."""
        out = attrs.asdict(self, recurse=False)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
            elif isinstance(value, enum.Enum):
                out[key] = value.value
        return out


@attrs.frozen(kw_only=True)
class RunRecord(_Record):
    """One optimization run: an experiment whose steps, checkpoints and events are kept."""

    id: int
    name: str
    config: Any
    seed: int | None
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@attrs.frozen(kw_only=True)
class StepRecord(_Record):
    """One completed step of a run: what was tried, how it scored, and what it cost."""

    run_id: int
    iteration: int
    parameters: dict[str, Any]
    scores: dict[str, float | int | None]
    feedback: Any
    usage: Any
    info: dict[str, Any]
    created_at: datetime


@attrs.frozen(kw_only=True)
class CheckpointRecord(_Record):
    """A complete, JSON-able state snapshot of a run (e.g. a trainer's `state_dict()`)."""

    id: int
    run_id: int
    iteration: int | None
    state: Any
    created_at: datetime


@attrs.frozen(kw_only=True)
class EventRecord(_Record):
    """Something that happened during a run (started, resumed, budget hit, a warning...)."""

    id: int
    run_id: int
    kind: str
    payload: Any
    iteration: int | None
    created_at: datetime
