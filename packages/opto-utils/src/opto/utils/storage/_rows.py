"""Checks of the values a storage is given, and database rows turned into records."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

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


def run_record(row: Mapping[str, Any]) -> RunRecord:
    return RunRecord(
        id=row["id"],
        name=row["name"],
        config=_json.loads(row["config"], "config"),
        seed=row["seed"],
        status=RunStatus(row["status"]),
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        finished_at=_utc(row["finished_at"]),
    )


def step_record(row: Mapping[str, Any]) -> StepRecord:
    return StepRecord(
        run_id=row["run_id"],
        iteration=row["iteration"],
        parameters=_json.loads(row["parameters"], "parameters"),
        scores=_json.loads(row["scores"], "scores"),
        feedback=_json.loads(row["feedback"], "feedback"),
        usage=_json.loads(row["usage"], "usage"),
        info=_json.loads(row["info"], "info"),
        created_at=_utc(row["created_at"]),
    )


def checkpoint_record(row: Mapping[str, Any]) -> CheckpointRecord:
    return CheckpointRecord(
        id=row["id"],
        run_id=row["run_id"],
        iteration=row["iteration"],
        state=_json.loads(row["state"], "state"),
        created_at=_utc(row["created_at"]),
    )


def event_record(row: Mapping[str, Any]) -> EventRecord:
    return EventRecord(
        id=row["id"],
        run_id=row["run_id"],
        kind=row["kind"],
        payload=_json.loads(row["payload"], "payload"),
        iteration=row["iteration"],
        created_at=_utc(row["created_at"]),
    )
