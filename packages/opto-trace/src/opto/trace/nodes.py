"""Nodes of the trace graph and the name registry.

A :class:`Node` wraps a Python value. Operating on nodes (``x + 1``, ``x[0]``, bundled
functions) creates :class:`MessageNode` children that remember their inputs, so the program
that ran can be replayed backward with feedback. :class:`ParameterNode` marks a value an
optimizer may change; :class:`ExceptionNode` records a failed operation.

Design notes (for speed and memory; see ``CONTRACT.md``):

* Nodes use ``__slots__``; children lists, feedback dicts and info dicts are created lazily.
* Parents are held strongly, children weakly (:mod:`opto.trace._children`): outputs nobody
  holds are freed even while their inputs live on.
* Dependency sets are shared copy-on-write between a node and its parents and are only
  materialized (as ``{"parameter": set, "expandable": set}``) when somebody asks for them.
* Equality is value based and untraced, hashing is by identity.
* Nothing global keeps a node alive: the registry only counts names.
"""

from __future__ import annotations

import copy
import re
import threading
import warnings
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from weakref import ref as _weak

from opto.trace import _children as _links
from opto.trace._state import _SCOPES, _TRACING, NAME_SCOPES, USED_NODES
from opto.utils.errors import OptoError
from opto.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "GRAPH",
    "IDENTITY_OPERATORS",
    "NAME_SCOPES",
    "USED_NODES",
    "AbstractNode",
    "ExceptionNode",
    "Graph",
    "MessageNode",
    "Node",
    "NodeNameError",
    "ParameterNode",
    "get_op_name",
    "node",
]

T = TypeVar("T")

#: Operator names skipped by the simple visualization (pure pass-through operators).
IDENTITY_OPERATORS = ("identity", "clone")

_TAG = re.compile(r"^\[([^\[\]]+)\]")


class NodeNameError(OptoError, ValueError):
    """A node name cannot be used (for example it contains ``':'``)."""


class Graph:
    """Process-wide registry of node *names* (it does not hold the nodes).

    Each registration of a base name ``b`` yields ``"b:k"`` with ``k`` counting from 0 since
    the last :meth:`clear`. Counting is lock protected, so names are unique across threads.
    With ``LEGACY_GRAPH_BEHAVIOR = True`` (then call :meth:`clear`) nodes are also kept per
    name for :meth:`get`/:attr:`roots` -- that keeps every node alive; use only for debugging.
    """

    LEGACY_GRAPH_BEHAVIOR = False
    ALLOW_NESTED_GRAPHS = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._nodes: defaultdict[str, list[Node]] | None = None
        self.clear()

    @property
    def TRACE(self) -> bool:
        """Whether tracing is on in the current context (see :class:`stop_tracing`)."""
        return _TRACING.get()

    @TRACE.setter
    def TRACE(self, flag: bool) -> None:
        _TRACING.set(bool(flag))

    def clear(self) -> None:
        """Restart every name counter at 0 (existing nodes keep their names)."""
        with self._lock:
            self._counts = {}
            self._nodes = defaultdict(list) if self.LEGACY_GRAPH_BEHAVIOR else None

    def _next_name(self, base: str, registered: Node | None = None) -> str:
        scopes = _SCOPES.get()
        if scopes:
            base = f"{scopes[-1]}/{base}"
        counts = self._counts
        with self._lock:
            k = counts.get(base, 0)
            counts[base] = k + 1
            if self._nodes is not None and registered is not None:
                self._nodes[base].append(registered)
        return f"{base}:{k}"

    def register(self, node: Node) -> None:
        """Give ``node`` its unique name ``"<base>:<k>"`` from its current ``"<base>:..."``."""
        name = node._name
        if not isinstance(name, str) or name.count(":") != 1:
            raise NodeNameError(
                f"Cannot register node name {name!r}: it must contain exactly one ':' "
                "separating the base name from the counter."
            )
        node._name = self._next_name(name.split(":", 1)[0], node)

    def count(self, name: str) -> int:
        """How many nodes were registered under base ``name`` since the last clear."""
        if name not in self._counts:
            raise KeyError(f"No node was registered under the name {name!r}.")
        return self._counts[name]

    def get(self, name: str) -> Node:
        """Look a node up by full name (legacy mode only)."""
        if self._nodes is None:
            raise ValueError("Graph.get is not supported when LEGACY_GRAPH_BEHAVIOR is False.")
        base, idx = name.split(":")
        return self._nodes[base][int(idx)]

    @property
    def roots(self) -> list[Node]:
        """Every registered root node (legacy mode only)."""
        if self._nodes is None:
            raise ValueError("Graph.roots is not supported when LEGACY_GRAPH_BEHAVIOR is False.")
        return [n for nodes in self._nodes.values() for n in nodes if n.is_root]

    def __len__(self) -> int:
        return sum(self._counts.values())

    def __str__(self) -> str:
        return str(self._counts)


