"""Containers of nodes and parameters: attribute containers, `Seq` and `Map`.

A `ParameterContainer` finds the `ParameterNode`s it holds (directly, through trainable
bundled functions, or through nested containers) so optimizers can be built on
`container.parameters()`. It also exposes the parameter *values* as a flat, stable-keyed
`state_dict()` that `load_state_dict()` writes back into the container's own nodes.
"""

from __future__ import annotations

import collections
import copy
import functools
import types
from collections import UserDict, UserList
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

from opto.trace._walk import each_once
from opto.trace.nodes import Node, ParameterNode
from opto.utils.errors import OptoError

__all__ = [
    "LoadResult",
    "Map",
    "NodeContainer",
    "ParameterContainer",
    "Seq",
    "StateDictError",
    "is_traced_function",
    "trainable_method",
]

# Attributes whose names contain this marker are per-instance caches made by `bundle`
# (the reserved self-node and per-instance method copies); they are never members.
_RESERVED_MARKER = "__TRACE_RESERVED_"
_MISSING = object()
_C = TypeVar("_C", bound="ParameterContainer")


class StateDictError(OptoError, ValueError):
    """A state dict does not match the container it is loaded into (missing/unknown keys)."""


class LoadResult(NamedTuple):
    """Keys reported by `load_state_dict(strict=False)` (torch-style)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def is_traced_function(value: Any) -> bool:
    """Whether `value` is a traced function (a bundled `FunModule`).

    Containers find the parameters of traced functions through this protocol instead of
    importing bundle: such an object's class defines `__trace_parameter__`, its trainable
    `__code` ParameterNode (None when its code is not trainable).
    """
    kind = type(value)
    return kind not in _PLAIN_TYPES and hasattr(kind, "__trace_parameter__")


#: Builtin types that are never traced functions nor data descriptors: most class members
#: are of these, and answering for them without a failing `hasattr` keeps
#: `parameters()` cheap (trainers list an agent's parameters many times per step).
_PLAIN_TYPES = frozenset(
    {
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.WrapperDescriptorType,
        types.MethodDescriptorType,
        types.ClassMethodDescriptorType,
        classmethod,
        staticmethod,
        str,
        int,
        float,
        bool,
        type(None),
        tuple,
        list,
        dict,
        frozenset,
        set,
        type,
    }
)


def _is_data_descriptor(value: Any) -> bool:
    """Whether `value` (a class member) is a data descriptor, e.g. a property."""
    kind = type(value)
    return kind not in _PLAIN_TYPES and hasattr(kind, "__set__")


def trainable_method(method: Any) -> bool:
    """Return True if `method` is a bundled function (`FunModule`) whose code is trainable."""
    return is_traced_function(method) and method.__trace_parameter__ is not None


def _check_partial(name: Any, value: functools.partial) -> None:
    """Reject a partial that hides a trainable bundle: its code could not be optimized."""
    func = value.func
    owner = getattr(func, "__self__", None)
    if trainable_method(func) or trainable_method(owner):
        raise ValueError(
            "A trainable method cannot be a wrapped by functools.partial. "
            f"(member {name!r}: store the bundled method itself, or bind its arguments "
            "inside a regular method.)"
        )


class NodeContainer:
    """Marker base for objects whose attributes hold nodes (used by broadcasting)."""


class ParameterContainer(NodeContainer):
    """A NodeContainer that can list the ParameterNodes it holds.

    Members are the container's attributes (instance attributes and class attributes,
    sorted by name, so the order is deterministic). A member contributes:

    * a `ParameterNode` (trainable or not): itself;
    * a trainable bundled function (`FunModule`): its `__code` parameter (bundled
      methods defined on the class are read through the instance, so each instance
      reports its own code parameter);
    * a nested `ParameterContainer`: the container (flattened by `parameters()`).

    Plain `Node`s, non-trainable bundles and other values are not parameters. Properties
    are never evaluated.
    """

    # -- member discovery -------------------------------------------------------------

    def _members(self) -> Iterator[tuple[str, Any]]:
        """Yield `(name, value)` for every attribute that may hold parameters, sorted."""
        instance_attrs = getattr(self, "__dict__", {})
        class_attrs: dict[str, Any] = {}
        for klass in reversed(type(self).__mro__):  # derived classes override their bases
            class_attrs.update(vars(klass))
        for name in sorted(set(instance_attrs) | set(class_attrs)):
            if _RESERVED_MARKER in name:
                continue
            raw = class_attrs.get(name, _MISSING)
            if isinstance(raw, types.MemberDescriptorType):  # a __slots__ entry
                value = getattr(self, name, _MISSING)
            elif raw is not _MISSING and _is_data_descriptor(raw):
                continue  # properties and other data descriptors: never evaluated
            elif name in instance_attrs:
                value = instance_attrs[name]
            elif type(raw) is types.FunctionType:
                continue  # a plain method holds no parameters
            elif isinstance(raw, staticmethod):
                value = raw.__func__
            elif is_traced_function(raw):
                # A bundled method: read it through the instance to get the instance's copy.
                value = getattr(self, name) if raw.__trace_parameter__ is not None else _MISSING
            else:
                value = raw
            if value is not _MISSING:
                yield name, value

    def _candidates(self) -> Iterator[Any]:
        """Every value that may hold parameters, unvalidated (used by `copy`)."""
        return (value for _, value in self._members())

    def _entries(self) -> Iterator[tuple[Any, ParameterNode | ParameterContainer]]:
        """Yield `(key, parameter-or-container)` pairs in `parameters_dict()` order."""
        for name, value in self._members():
            if is_traced_function(value):
                if value.__trace_parameter__ is not None:
                    yield name, value.__trace_parameter__
            elif isinstance(value, functools.partial):
                _check_partial(name, value)
            elif isinstance(value, (ParameterNode, ParameterContainer)):
                yield name, value

    def _state_entries(self) -> Iterator[tuple[str, ParameterNode | ParameterContainer]]:
        """`parameters_dict()` keyed by stable strings (used by `state_dict`)."""
        for key, value in self.parameters_dict().items():
            yield str(key), value

    # -- public API ---------------------------------------------------------------------

    def parameters_dict(self) -> dict[Any, ParameterNode | ParameterContainer]:
        """Map member names to ParameterNodes and nested containers (not flattened)."""
        return dict(self._entries())

    def parameters(self) -> list[ParameterNode]:
        """All ParameterNodes held by the container, flattened, each listed once.

        Raises ValueError for a member that is neither a ParameterNode nor a container,
        and for a trainable bundle hidden in a `functools.partial`.
        """
        result: list[ParameterNode] = []
        self._collect_parameters(result, seen=set())
        return result

    def _collect_parameters(self, out: list[ParameterNode], seen: set[int]) -> None:
        if id(self) in seen:  # a container reachable twice (or a cycle) is walked once
            return
        seen.add(id(self))
        for value in self.parameters_dict().values():
            if isinstance(value, ParameterNode):
                if id(value) not in seen:
                    seen.add(id(value))
                    out.append(value)
            elif isinstance(value, ParameterContainer):
                value._collect_parameters(out, seen)
            else:
                raise ValueError("The model contains an unknown parameter type.")

    def named_parameters(self) -> list[tuple[str, ParameterNode]]:
        """`(path, node)` for every parameter, with stable dotted paths (`"sub.prompt"`)."""
        out: list[tuple[str, ParameterNode]] = []
        self._collect_named("", out, seen=set())
        counts = collections.Counter(path for path, _ in out)
        duplicates = sorted(path for path, count in counts.items() if count > 1)
        if duplicates:
            raise StateDictError(
                f"Parameter paths {duplicates} are ambiguous (two keys print the same); "
                "rename the attributes or Map keys so every path is unique."
            )
        return out

    def _collect_named(self, prefix: str, out: list, seen: set[int]) -> None:
        if id(self) in seen:
            return
        seen = seen | {id(self)}  # per branch: a shared sub-container appears under each path
        for key, value in self._state_entries():
            path = prefix + key
            if isinstance(value, ParameterNode):
                out.append((path, value))
            elif isinstance(value, ParameterContainer):
                value._collect_named(path + ".", out, seen)
            else:
                raise ValueError("The model contains an unknown parameter type.")

    def state_dict(self) -> dict[str, Any]:
        """Parameter values by stable dotted path (deep copies; torch-style)."""
        return {path: copy.deepcopy(p._data) for path, p in self.named_parameters()}

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> LoadResult:
        """Write `state` (as returned by `state_dict`) into this container's own nodes.

        With `strict=True` every parameter must be present and no unknown key allowed
        (StateDictError otherwise, nothing is changed). Returns the missing and unexpected
        keys. Values are deep-copied; projections are not applied.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"load_state_dict expects a mapping, got {type(state).__name__}.")
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise StateDictError(
                f"State does not match {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}. Load a state saved from the same model "
                "structure, or pass strict=False to load the matching keys only."
            )
        for key, param in own.items():
            if key in state:
                param._set(copy.deepcopy(state[key]))
        return LoadResult(missing, unexpected)

    def _set(self, new: Mapping[Any, Any] | ParameterContainer) -> None:
        """Copy values from `new` (a `parameters_dict()`-shaped mapping or a container).

        Every current key must be present in `new`; ParameterNodes receive the new data,
        nested containers recurse, and keys this container does not have are set as new
        attributes (they must not shadow a plain attribute).
        """
        if isinstance(new, ParameterContainer):
            new = new.parameters_dict()
        if not isinstance(new, Mapping):
            raise TypeError(
                f"{type(self).__name__}._set expects a mapping or a ParameterContainer, "
                f"got {type(new).__name__}."
            )
        current = self.parameters_dict()
        missing = [k for k in current if k not in new]
        if missing:
            raise StateDictError(
                f"Cannot set {type(self).__name__}: keys {missing} are missing from the new "
                "parameters."
            )
        for key, value in new.items():
            if key in current:
                _set_member(current[key], value, key)
            else:
                self._add_member(key, value)

    def _add_member(self, key: Any, value: Any) -> None:
        """Add a parameter that `_set` received but this container does not have."""
        if not isinstance(key, str) or not key.isidentifier():
            raise StateDictError(f"Cannot add parameter {key!r}: it is not an attribute name.")
        if key in getattr(self, "__dict__", {}):
            raise StateDictError(
                f"Cannot set parameter {key!r}: {type(self).__name__} already has a plain "
                "attribute with that name."
            )
        setattr(self, key, value)

    # -- copying and pickling -------------------------------------------------------------

    def copy(self: _C) -> _C:
        """A deep copy that *shares* this container's ParameterNodes.

        Structure and plain attributes are independent; parameters (including the code
        parameters of trainable bundles) are the same objects, so feedback from rollouts of
        the copy reaches the original parameters.
        """
        memo: dict[int, Any] = {}
        for param in self._parameters_lenient():
            memo[id(param)] = param
        return copy.deepcopy(self, memo)

    def _parameters_lenient(self) -> list[ParameterNode]:
        """Every ParameterNode reachable, ignoring members that `parameters()` rejects."""
        found: list[ParameterNode] = []
        stack: list[ParameterContainer] = [self]
        for container in each_once(stack):
            for value in container._candidates():
                if is_traced_function(value):
                    if value.__trace_parameter__ is not None:
                        found.append(value.__trace_parameter__)
                elif isinstance(value, ParameterNode):
                    found.append(value)
                elif isinstance(value, ParameterContainer):
                    stack.append(value)
        return found

    def __deepcopy__(self: _C, memo: dict[int, Any]) -> _C:
        """Deep-copy every instance attribute (nodes become `_copy` clones)."""
        new = object.__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = copy.deepcopy(value, memo)
        return new


