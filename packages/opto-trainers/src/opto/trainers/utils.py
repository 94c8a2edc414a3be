"""Helpers shared by the trainers: the traced `batchify` op and candidates as values.

A candidate is a *parameter set*: `{parameter path: value}` as in `Module.state_dict()`,
keyed by stable dotted paths rather than node identities. `bind` turns one into a module
with its own parameter nodes, so many candidates can run at once while the shared agent
is never touched.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from opto.trace.bundle import bundle
from opto.trace.modules import Module
from opto.trace.nodes import ParameterNode
from opto.utils.jsonable import jsonable as to_jsonable

__all__ = [
    "ParamSet",
    "batchify",
    "bind",
    "copy_optimizer",
    "create_module_from_update_dict",
    "deepcopy_module",
    "get_original_name",
    "get_paramset",
    "is_module_copy",
    "is_node_copy",
    "paramset_from_update",
    "paramset_key",
    "remap_update_dict",
    "safe_mean",
    "set_module_parameters",
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


def paramset_key(paramset: Mapping[str, Any]) -> str:
    """A stable identity for a parameter set (JSON of its sorted items)."""
    return json.dumps(paramset, sort_keys=True, default=repr)


def update_from_paramset(agent: Module, paramset: Mapping[str, Any]) -> dict[ParameterNode, Any]:
    """The update dict `{ParameterNode: value}` that gives `agent` the values of `paramset`."""
    return {node: paramset[path] for path, node in agent.named_parameters() if path in paramset}


def get_original_name(node: ParameterNode) -> str:
    """The `py_name` of the node that `node` was (deep-)copied from: `x0_copy0` -> `x0`."""
    return node.py_name.split("_copy", 1)[0]


def is_node_copy(a: ParameterNode, b: ParameterNode) -> bool:
    """Whether `a` and `b` are copies of one original parameter (or the same one)."""
    return get_original_name(a) == get_original_name(b)


def is_module_copy(a: Module, b: Module) -> bool:
    """Whether the parameters of `a` and `b` are copies of each other, one to one."""
    names_a = sorted(get_original_name(p) for p in a.parameters())
    names_b = sorted(get_original_name(p) for p in b.parameters())
    return names_a == names_b


def deepcopy_module(agent: Module) -> Module:
    """A deep copy of `agent` with its own parameter nodes (named `<original>_copy:k`).

    Its graphs are separate from the agent's, so both can run backward independently;
    `is_node_copy` relates each copied parameter to its original.
    """
    return copy.deepcopy(agent)


def remap_update_dict(
    base: Module, update: Mapping[ParameterNode, Any]
) -> dict[ParameterNode, Any]:
    """`update` re-keyed onto `base`'s own parameter nodes, matched by original name.

    Entries for parameters `base` does not have are dropped (an empty result means the
    update does not concern `base`).
    """
    by_name = {get_original_name(p): p for p in base.parameters()}
    result: dict[ParameterNode, Any] = {}
    for node, value in update.items():
        target = by_name.get(get_original_name(node))
        if target is not None:
            result[target] = value
    return result


def set_module_parameters(agent: Module, update: Mapping[ParameterNode, Any]) -> None:
    """Give `agent`'s trainable parameters the values of `update` (keyed by any copy).

    Each value passes through the parameter's projections first, as an optimizer step
    would; non-trainable parameters are left alone.
    """
    for node, value in remap_update_dict(agent, update).items():
        if not node.trainable:
            continue
        for projection in node.projections:
            value = projection(value)
        node._set(copy.deepcopy(value))


def create_module_from_update_dict(agent: Module, update: Mapping[ParameterNode, Any]) -> Module:
    """A deep copy of `agent` (own parameter nodes) holding the values of `update`."""
    module = deepcopy_module(agent)
    set_module_parameters(module, update)
    return module


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
