"""Graph core: :class:`Node`, :class:`ParameterNode` and :func:`node`.

A :class:`Node` wraps a Python value. Operating on nodes (``x + 1``, ``x[0]``, bundled
functions) creates :class:`~opto.trace._message.MessageNode` children that remember their
inputs, so the program that ran can be replayed backward with feedback.

Design notes (for speed and memory):

* Nodes use ``__slots__``; children lists, feedback dicts and info dicts are created lazily.
* Parents are held strongly, children weakly (:mod:`opto.trace._children`): outputs nobody
  holds are freed even while their inputs live on.
* Dependency sets are shared copy-on-write between a node and its parents and are only
  materialized when somebody asks for them (:mod:`opto.trace._deps`).
* Equality is value based and untraced, hashing is by identity.
* Nothing global keeps a node alive: the registry only counts names.
* Python's operators on a node call the primitive operator of that name in
  :data:`OPERATORS`, which :mod:`opto.trace.primitives` fills when imported.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar
from weakref import ref as _weak

from opto.trace import _children as _links
from opto.trace._deps import OWN
from opto.trace._deps import materialize as _materialize
from opto.trace._graph import (
    _DEFAULT_DESCRIPTIONS,
    _TAG,
    GRAPH,
    _check_name,
    _normalize_description,
    get_op_name,
)
from opto.trace._state import _TRACING, USED_NODES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    class InfoSource(Protocol):
        """Builds a node's ``info`` dict on first access: the operator that made the node (when
        nothing about the call is specific) or the call's ``CallRecord``. Outputs keep this
        instead of a dict, so tracing allocates no info dict per operation."""

        def build_info(self, n: Node[Any]) -> dict[str, Any]: ...


__all__ = ["OPERATORS", "AbstractNode", "Node", "ParameterNode", "node"]

T = TypeVar("T")


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


#: Primitive operator name -> operator; filled by :mod:`opto.trace.primitives` on import.
OPERATORS: dict[str, Callable[..., Any]] = {}


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
    """A traced value; operations on it create :class:`MessageNode` children.

    Fields that hold more than one kind of value, each kind its own type:
    ``_parents`` a tuple (as created) or a list (once edited); ``_ch`` see
    :mod:`opto.trace._children`; ``_deps`` see :mod:`opto.trace._deps`; ``_inf`` None, the
    ``info`` dict, or an :class:`InfoSource` that builds it on first access.
    """

    __slots__ = ("_backwarded", "_deps", "_description", "_fb", "_inf", "trainable")
    _is_parameter = False  # ParameterNode: dependencies start as OWN

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
        self._inf: dict[str, Any] | InfoSource | None = info
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
            if getattr(child, "_in_vals", False) is None:  # a MessageNode keeps its inputs
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

        Args:
            feedback: the user's feedback (a str for the default ``GraphPropagator``).
            propagator: how feedback flows through each node; a new ``GraphPropagator`` if
                None.
            retain_graph: keep the graph usable for another backward through the same
                nodes. Otherwise visited nodes are marked backwarded and detached from their
                parents so their memory can be reclaimed.
            visualize: also draw the propagated edges.
            simple_visualization: in the drawing, bypass ``identity``/``clone`` nodes.
            reverse_plot: draw edges child -> parent instead of parent -> child.
            print_limit: characters of description and data shown per drawn node.

        Returns:
            With ``visualize``, a ``graphviz.Digraph`` (or a ``DotGraph`` when graphviz is
            not installed); otherwise None. The pass is
            :func:`opto.trace.propagators.backward.backward`.
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
        new._deps = OWN if self._is_parameter else None
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
        self._deps = OWN if self._is_parameter else None
        for key, value in state.items():
            setattr(self, key, value)

    def clone(self) -> Node[T]:
        """A traced deep copy of the data (``clone`` node with this node as parent)."""
        return OPERATORS["clone"](self)

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
        return OPERATORS["in_"](_wrap(item), self)

    def __iter__(self) -> Any:
        from opto.trace.iterators import iterate

        return iterate(self)

    # -- traced operators: each calls the primitive of the same name (see _install_operators)
    def __add__(self, other: Any) -> Node[Any]:
        other = other if isinstance(other, Node) else Node(other)
        if type(self._data) is str:
            return OPERATORS["concat"](self, other)
        return OPERATORS["add"](self, other)

    def __radd__(self, other: Any) -> Node[Any]:
        return _wrap(other).__add__(self)

    def __round__(self, n: Any = None) -> Node[Any]:
        return OPERATORS["round"](self, _wrap(n))

    def __call__(self, *args: Any, **kwargs: Any) -> Node[Any]:
        return OPERATORS["call"](self, *args, **kwargs)

    def call(self, fun: str, *args: Any, **kwargs: Any) -> Node[Any]:
        """Traced call of the data's method ``fun``."""
        args = tuple(_wrap(a) for a in args)
        kwargs = {k: _wrap(v) for k, v in kwargs.items()}
        return self.getattr(fun)(*args, **kwargs)

    def _require(self, kind: type, attr: str) -> None:
        if type(self._data) is not kind:
            raise AttributeError(f"{type(self._data)} object has no attribute '{attr}'.")

    def format(self, *args: Any, **kwargs: Any) -> Node[str]:
        """Traced ``str.format``."""
        self._require(str, "format")
        return OPERATORS["format"](self, *args, **kwargs)

    def split(self, sep: Any = None, maxsplit: Any = -1) -> Node[list[str]]:
        """Traced ``str.split``."""
        self._require(str, "split")
        return OPERATORS["split"](self, _wrap(sep), maxsplit=_wrap(maxsplit))

    def strip(self, chars: Any = None) -> Node[str]:
        """Traced ``str.strip``."""
        self._require(str, "strip")
        return OPERATORS["strip"](self, _wrap(chars))

    def replace(self, old: Any, new: Any, count: Any = -1) -> Node[str]:
        """Traced ``str.replace``."""
        self._require(str, "replace")
        return OPERATORS["replace"](self, _wrap(old), _wrap(new), _wrap(count))

    def join(self, seq: Iterable[Any]) -> Node[str]:
        """Traced ``str.join``."""
        self._require(str, "join")
        if not hasattr(seq, "__iter__"):
            raise TypeError("Can only join an iterable.")
        return OPERATORS["join"](self, *seq)

    def items(self) -> Any:
        """Iterate ``(key_node, value_node)`` pairs of dict data."""
        self._require(dict, "items")
        from opto.trace.iterators import DictIterable  # iteration: a documented upward call

        return DictIterable(self)

    def get(self, key: Any, default: Any = None) -> Node[Any]:
        """Traced ``dict.get``."""
        return OPERATORS["get"](self, _wrap(key), _wrap(default))

    def pop(self, index: Any = -1) -> Node[Any]:
        """Traced, non-mutating ``pop``: the popped item (the data is left unchanged)."""
        return OPERATORS["pop"](self, _wrap(index))