GRAPH = Graph()


def get_op_name(description: str) -> str:
    """Return the operator name in the leading ``[tag]`` of ``description``."""
    match = _TAG.match(description) if isinstance(description, str) else None
    if match is None:
        raise ValueError(
            f"The description {description!r} does not start with an operator name in "
            "brackets, e.g. '[add] Adds x and y.'."
        )
    return match.group(1)


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise NodeNameError(f"Node name must be a str, got {type(name).__name__}.")
    if ":" in name:
        raise NodeNameError(
            f"Node name {name!r} contains ':', which separates a name from its counter; "
            "use another character such as '_'."
        )
    return name


_DEFAULT_DESCRIPTIONS: dict[str, str] = {}


def _normalize_description(tag: str, description: str | None) -> str:
    if not description:
        default = _DEFAULT_DESCRIPTIONS.get(tag)
        if default is None:
            default = _DEFAULT_DESCRIPTIONS[tag] = f"[{tag}]"
        return default
    if not isinstance(description, str):
        raise TypeError(
            f"Description must be a str or None, got {type(description).__name__}; "
            "pass a text describing the node."
        )
    if _TAG.match(description):
        return description
    return f"[{tag}] {description.strip()}"


# ---------------------------------------------------------------------------------------------
# Dependency bookkeeping. ``Node._deps`` is one of:
#   None                  -> no parameter/expandable dependency
#   dict                  -> materialized {"parameter": set, "expandable": set} (maybe shared)
#   _SELF                 -> a ParameterNode whose set {self} was not built yet
#   a Node                -> "same dependencies as that node" (copy-on-write sharing)
#   _UNION                -> union over the parents, computed on demand
_SELF = object()
_UNION = object()


def _materialize(n: Node) -> dict[str, set[Node]] | None:
    d = n._deps
    if d is None or type(d) is dict:
        return d
    if d is _SELF:
        d = {"parameter": {n}, "expandable": set()}
        n._deps = d
        return d
    if d is _UNION:
        return _union(n)
    chain = [n]
    cur = d
    while isinstance(cur._deps, Node):
        chain.append(cur)
        cur = cur._deps
    result = _materialize(cur)
    for c in chain:
        c._deps = result
    return result


def _union(n: Node) -> dict[str, set[Node]]:
    params: set[Node] = set()
    expandable: set[Node] = set()
    seen = {id(n)}
    stack = list(n._parents)
    while stack:
        p = stack.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        d = p._deps
        if d is None:
            continue
        if type(d) is dict:
            params |= d["parameter"]
            expandable |= d["expandable"]
        elif d is _SELF:
            params.add(p)
        elif d is _UNION:
            stack.extend(p._parents)
        else:
            stack.append(d)
    result = {"parameter": params, "expandable": expandable}
    n._deps = result
    return result


def _shared_deps(parents: list[Node]) -> Any:
    """Dependency state of a new child of ``parents`` (O(len(parents)), no set copies)."""
    key: Any = None
    for p in parents:
        d = p._deps
        if d is None:
            continue
        if d is _SELF:
            d = _materialize(p)
        elif d is _UNION:
            d = p
        if key is None:
            key = d
        elif key is not d:
            return _UNION
    return key


#: Guards the None -> single child -> list transitions of ``_ch`` (threads share parents).
_LINK_LOCK = threading.Lock()


def _add_child_link(parent: AbstractNode[Any], child: AbstractNode[Any]) -> None:
    with _LINK_LOCK:
        _links.add(parent, _weak(child))


def _remove_by_identity(items: list[Any], obj: Any) -> None:
    for i in range(len(items) - 1, -1, -1):
        if items[i] is obj:
            del items[i]
            return


