"""Strict JSON encoding of stored values, with errors that name the offending field.

Stored values must read back equal to what was written, so only JSON types are accepted:
dicts with string keys, lists (tuples become lists), strings, booleans, None, and real
numbers (numpy-style integers and floats become `int`/`float`; NaN and infinities are kept
and written as `NaN`/`Infinity`, which Python's `json` reads back). attrs instances are
stored as their field dicts.

What leaves opto as JSON (exports, `opto-runs --json`, JSONL logs) is standard JSON
instead: `standard_json` is `opto.utils.jsonable.jsonable` with ``nonfinite="null"``, so every
NaN or infinite float becomes None (`null`), the way trainers record non-finite scores, and
`json.dumps(..., allow_nan=False)` accepts it. The encoder here stays strict and lossless on
purpose: `jsonable` is lossy (`repr` for what JSON cannot hold).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import attrs
from opto.utils.jsonable import jsonable

from .errors import InvalidScoreError, NotJSONableError, StorageCorruptError

__all__ = ["dumps", "loads", "normalize_scores", "score_value", "sortable", "standard_json"]


def _plain(value: Any, field: str, parents: set[int]) -> Any:
    """Return `value` as plain JSON types, or raise NotJSONableError naming `field`."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if attrs.has(type(value)):
        value = attrs.asdict(value, recurse=False)
    if isinstance(value, Mapping):
        return _container(value, field, parents, _plain_mapping)
    if isinstance(value, (list, tuple)):
        return _container(value, field, parents, _plain_sequence)
    raise NotJSONableError(
        f"{field} is not JSON-able: {type(value).__name__} {value!r:.80}; "
        "store plain dicts, lists, strings, numbers, booleans or None "
        "(convert it first, e.g. with str() or a state_dict())",
        field=field,
    )


def _container(value: Any, field: str, parents: set[int], convert: Any) -> Any:
    if id(value) in parents:
        raise NotJSONableError(
            f"{field} contains itself; cyclic values cannot be stored", field=field
        )
    parents.add(id(value))
    try:
        return convert(value, field, parents)
    finally:
        parents.discard(id(value))


def _plain_mapping(value: Mapping[Any, Any], field: str, parents: set[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise NotJSONableError(
                f"{field} has the key {key!r} of type {type(key).__name__}; JSON object keys "
                "must be strings (convert the keys with str() before storing)",
                field=field,
            )
        out[key] = _plain(item, f"{field}[{key!r}]", parents)
    return out


def _plain_sequence(value: list[Any] | tuple[Any, ...], field: str, parents: set[int]) -> list[Any]:
    return [_plain(item, f"{field}[{index}]", parents) for index, item in enumerate(value)]


def dumps(value: Any, field: str) -> str:
    """Encode `value` as JSON text; `field` names it in errors (e.g. "parameters")."""
    return json.dumps(_plain(value, field, set()), ensure_ascii=True, separators=(",", ":"))


def loads(text: str, field: str) -> Any:
    """Decode JSON text read from the database; `field` names it in errors."""
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StorageCorruptError(
            f"stored {field} is not valid JSON ({exc}); the database was changed outside "
            "opto — restore it from a backup or delete the run"
        ) from exc


def score_value(value: Any, field: str) -> int | float | None:
    """Check one score: a real number (not a bool) or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidScoreError(
            f"{field} is {value!r} ({type(value).__name__}); a score must be a real number "
            "or None — put other results in `info` or `feedback`",
            field=field,
        )
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def normalize_scores(scores: Any, field: str = "scores") -> dict[str, int | float | None]:
    """Accept a mapping of named scores, or a bare number meaning `{"score": number}`."""
    if scores is None:
        return {}
    if not isinstance(scores, Mapping):
        return {"score": score_value(scores, field)}
    out: dict[str, int | float | None] = {}
    for key, value in scores.items():
        if not isinstance(key, str) or not 0 < len(key) <= 255:
            raise InvalidScoreError(
                f"{field} has the key {key!r:.80}; score names must be strings of 1 to 255 "
                "characters",
                field=field,
            )
        out[key] = score_value(value, f"{field}[{key!r}]")
    return out


def sortable(value: int | float | None) -> float | None:
    """The value kept in the score index: NaN has no order, so it is stored as NULL."""
    if value is None or math.isnan(value):
        return None
    return float(value)


def standard_json(value: Any) -> Any:
    """`value` as standard JSON data: every NaN or infinite float becomes None.

    Dump the result with `json.dumps(..., allow_nan=False)`. Tuples and sets become lists,
    mapping keys strings, anything else JSON cannot hold its `repr` (see `opto.utils.jsonable`).
    """
    return jsonable(value, nonfinite="null")
