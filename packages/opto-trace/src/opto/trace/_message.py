"""Graph core: operator outputs (:class:`MessageNode`, :class:`ExceptionNode`).

:func:`_new_message` is the one place outputs are created: the primitive operators and
bundle's record step call it with inputs that are already nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from weakref import ref as _weak

from opto.trace import _children as _links
from opto.trace._deps import materialize as _materialize
from opto.trace._deps import shared_deps as _shared_deps
from opto.trace._graph import GRAPH
from opto.trace._node import _LINK_LOCK, Node, T, _record_created
from opto.trace._state import _TRACING, USED_NODES

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ExceptionNode", "MessageNode"]


def _link(child: MessageNode[Any], vals: tuple[Node, ...]) -> None:
    """Add the distinct (by identity) ``vals`` as parents of ``child``; set level and deps."""
    n = len(vals)
    parents: Any
    if (n == 2 and vals[0] is not vals[1]) or n < 2:
        parents = vals  # distinct already: the inputs tuple itself is the parents tuple
    elif n < 16:
        parents = []
        for v in vals:
            for q in parents:
                if q is v:
                    break
            else:
                parents.append(v)
        parents = tuple(parents)
    else:
        parents = []
        seen: set[int] = set()
        for v in vals:
            if id(v) not in seen:
                seen.add(id(v))
                parents.append(v)
        parents = tuple(parents)
    level = 0
    ref = _weak(child)
    # acquire/release rather than ``with``: on Python < 3.12 ``with`` binds two method objects
    # per block, a measurable share of every traced operation.
    _LINK_LOCK.acquire()
    try:
        for p in parents:
            if p._ch is None:
                p._ch = ref
            else:
                _links.add(p, ref)
            if p._level >= level:
                level = p._level + 1
    finally:
        _LINK_LOCK.release()
    child._parents = parents
    child._level = level
    child._in_vals = None if len(parents) == len(vals) else vals
    child._deps = _shared_deps(parents)


class MessageNode(Node[T]):
    """The output of a traced operator; its parents are the operator's inputs."""

    __slots__ = ("_in_keys", "_in_vals")

    def __init__(
        self,
        value: Any,
        *,
        inputs: list[Node] | tuple[Node, ...] | Mapping[str, Node],
        description: str,
        name: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(inputs, (list, tuple)):
            vals = tuple(inputs)
            keys = tuple(n.name if isinstance(n, Node) else n for n in vals)
        elif hasattr(inputs, "items"):
            keys = tuple(inputs.keys())
            vals = tuple(inputs.values())
        else:
            raise TypeError(
                f"inputs must be a list or a dict of Nodes, got {type(inputs).__name__}."
            )
        for v in vals:
            if not isinstance(v, Node):
                raise TypeError(f"All values in inputs must be nodes, got {type(v).__name__}.")
        super().__init__(value, name=name, description=description, info=info)
        if not _TRACING.get():
            keys, vals = (), ()
        self._in_keys = keys
        _link(self, vals)
        _mark_expandable(self)

    @property
    def _inputs(self) -> dict[str, Node]:
        vals = self._in_vals
        if vals is None:
            vals = self._parents
        return dict(zip(self._in_keys, vals))

    @property
    def inputs(self) -> dict[str, Node]:
        """``{input key: node}`` (a copy)."""
        return self._inputs

    def _add_parent(self, parent: Node) -> None:
        if self._in_vals is None:
            self._in_vals = tuple(self._parents)
        super()._add_parent(parent)

    def _add_feedback(self, child: Node, feedback: Any) -> None:
        entries = self._feedback[child]
        if entries:
            raise ValueError(
                f"{self._name} already has feedback from {child._name}; a message node takes "
                "one feedback per child (use retain_graph=False or zero_feedback())."
            )
        entries.append(feedback)

    @property
    def hidden_dependencies(self) -> set[Node]:
        info = self._inf
        if type(info) is not dict:
            return set()
        output = info.get("output")
        if not isinstance(output, Node):
            return set()
        recorded = info.get("inputs") or {}
        inner = list(recorded.get("args", ())) + list(recorded.get("kwargs", {}).values())
        if not all(isinstance(v, Node) for v in inner):
            return set()
        own = _materialize(self) if self._deps is not None else None
        own_params = own["parameter"] if own else set()
        own_exp = own["expandable"] if own else set()
        hidden = output.parameter_dependencies - own_params
        for v in inner:  # detached copies of the inputs stand for the inputs themselves
            hidden -= v.parameter_dependencies
        for n in output.expandable_dependencies - own_exp:
            if n is not self:
                hidden |= n.hidden_dependencies
        return hidden

    def _copy_extra(self, new: Node[T], memo: dict[int, Any]) -> None:
        new._in_keys = self._in_keys  # type: ignore[attr-defined]
        vals = self._in_vals if self._in_vals is not None else tuple(self._parents)
        new._in_vals = vals  # type: ignore[attr-defined]


def _mark_expandable(n: MessageNode[Any]) -> None:
    """A node whose inner traced graph hides parameters lists itself as expandable."""
    if type(n._inf) is dict and n.hidden_dependencies:
        d = _materialize(n)
        n._deps = {
            "parameter": set(d["parameter"]) if d else set(),
            "expandable": (set(d["expandable"]) if d else set()) | {n},
        }


def _exception_text(value: Any) -> Any:
    if not isinstance(value, BaseException):
        return value
    cls = type(value)
    if cls.__module__ == "builtins":
        type_name = cls.__qualname__
    else:
        type_name = f"{cls.__module__}.{cls.__qualname__}"
    return f"({type_name}) {value}"


class ExceptionNode(MessageNode[T]):
    """Records an exception raised by a traced operator; its data is ``"(Type) message"``."""

    __slots__ = ()

    def __init__(
        self,
        value: Any,
        *,
        inputs: list[Node] | tuple[Node, ...] | Mapping[str, Node],
        description: str | None = None,
        name: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            _exception_text(value),
            inputs=inputs,
            description=description,  # type: ignore[arg-type]
            name=name,
            info=info,
        )

    def create_feedback(self, style: str = "simple") -> Any:
        """Feedback text for this error: ``"simple"`` (the data) or ``"full"`` (annotated)."""
        if style not in ("simple", "full"):
            raise ValueError(f"Unknown feedback style {style!r}; use 'simple' or 'full'.")
        if style == "full":
            info = self._info
            if isinstance(info, dict) and info.get("error_comment") is not None:
                return info["error_comment"]
        return self._data


def _new_message(
    data: Any,
    base: str,
    description: str,
    keys: tuple[str, ...],
    vals: tuple[Node, ...],
    info: Any,
    cls: type[MessageNode[Any]] = MessageNode,
) -> MessageNode[Any]:
    """Fast MessageNode construction for bundle (inputs already validated)."""
    new = cls.__new__(cls)
    new._data = data
    new._ch = None
    new.trainable = False
    new._fb = None
    new._backwarded = False
    new._inf = info
    new._description = description
    new._in_keys = keys
    _link(new, vals)
    new._name = GRAPH._next_name(base, new)
    if type(info) is dict:
        _mark_expandable(new)
    stack = USED_NODES.get()
    if stack:
        _record_created(stack[-1], new)
    return new