def _set_member(current: Any, value: Any, key: Any) -> None:
    """Apply `value` to one member found by `_set` (ParameterNode or container)."""
    if isinstance(current, ParameterNode):
        current._set(value)
    elif isinstance(current, ParameterContainer):
        current._set(value)
    else:
        raise StateDictError(f"Cannot set {key!r}: {type(current).__name__} is not a parameter.")


def _classify_element(key: Any, value: Any) -> ParameterNode | ParameterContainer | None:
    """The parameter-bearing part of a Seq/Map element, or None."""
    if isinstance(value, functools.partial):
        _check_partial(key, value)
        return None
    if isinstance(value, (ParameterNode, ParameterContainer)):
        return value
    return None


class Seq(UserList, ParameterContainer):
    """A list of nodes, parameters and containers that reports the parameters it holds.

    `Seq(a, b, c)` or `Seq(sequence)` (one argument with `__len__` and `__getitem__` that
    is not a node). Compares and pickles like a list. In `parameters_dict()` ParameterNode
    elements are keyed by their node name and nested containers by their index
    (address-independent); `state_dict()` keys every element by its index.
    """

    def __init__(self, *args: Any) -> None:
        single = args[0] if len(args) == 1 else None
        # A node has __len__/__getitem__ too, but it is one element, not a sequence.
        if hasattr(single, "__len__") and hasattr(single, "__getitem__"):
            super().__init__(args if isinstance(single, Node) else single)
        else:
            super().__init__(args)

    def _candidates(self) -> Iterator[Any]:
        return iter(self.data)

    def _entries(self) -> Iterator[tuple[Any, ParameterNode | ParameterContainer]]:
        for index, value in enumerate(self.data):
            item = _classify_element(index, value)
            if isinstance(item, ParameterNode):
                yield item.name, item
            elif item is not None:
                yield str(index), item

    def _state_entries(self) -> Iterator[tuple[str, ParameterNode | ParameterContainer]]:
        for index, value in enumerate(self.data):
            item = _classify_element(index, value)
            if item is not None:
                yield str(index), item

    def _set(self, new: Any) -> None:
        """Copy values from a same-length sequence, or from a `parameters_dict()` mapping."""
        if isinstance(new, Mapping) or (
            isinstance(new, ParameterContainer) and not isinstance(new, Seq)
        ):
            super()._set(new)
            return
        new_items = list(new)
        if len(new_items) != len(self.data):
            raise StateDictError(
                f"Cannot set Seq of length {len(self.data)} from {len(new_items)} elements."
            )
        for index, (current, value) in enumerate(zip(self.data, new_items)):
            if isinstance(current, (ParameterNode, ParameterContainer)):
                _set_member(current, value, index)

    def _add_member(self, key: Any, value: Any) -> None:
        raise StateDictError(f"Cannot set Seq: it has no parameter keyed {key!r}.")


