"""Convert any value to plain JSON data, with one rule for what JSON cannot hold.

`jsonable(value)` returns data that every JSON parser accepts (``json.dumps(...,
allow_nan=False)`` never fails on it):

- ``None``, booleans and strings stay; integers become `int`, other real numbers `float`
  (numpy scalars included).
- **NaN and infinities** become the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``
  (standard JSON has no such numbers; ``float()`` reads these strings back). With
  ``nonfinite="null"`` they become ``None`` instead: that is the rule for all JSON that leaves
  opto as a record of a run - run exports, ``opto-runs --json`` and JSONL logs - matching how
  trainers record a non-finite score (`opto.utils.storage.standard_json` applies it).
- Mappings become dicts with string keys (``str(key)``); lists and tuples become lists; sets
  become lists sorted by their JSON text, so the output does not depend on hash order.
- attrs instances become their field dicts; objects with a ``to_dict()`` or pydantic's
  ``model_dump()`` method become what it returns; a pydantic model class becomes its JSON
  schema.
- Anything else, and a container that contains itself, becomes its ``repr``.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any, Literal

NonFinite = Literal["text", "null"]

__all__ = ["NonFinite", "dumps", "jsonable", "nonfinite_text"]


def nonfinite_text(value: float) -> str:
    """The JSON string standing for a non-finite float: ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"``."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def jsonable(value: Any, *, nonfinite: NonFinite = "text") -> Any:
    """A copy of `value` made of JSON data only (see the module docstring for the rules).

    `nonfinite` chooses what NaN and infinities become: ``"text"`` (``"NaN"``, ``"Infinity"``,
    ``"-Infinity"``, for state and prompts) or ``"null"`` (for exports and logs).
    """
    if nonfinite not in ("text", "null"):
        raise ValueError(f"nonfinite must be 'text' or 'null', not {nonfinite!r}")
    return _convert(value, set(), nonfinite == "null")


def dumps(value: Any, *, nonfinite: NonFinite = "text", **options: Any) -> str:
    """``json.dumps`` of ``jsonable(value, nonfinite=nonfinite)``: standard JSON text
    (``ensure_ascii=False`` unless `options` says otherwise; `options` go to `json.dumps`)."""
    options.setdefault("ensure_ascii", False)
    return json.dumps(jsonable(value, nonfinite=nonfinite), allow_nan=False, **options)


def _convert(value: Any, parents: set[int], null: bool) -> Any:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number):
            return number
        return None if null else nonfinite_text(number)
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        if id(value) in parents:
            return repr(value)
        parents.add(id(value))
        try:
            return _container(value, parents, null)
        finally:
            parents.discard(id(value))
    return _object(value, parents, null)


def _container(value: Any, parents: set[int], null: bool) -> Any:
    if isinstance(value, Mapping):
        return {
            key if isinstance(key, str) else str(key): _convert(item, parents, null)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_convert(item, parents, null) for item in value]
    items = [_convert(item, parents, null) for item in value]
    return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))


def _object(value: Any, parents: set[int], null: bool) -> Any:
    if isinstance(value, type):
        schema = getattr(value, "model_json_schema", None)
        if callable(schema):
            return _convert(schema(), parents, null)
        return repr(value)
    fields = getattr(type(value), "__attrs_attrs__", None)
    if fields is not None:
        return _convert({field.name: getattr(value, field.name) for field in fields}, parents, null)
    for method in ("to_dict", "model_dump"):
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                data = convert()
            except Exception:  # a broken to_dict() must not hide the value: fall back to repr
                continue
            if data is not value:
                return _convert(data, parents, null)
    return repr(value)