def _unary(op: str, doc: str, data_type: type | None = None) -> Callable[[Node[Any]], Any]:
    def method(self: Node[Any]) -> Any:
        if data_type is not None:
            self._require(data_type, method.__name__)
        return OPERATORS[op](self)

    method.__doc__ = doc
    return method


def _binary(op: str, doc: str, reflected: bool = False) -> Callable[[Node[Any], Any], Any]:
    if reflected:

        def method(self: Node[Any], other: Any) -> Any:
            return OPERATORS[op](other if isinstance(other, Node) else Node(other), self)
    else:

        def method(self: Node[Any], other: Any) -> Any:
            return OPERATORS[op](self, other if isinstance(other, Node) else Node(other))

    method.__doc__ = doc
    return method


#: Python operator (and traced method) -> the primitive it calls. ``(op, reflected)`` pairs
#: are binary; the others take only the node (a data type restricts where they apply).
_BINARY = {
    "sub": "subtract", "mul": "multiply", "truediv": "divide", "floordiv": "floor_divide",
    "mod": "mod", "divmod": "node_divmod", "pow": "power", "lshift": "lshift",
    "rshift": "rshift", "and": "and_", "or": "or_", "xor": "xor",
}  # fmt: skip
_COMPARE = {"lt": "lt", "le": "le", "gt": "gt", "ge": "ge", "getitem": "getitem"}
_METHODS = {"eq": "eq", "neq": "neq", "getattr": "node_getattr", "append": "list_append"}
_UNARY = {
    "__pos__": ("pos", None), "__neg__": ("neg", None), "__invert__": ("invert", None),
    "__abs__": ("abs", None), "__floor__": ("floor", None), "__ceil__": ("ceil", None),
    "__trunc__": ("trunc", None), "len": ("len_", None), "values": ("values", None),
    "keys": ("keys", dict), "capitalize": ("capitalize", str), "lower": ("lower", str),
    "upper": ("upper", str), "swapcase": ("swapcase", str), "title": ("title", str),
}  # fmt: skip


def _install_operators(cls: type[Node[Any]]) -> None:
    """Define Python's operators and the traced methods of ``cls`` from the tables above."""
    methods: dict[str, Any] = {}
    for name, op in _BINARY.items():
        methods[f"__{name}__"] = _binary(op, f"Traced ``{name}`` (the ``{op}`` operator).")
        methods[f"__r{name}__"] = _binary(op, f"Reflected traced ``{name}``.", reflected=True)
    for name, op in _COMPARE.items():
        methods[f"__{name}__"] = _binary(op, f"Traced ``{name}`` (the ``{op}`` operator).")
    for name, op in _METHODS.items():
        methods[name] = _binary(op, f"Traced ``{name}`` (the ``{op}`` operator).")
    for name, (op, data_type) in _UNARY.items():
        methods[name] = _unary(op, f"Traced ``{name}`` (the ``{op}`` operator).", data_type)
    for name, method in methods.items():
        method.__name__ = name
        method.__qualname__ = f"{cls.__name__}.{name}"
        setattr(cls, name, method)
    cls.__div__ = cls.__truediv__  # type: ignore[attr-defined]
    cls.__rdiv__ = cls.__rtruediv__  # type: ignore[attr-defined]


_install_operators(Node)


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
    _is_parameter = True

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
        self._deps = OWN

    def _copy_extra(self, new: Node[T], memo: dict[int, Any]) -> None:
        new.projections = copy.deepcopy(self.projections, memo)  # type: ignore[attr-defined]


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