class Map(UserDict, ParameterContainer):
    """A dict of nodes, parameters and containers that reports the parameters it holds.

    Compares and pickles like a dict. In `parameters_dict()` ParameterNode and container
    values are keyed by their dict key, and ParameterNode *keys* are parameters too (keyed
    by their node name); a container cannot be a key. `state_dict()` keys values by
    `str(key)` (`value[<position>]` under a node key) and parameter keys by
    `key[<position>]`.
    """

    def _candidates(self) -> Iterator[Any]:
        for key, value in self.data.items():
            yield key
            yield value

    def _entries(self) -> Iterator[tuple[Any, ParameterNode | ParameterContainer]]:
        for key, value in self.data.items():
            if isinstance(key, ParameterContainer):
                raise ValueError(
                    f"A Map key cannot be a ParameterContainer ({type(key).__name__}); "
                    "use it as a value instead."
                )
            if isinstance(key, ParameterNode):
                yield key.name, key
            item = _classify_element(key, value)
            if item is not None:
                yield key, item

    def _state_entries(self) -> Iterator[tuple[str, ParameterNode | ParameterContainer]]:
        for position, (key, value) in enumerate(self.data.items()):
            if isinstance(key, ParameterNode):
                yield f"key[{position}]", key
            item = _classify_element(key, value)
            if item is not None:
                # A node key prints its data, which changes: use its position instead.
                yield (f"value[{position}]" if isinstance(key, Node) else str(key)), item

    def _set(self, new: Any) -> None:
        """Copy values from a mapping with the same keys (or a Map/parameters_dict)."""
        if isinstance(new, Map):
            source: Mapping[Any, Any] = new.data
        elif isinstance(new, ParameterContainer):
            source = new.parameters_dict()
        elif isinstance(new, Mapping):
            source = new
        else:
            raise TypeError(f"Map._set expects a mapping, got {type(new).__name__}.")
        for key, value in self.data.items():
            if isinstance(value, (ParameterNode, ParameterContainer)):
                if key not in source:
                    raise StateDictError(f"Cannot set Map: key {key!r} is missing.")
                _set_member(value, source[key], key)
