"""Helpers shared by the trainers: the traced `batchify` op and candidates as values.

A candidate is a *parameter set*: `{parameter path: value}` as in `Module.state_dict()`,
keyed by stable dotted paths rather than node identities. `bind` turns one into a module
with its own parameter nodes, so many candidates can run at once while the shared agent
is never touched.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from opto.trace.bundle import bundle
from opto.trace.modules import Module
from opto.trace.nodes import ParameterNode

__all__ = [
    "ParamSet",
    "batchify",
    "bind",
    "copy_optimizer",
    "get_paramset",
    "paramset_from_update",
    "safe_mean",
    "to_jsonable",
    "update_from_paramset",
]

#: A candidate: parameter values by `state_dict` path. Treat it as read-only.
ParamSet = dict[str, Any]


@bundle()
def batchify(*items: Any) -> str:
    """Join items into one text, one `ID [i]: item` line each (the optimizers parse this)."""
    return "".join(f"ID [{i}]: {item}\n" for i, item in enumerate(items))


def get_paramset(agent: Module) -> ParamSet:
    """The agent's current parameter values as a parameter set (deep copies)."""
    return agent.state_dict()


def bind(agent: Module, paramset: Mapping[str, Any]) -> Module:
    """A copy of `agent` with its own parameter nodes holding `paramset`'s values.

    Paths missing from `paramset` keep the agent's current values. The shared agent is
    not modified, so bound copies of many candidates can run side by side.
    """
    bound = copy.deepcopy(agent)
    bound.load_state_dict(paramset, strict=False)
    return bound


def paramset_from_update(
    agent: Module, update: Mapping[ParameterNode, Any], base: Mapping[str, Any] | None = None
) -> ParamSet:
    """Turn an optimizer update dict `{ParameterNode: value}` into a full parameter set.

    Parameters the update does not mention keep their value from `base` (default: the
    agent's current values). Keys that are not the agent's parameters are ignored.
    """
    paths = {id(node): path for path, node in agent.named_parameters()}
    result = dict(get_paramset(agent) if base is None else base)
    for node, value in update.items():
        path = paths.get(id(node))
        if path is not None:
            result[path] = copy.deepcopy(value)
    return result


def update_from_paramset(agent: Module, paramset: Mapping[str, Any]) -> dict[ParameterNode, Any]:
    """The update dict `{ParameterNode: value}` that gives `agent` the values of `paramset`."""
    return {node: paramset[path] for path, node in agent.named_parameters() if path in paramset}


def safe_mean(values: Iterable[Any], missing_value: Any = None) -> Any:
    """Mean of the non-None values (nested lists are flattened); `missing_value` if none."""
    flat: list[float] = []
    stack = [values]
    while stack:
        current = stack.pop()
        for value in current:
            if isinstance(value, (list, tuple)):
                stack.append(value)
            elif value is not None:
                flat.append(float(value))
    if not flat:
        return missing_value
    return math.fsum(flat) / len(flat)


def to_jsonable(value: Any) -> Any:
    """`value` with everything JSON cannot hold replaced by its `repr` (for step records).

    Dict keys become strings, tuples lists; non-finite floats are kept (storage accepts them).
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return repr(value)


def copy_optimizer(optimizer: Any) -> Any:
    """A copy of `optimizer` for a concurrent step: `optimizer.fork()` (same parameters
    and LLM client, own state); any other object is deep-copied sharing its parameters.

    Each concurrent proposal steps its own copy, so optimizers with memory or logs are
    never stepped from two threads at once.
    """
    fork = getattr(optimizer, "fork", None)
    if callable(fork):
        return fork()
    memo = {id(param): param for param in getattr(optimizer, "parameters", None) or ()}
    return copy.deepcopy(optimizer, memo)