def _record_created(frame: Any, n: Any) -> None:
    created = frame.created
    if created is None:
        frame.created = [n]
    else:
        created.append(n)


def _ops() -> Any:
    global _OPS
    if _OPS is None:
        from opto.trace import operators

        _OPS = operators
    return _OPS


_OPS: Any = None


def _wrap(value: Any) -> Node:
    return value if isinstance(value, Node) else Node(value)


class AbstractNode(Generic[T]):
    """Base of all nodes: a value, a unique name and graph edges."""

    __slots__ = ("__weakref__", "_ch", "_data", "_level", "_name", "_parents")

    def __init__(self, value: Any, *, name: str | None = None, trainable: bool = False) -> None:
        if isinstance(value, AbstractNode):
            data = value._data
            base = _check_name(name) if name is not None else value._name.split(":", 1)[0]
        else:
            data = value
            base = _check_name(name) if name is not None else type(value).__name__
        self._data = data
        self._parents: list[Node] | tuple[Node, ...] = ()  # a list once one is added/listed
        self._ch: Any = None  # weak child links, see opto.trace._children
        self._level = 0
        self._name = GRAPH._next_name(base, self)  # type: ignore[arg-type]
        stack = USED_NODES.get()
        if stack:
            _record_created(stack[-1], self)

    @property
    def data(self) -> T:
        """The wrapped value. Inside a bundled call the read is recorded as a dependency."""
        stack = USED_NODES.get()
        if stack and _TRACING.get():
            stack[-1].add(self)
        return self._data

    @property
    def name(self) -> str:
        """Unique name ``"<base>:<k>"``."""
        return self._name

    @property
    def py_name(self) -> str:
        """The name without ``':'`` (usable as a Python identifier), e.g. ``"x0"``."""
        return self._name.replace(":", "")

    @property
    def id(self) -> str:
        """The counter part of the name (a string)."""
        return self._name.split(":")[1]

    @property
    def parents(self) -> list[Node]:
        """The parent nodes (the live list)."""
        parents = self._parents
        if type(parents) is not list:
            parents = self._parents = list(parents)
        return parents

    @property
    def _children(self) -> list[Node]:
        return _links.live(self._ch)

    @property
    def children(self) -> list[Node]:
        """The children still alive, oldest first (a new list: children are held weakly)."""
        return _links.live(self._ch)

    @property
    def level(self) -> int:
        """0 for roots; otherwise one more than the deepest parent."""
        return self._level

    @property
    def is_root(self) -> bool:
        return not self._parents

    @property
    def is_leaf(self) -> bool:
        return not _links.live(self._ch)

    def _add_parent(self, parent: Node) -> None:
        if parent is self:
            raise ValueError("A node cannot be its own parent.")
        if not isinstance(parent, Node):
            raise TypeError(f"A parent must be a Node, got {type(parent).__name__}.")
        if type(self._parents) is not list:
            self._parents = list(self._parents)
        self._parents.append(parent)  # type: ignore[union-attr]
        _add_child_link(parent, self)
        if parent._level + 1 > self._level:
            self._level = parent._level + 1

    def _add_child(self, child: Node) -> None:
        child._add_parent(self)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{type(self).__name__}: ({self._name}, dtype={type(self._data)}, data={self._data})"

    def lt(self, other: AbstractNode[Any]) -> bool:
        """Heap order used by backward: ``a.lt(b)`` iff ``a`` is deeper than ``b``."""
        return -self._level < -other._level

    def gt(self, other: AbstractNode[Any]) -> bool:
        """Inverse of :meth:`lt` (compares levels, not values)."""
        return -self._level > -other._level


