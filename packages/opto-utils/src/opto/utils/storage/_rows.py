"""Checks of the values a storage is given, and database rows turned into records."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import attrs

from . import _json
from .records import CheckpointRecord, EventRecord, RunRecord, RunStatus, StepRecord

__all__ = [
    "check_iteration",
    "check_name",
    "check_seed",
    "check_status",
    "checkpoint_record",
    "event_record",
    "run_record",
    "step_record",
]

_INT64 = 2**63


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=timezone.utc)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise ValueError(f"a run name must be a string of 1 to 255 characters, not {name!r}")
    return name


def check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not -_INT64 <= seed < _INT64:
        raise ValueError(f"seed must be None or a 64-bit signed integer, not {seed!r}")
    return seed


def check_iteration(iteration: Any) -> int:
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"iteration must be a non-negative int, not {iteration!r}")
    if iteration >= 2**31:
        raise ValueError(f"iteration {iteration} is too large (the limit is 2**31 - 1)")
    return iteration


def check_status(status: RunStatus | str) -> RunStatus:
    try:
        return RunStatus(status)
    except ValueError:
        valid = ", ".join(repr(s.value) for s in RunStatus)
        raise ValueError(f"unknown run status {status!r}; use one of {valid}") from None


#: Columns holding JSON text (decoded into the record) and timestamps (stored naive, in UTC).
_JSON_COLUMNS = frozenset(
    {"config", "parameters", "scores", "feedback", "usage", "info", "state", "payload"}
)
_TIME_COLUMNS = frozenset({"created_at", "updated_at", "finished_at"})

_R = TypeVar("_R")


def _record(cls: type[_R], row: Mapping[str, Any]) -> _R:
    """A record of `cls` with each field from the row's column of that name."""
    values: dict[str, Any] = {}
    for field in attrs.fields(cls):  # type: ignore[arg-type]
        value = row[field.name]
        if field.name in _JSON_COLUMNS:
            value = _json.loads(value, field.name)
        elif field.name in _TIME_COLUMNS:
            value = _utc(value)
        values[field.name] = value
    return cls(**values)


def run_record(row: Mapping[str, Any]) -> RunRecord:
    return attrs.evolve(_record(RunRecord, row), status=RunStatus(row["status"]))


def step_record(row: Mapping[str, Any]) -> StepRecord:
    return _record(StepRecord, row)


def checkpoint_record(row: Mapping[str, Any]) -> CheckpointRecord:
    return _record(CheckpointRecord, row)


def event_record(row: Mapping[str, Any]) -> EventRecord:
    return _record(EventRecord, row)