class Node(AbstractNode[T]):
    """A traced value; operations on it create :class:`MessageNode` children."""

    __slots__ = ("_backwarded", "_deps", "_description", "_fb", "_inf", "trainable")

    def __init__(
        self,
        value: Any,
        *,
        name: str | None = None,
        trainable: bool = False,
        description: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        # AbstractNode.__init__ inlined: node creation is the hot path of tracing.
        if isinstance(value, AbstractNode):
            self._data = value._data
            base = _check_name(name) if name is not None else value._name.split(":", 1)[0]
        else:
            self._data = value
            base = _check_name(name) if name is not None else type(value).__name__
        self._parents: Any = ()
        self._ch: Any = None
        self._level = 0
        self.trainable = trainable
        self._fb: defaultdict[Node, list[Any]] | None = None
        self._backwarded = False
        self._inf: Any = info
        if description is None:
            tag = type(self).__name__
            self._description = _DEFAULT_DESCRIPTIONS.get(tag) or _normalize_description(tag, None)
        else:
            self._description = _normalize_description(type(self).__name__, description)
        self._deps: Any = None
        self._name = GRAPH._next_name(base, self)
        stack = USED_NODES.get()
        if stack:
            _record_created(stack[-1], self)

    # -- feedback ------------------------------------------------------------------------
    @property
    def _feedback(self) -> defaultdict[Node, list[Any]]:
        fb = self._fb
        if fb is None:
            fb = self._fb = defaultdict(list)
        return fb

    @_feedback.setter
    def _feedback(self, value: defaultdict[Node, list[Any]]) -> None:
        self._fb = value

    @property
    def feedback(self) -> defaultdict[Node, list[Any]]:
        """``{child_node: [feedback, ...]}`` received during backward."""
        return self._feedback

    def zero_feedback(self) -> None:
        """Forget all received feedback."""
        self._fb = None

    def _add_feedback(self, child: Node, feedback: Any) -> None:
        self._feedback[child].append(feedback)

    # -- description / info ----------------------------------------------------------------
    @property
    def description(self) -> str | None:
        """The description without its ``[tag]``; None when empty."""
        text = _TAG.sub("", self._description, count=1).strip()
        return text or None

    @property
    def op_name(self) -> str:
        """The tag of the description (the operator name for message nodes)."""
        return get_op_name(self._description)

    @property
    def _info(self) -> Any:
        inf = self._inf
        if inf is None or type(inf) is dict:
            return inf
        built = inf.build_info(self)
        self._inf = built
        return built

    @_info.setter
    def _info(self, value: Any) -> None:
        self._inf = value

    @property
    def info(self) -> Any:
        """Extra information; for bundle outputs a per-call dict (fun, source, inputs...)."""
        return self._info

    @property
    def type(self) -> type:
        return type(self._data)

    # -- dependencies --------------------------------------------------------------------
    @property
    def _dependencies(self) -> dict[str, set[Node]]:
        d = _materialize(self)
        return d if d is not None else {"parameter": set(), "expandable": set()}

    @_dependencies.setter
    def _dependencies(self, value: dict[str, set[Node]]) -> None:
        self._deps = value if (value["parameter"] or value["expandable"]) else None

    def _has_dependencies(self) -> bool:
        """Cheap check: does any parameter or expandable node lie upstream (or is self)?"""
        return self._deps is not None

    @property
    def parameter_dependencies(self) -> set[Node]:
        """ParameterNodes upstream of this node (a ParameterNode includes itself)."""
        d = _materialize(self)
        return set(d["parameter"]) if d is not None else set()

    @property
    def expandable_dependencies(self) -> set[Node]:
        """MessageNodes upstream whose inner (traceable) graph hides parameters."""
        d = _materialize(self)
        return set(d["expandable"]) if d is not None else set()

    @property
    def hidden_dependencies(self) -> set[Node]:
        """Parameters used inside a ``traceable_code`` bundle but not passed as inputs."""
        return set()

    # -- graph edits ---------------------------------------------------------------------
    def _set(self, value: Any) -> None:
        """Replace the data in place without touching the graph (Nodes are unwrapped)."""
        if isinstance(value, Node):
            value = value.data
        self._data = value

    def _detach(self) -> None:
        """Cut this node out of the graph (by identity) so backwarded parts can be freed."""
        for child in _links.live(self._ch):
            if isinstance(child, MessageNode) and child._in_vals is None:
                child._in_vals = tuple(child._parents)
            if type(child._parents) is list:
                _remove_by_identity(child._parents, self)
            else:
                child._parents = tuple(p for p in child._parents if p is not self)
        with _LINK_LOCK:
            for parent in self._parents:
                _links.remove(parent, self)
        self._ch = None
        self.zero_feedback()

    def _itemize(self) -> tuple[int, int, Node]:
        """Heap key used by backward: deepest node first."""
        return (-self._level, id(self), self)

    def backward(
        self,
        feedback: Any = "",
        propagator: Any = None,
        retain_graph: bool = False,
        visualize: bool = False,
        simple_visualization: bool = True,
        reverse_plot: bool = False,
        print_limit: int = 100,
    ) -> Any:
        """Propagate ``feedback`` from this node to every upstream parameter.

        See :func:`opto.trace.propagators.backward.backward`.
        """
        from opto.trace.propagators.backward import backward

        return backward(
            self,
            feedback,
            propagator,
            retain_graph,
            visualize,
            simple_visualization,
            reverse_plot,
            print_limit,
        )

    # -- copies --------------------------------------------------------------------------
    def __deepcopy__(self, memo: dict[int, Any]) -> Node[T]:
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        new._data = copy.deepcopy(self._data, memo)
        new._parents = ()
        new._ch = None
        new._level = self._level
        new.trainable = self.trainable
        new._fb = None
        new._backwarded = self._backwarded
        inf = self._inf
        new._inf = _copy_info(inf) if type(inf) is dict else inf
        new._description = self._description
        new._deps = _SELF if isinstance(self, ParameterNode) else None
        self._copy_extra(new, memo)
        new._name = GRAPH._next_name(self.py_name + "_copy", new)
        return new

    def __copy__(self) -> Node[T]:
        return self.__deepcopy__({id(self._data): self._data})

    def _copy_extra(self, new: Node[T], memo: dict[int, Any]) -> None:
        """Copy subclass-specific slots onto ``new`` (used by deepcopy)."""

    def __getstate__(self) -> dict[str, Any]:
        state = {}
        for cls in type(self).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if slot in ("__weakref__", "_parents", "_ch", "_fb") or not hasattr(self, slot):
                    continue
                state[slot] = getattr(self, slot)
        inf = state.get("_inf")
        if inf is not None and type(inf) is not dict:
            state["_inf"] = None
        state.pop("_deps", None)  # recomputed: a restored node has no parents
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._parents = ()
        self._ch = None
        self._fb = None
        self._deps = _SELF if isinstance(self, ParameterNode) else None
        for key, value in state.items():
            setattr(self, key, value)

    def clone(self) -> MessageNode[T]:
        """A traced deep copy of the data (``clone`` node with this node as parent)."""
        return _ops().clone(self)

    def detach(self) -> Node[T]:
        """A deep copy disconnected from the graph, named ``"<py_name>_copy:k"``."""
        return copy.deepcopy(self)

    # -- untraced Python protocol --------------------------------------------------------
    def __eq__(self, other: object) -> Any:
        return self._data == (other.data if isinstance(other, Node) else other)

    __hash__ = AbstractNode.__hash__

    def __bool__(self) -> bool:
        return bool(self._data)

    def __len__(self) -> int:
        return len(self._data)  # type: ignore[arg-type]

    def __contains__(self, item: Any) -> Any:
        return _ops().in_(_wrap(item), self)

    def __iter__(self) -> Any:
        from opto.trace.iterators import iterate

        return iterate(self)

    # -- traced operators ----------------------------------------------------------------
    def __add__(self, other: Any) -> MessageNode[Any]:
        if type(self._data) is str:
            return (_OPS or _ops()).concat(self, other if isinstance(other, Node) else Node(other))
        return (_OPS or _ops()).add(self, other if isinstance(other, Node) else Node(other))

    def __radd__(self, other: Any) -> MessageNode[Any]:
        return _wrap(other).__add__(self)

    def __sub__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).subtract(self, other if isinstance(other, Node) else Node(other))

    def __rsub__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).subtract(other if isinstance(other, Node) else Node(other), self)

    def __mul__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).multiply(self, other if isinstance(other, Node) else Node(other))

    def __rmul__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).multiply(other if isinstance(other, Node) else Node(other), self)

    def __truediv__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).divide(self, other if isinstance(other, Node) else Node(other))

    def __rtruediv__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).divide(other if isinstance(other, Node) else Node(other), self)

    __div__ = __truediv__
    __rdiv__ = __rtruediv__

    def __floordiv__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).floor_divide(
            self, other if isinstance(other, Node) else Node(other)
        )

    def __rfloordiv__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).floor_divide(
            other if isinstance(other, Node) else Node(other), self
        )

    def __mod__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).mod(self, other if isinstance(other, Node) else Node(other))

    def __rmod__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).mod(other if isinstance(other, Node) else Node(other), self)

    def __divmod__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).node_divmod(self, other if isinstance(other, Node) else Node(other))

    def __rdivmod__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).node_divmod(other if isinstance(other, Node) else Node(other), self)

    def __pow__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).power(self, other if isinstance(other, Node) else Node(other))

    def __rpow__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).power(other if isinstance(other, Node) else Node(other), self)

    def __lshift__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).lshift(self, other if isinstance(other, Node) else Node(other))

    def __rlshift__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).lshift(other if isinstance(other, Node) else Node(other), self)

    def __rshift__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).rshift(self, other if isinstance(other, Node) else Node(other))

    def __rrshift__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).rshift(other if isinstance(other, Node) else Node(other), self)

    def __and__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).and_(self, other if isinstance(other, Node) else Node(other))

    def __rand__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).and_(other if isinstance(other, Node) else Node(other), self)

    def __or__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).or_(self, other if isinstance(other, Node) else Node(other))

    def __ror__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).or_(other if isinstance(other, Node) else Node(other), self)

    def __xor__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).xor(self, other if isinstance(other, Node) else Node(other))

    def __rxor__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).xor(other if isinstance(other, Node) else Node(other), self)

    def __pos__(self) -> MessageNode[Any]:
        return _ops().pos(self)

    def __neg__(self) -> MessageNode[Any]:
        return _ops().neg(self)

    def __invert__(self) -> MessageNode[Any]:
        return _ops().invert(self)

    def __abs__(self) -> MessageNode[Any]:
        return _ops().abs(self)

    def __round__(self, n: Any = None) -> MessageNode[Any]:
        return _ops().round(self, _wrap(n))

    def __floor__(self) -> MessageNode[Any]:
        return _ops().floor(self)

    def __ceil__(self) -> MessageNode[Any]:
        return _ops().ceil(self)

    def __trunc__(self) -> MessageNode[Any]:
        return _ops().trunc(self)

    def __lt__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).lt(self, other if isinstance(other, Node) else Node(other))

    def __le__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).le(self, other if isinstance(other, Node) else Node(other))

    def __gt__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).gt(self, other if isinstance(other, Node) else Node(other))

    def __ge__(self, other: Any) -> MessageNode[Any]:
        return (_OPS or _ops()).ge(self, other if isinstance(other, Node) else Node(other))

    def __getitem__(self, key: Any) -> MessageNode[Any]:
        return _ops().getitem(self, _wrap(key))

    def __call__(self, *args: Any, **kwargs: Any) -> MessageNode[Any]:
        return _ops().call(self, *args, **kwargs)

    # -- named traced methods ------------------------------------------------------------
    def eq(self, other: Any) -> MessageNode[bool]:
        """Traced ``==`` (the ``==`` operator itself is untraced)."""
        return _ops().eq(self, _wrap(other))

    def neq(self, other: Any) -> MessageNode[bool]:
        """Traced ``!=``."""
        return _ops().neq(self, _wrap(other))

    def len(self) -> MessageNode[int]:
        """Traced ``len``."""
        return _ops().len_(self)

    def getattr(self, key: Any) -> MessageNode[Any]:
        """Traced attribute access on the data."""
        return _ops().node_getattr(self, _wrap(key))

    def call(self, fun: str, *args: Any, **kwargs: Any) -> MessageNode[Any]:
        """Traced call of the data's method ``fun``."""
        args = tuple(_wrap(a) for a in args)
        kwargs = {k: _wrap(v) for k, v in kwargs.items()}
        return self.getattr(fun)(*args, **kwargs)

    def _require(self, kind: type, attr: str) -> None:
        if type(self._data) is not kind:
            raise AttributeError(f"{type(self._data)} object has no attribute '{attr}'.")

    def format(self, *args: Any, **kwargs: Any) -> MessageNode[str]:
        self._require(str, "format")
        return _ops().format(self, *args, **kwargs)

    def capitalize(self) -> MessageNode[str]:
        self._require(str, "capitalize")
        return _ops().capitalize(self)

    def lower(self) -> MessageNode[str]:
        self._require(str, "lower")
        return _ops().lower(self)

    def upper(self) -> MessageNode[str]:
        self._require(str, "upper")
        return _ops().upper(self)

    def swapcase(self) -> MessageNode[str]:
        self._require(str, "swapcase")
        return _ops().swapcase(self)

    def title(self) -> MessageNode[str]:
        self._require(str, "title")
        return _ops().title(self)

    def split(self, sep: Any = None, maxsplit: Any = -1) -> MessageNode[list[str]]:
        self._require(str, "split")
        return _ops().split(self, _wrap(sep), maxsplit=_wrap(maxsplit))

    def strip(self, chars: Any = None) -> MessageNode[str]:
        self._require(str, "strip")
        return _ops().strip(self, _wrap(chars))

    def replace(self, old: Any, new: Any, count: Any = -1) -> MessageNode[str]:
        self._require(str, "replace")
        return _ops().replace(self, _wrap(old), _wrap(new), _wrap(count))

    def join(self, seq: Iterable[Any]) -> MessageNode[str]:
        self._require(str, "join")
        if not hasattr(seq, "__iter__"):
            raise TypeError("Can only join an iterable.")
        return _ops().join(self, *seq)

    def items(self) -> Any:
        """Iterate ``(key_node, value_node)`` pairs of dict data."""
        self._require(dict, "items")
        from opto.trace.iterators import DictIterable

        return DictIterable(self)

    def keys(self) -> MessageNode[list[Any]]:
        self._require(dict, "keys")
        return _ops().keys(self)

    def values(self) -> MessageNode[list[Any]]:
        return _ops().values(self)

    def get(self, key: Any, default: Any = None) -> MessageNode[Any]:
        return _ops().get(self, _wrap(key), _wrap(default))

    def pop(self, index: Any = -1) -> MessageNode[Any]:
        """Traced, non-mutating ``pop``: the popped item (the data is left unchanged)."""
        return _ops().pop(self, _wrap(index))

    def append(self, item: Any) -> MessageNode[list[Any]]:
        """Traced, non-mutating ``append``: a new list with the item's data appended."""
        return _ops().list_append(self, _wrap(item))


def _copy_info(info: dict[str, Any]) -> dict[str, Any]:
    new = dict(info)
    inputs = new.get("inputs")
    if isinstance(inputs, dict):
        new["inputs"] = {
            k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
            for k, v in inputs.items()
        }
    return new


def _check_projections(projections: Any) -> list[Any]:
    if projections is None:
        return []
    if not isinstance(projections, (list, tuple)) or not all(
        callable(getattr(p, "project", None)) for p in projections
    ):
        raise TypeError(
            "projections must be a list of Projection instances (objects with a project() "
            f"method), got {projections!r}."
        )
    return list(projections)


class ParameterNode(Node[T]):
    """A value an optimizer may change (``trainable=False`` keeps it fixed but listed)."""

    __slots__ = ("projections",)

    def __init__(
        self,
        value: Any,
        *,
        name: str | None = None,
        trainable: bool = True,
        description: str | None = None,
        projections: list[Any] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(value, name=name, trainable=trainable, description=description, info=info)
        self.projections = _check_projections(projections)
        self._deps = _SELF

    def _copy_extra(self, new: Node[T], memo: dict[int, Any]) -> None:
        new.projections = copy.deepcopy(self.projections, memo)  # type: ignore[attr-defined]


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
    with _LINK_LOCK:
        for p in parents:
            if p._ch is None:
                p._ch = ref
            else:
                _links.add(p, ref)
            if p._level >= level:
                level = p._level + 1
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


def node(
    data: Any,
    name: str | None = None,
    trainable: bool = False,
    description: str | None = None,
) -> Node[Any]:
    """Wrap ``data`` into a node (a :class:`ParameterNode` when ``trainable``).

    A Node passed with ``trainable=False`` is returned unchanged.
    """
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description must be a str or None, got {type(description).__name__}.")
    if trainable:
        if isinstance(data, Node):
            if name is None:
                name = data._name.split(":", 1)[0]
            data = data._data
        return ParameterNode(data, name=name, trainable=True, description=description)
    if isinstance(data, Node):
        if name is not None:
            warnings.warn(
                f"Name {name} is ignored because data is already a Node.",
                UserWarning,
                stacklevel=2,
            )
        return data
    return Node(data, name=name, description=description)


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


# The style guides live with the visualization code; they are loaded on first access.
__getattr__, _ = lazy_exports(
    __name__,
    dict.fromkeys(("NodeVizStyleGuide", "NodeVizStyleGuideColorful"), "opto.trace.visualization"),
)
