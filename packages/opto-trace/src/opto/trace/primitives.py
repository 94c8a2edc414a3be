"""The primitive operators: the table ``x + y``, ``x[k]``, ``x.lower()``... call.

Graph core, built directly on message creation (no bundle machinery): a :class:`Primitive`
runs its function on the inputs' data and creates the output with
:func:`~opto.trace._message._new_message`. Importing this module fills
:data:`opto.trace._node.OPERATORS`, the table Node's Python operators look up.
:mod:`opto.trace.operators` offers the same operators as bundled functions (``FunModule``).

Each function's parameter names are the input keys of its outputs and its docstring their
description (``"[add] ..."``). Builtins are called through :mod:`builtins`, since several
operators shadow them. Two kinds are built from tables at the end of the module, one line
each: one-input primitives that apply an existing function (``len_``, ``floor``,
``to_list``...) and copy-then-mutate ones (``dict_update``, ``list_append``...).
"""

from __future__ import annotations

import builtins
import copy as _copy
import inspect
import math
from collections.abc import Callable
from typing import Any

from opto.trace._calls import CallRecord, OperatorInfo, input_node, record
from opto.trace._message import MessageNode, _new_message
from opto.trace._node import OPERATORS, Node
from opto.trace._state import _TRACING, USED_NODES, UsedNodes
from opto.utils.signatures import bind, plan_of

__all__ = ["Primitive"]


class Primitive(OperatorInfo):
    """A traced operator: bind, run on the inputs' data, create the output node.

    ``records=True`` (only ``call``) runs the function inside a frame that records the
    nodes it reads and creates, and passes the arguments as given (nodes stay nodes).
    Errors become an ExceptionNode raised inside :class:`~opto.trace.errors.ExecutionError`.
    """

    __slots__ = (
        "_arity",
        "_doc",
        "_fun",
        "_fun_name",
        "_keys",
        "_op_name",
        "_plan",
        "_qualname",
        "_records",
        "_source_cache",
        "_static",
        "allow_external_dependencies",
        "description",
    )
    output_name = None
    traceable_code = False
    parameter = None
    trainable = False

    def __init__(self, fun: Callable[..., Any], *, records: bool = False) -> None:
        self._fun = fun
        self._fun_name = self._qualname = self._op_name = fun.__name__
        self._doc = inspect.cleandoc(fun.__doc__ or "")
        self.description = f"[{self._op_name}] {self._doc}".rstrip()
        plan = plan_of(fun)
        assert plan is not None
        self._plan = plan
        self._keys = plan.pos
        self._arity = len(plan.pos) if plan.simple and not records else -1
        self._records = records
        self.allow_external_dependencies = records
        self._static = None
        self._source_cache = None

    @property
    def _process_inputs(self) -> bool:
        return not self._records

    @property
    def name(self) -> str:
        """The operator name (tag of the description)."""
        return self._op_name

    def __repr__(self) -> str:
        return f"<Primitive {self._op_name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> MessageNode[Any]:
        if not kwargs and len(args) == self._arity:
            for value in args:
                if not isinstance(value, Node):
                    break
            else:  # nodes in, positionally: the hot path of tracing
                try:
                    if len(args) == 2:  # binary operators: no intermediate list
                        output = self._fun(args[0]._data, args[1]._data)
                    else:
                        output = self._fun(*[value._data for value in args])
                except Exception as e:
                    return self._failed(args, e, e)
                if isinstance(output, Node):
                    output = output._data
                elif isinstance(output, Exception):
                    return self._failed(args, output, None)
                if _TRACING.get():
                    return _new_message(
                        output, self._op_name, self.description, self._keys, args, self
                    )
                return _new_message(output, self._op_name, self.description, (), (), self)
        return self._call(args, kwargs)

    def _failed(
        self, args: tuple[Node[Any], ...], output: Any, error: BaseException | None
    ) -> MessageNode[Any]:
        call = CallRecord(self, self._fun, self._keys, args, [a._data for a in args], {})
        call.output = output
        call.error = error
        return record(call)

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> MessageNode[Any]:
        """Bind, wrap non-node arguments into nodes, run, record."""
        plan = self._plan
        keys, values, n_pos = bind(plan, self._qualname, args, kwargs)
        named = len(plan.pos)
        nodes: list[Node[Any]] = []
        passed: list[Any] = []
        for i, value in enumerate(values):
            if isinstance(value, Node):
                nodes.append(value)
                passed.append(value._data)
            else:
                key = keys[i]
                own_name = (i < named or i >= n_pos) and key.isidentifier()
                nodes.append(input_node(value, key if own_name else None))
                passed.append(value)
        if self._records:
            call = CallRecord(self, self._fun, keys, nodes, list(args), dict(kwargs))
            frame = call.frame = UsedNodes()
            token = USED_NODES.set([*USED_NODES.get(), frame])
        else:
            ckw = dict(zip(keys[n_pos:], passed[n_pos:])) if len(keys) > n_pos else {}
            call = CallRecord(self, self._fun, keys, nodes, passed[:n_pos], ckw)
            token = None
        try:
            call.output = self._fun(*call.args, **call.kwargs)
        except Exception as e:
            call.output = call.error = e
        finally:
            if token is not None:
                USED_NODES.reset(token)
        return record(call)


def _applying(name: str, fun: Callable[[Any], Any], doc: str) -> Callable[[Any], Any]:
    """The one-input primitive ``name`` (docstring ``doc``): ``fun`` applied to ``x``."""

    def primitive(x: Any) -> Any:
        return fun(x)

    return _named(primitive, name, doc)


def _on_copy(name: str, inputs: str, doc: str) -> Callable[..., Any]:
    """The copy-then-mutate primitive ``<type>_<method>`` (e.g. ``list_append``).

    It calls the mutating ``method`` on a shallow copy of its first input with the other
    inputs, positionally, and returns the copy; the input itself is not modified.
    ``inputs`` names the parameters (``"x index y"``): the signature that ``help`` shows
    and that binds the operator's input keys.
    """
    method = name.partition("_")[2]
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter(p, kind, annotation="Any") for p in inputs.split()],
        return_annotation="Any",
    )
    n_args = len(signature.parameters) - 1

    def primitive(x: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs or len(args) != n_args:  # bind like Python would (or raise its TypeError)
            x, *args = signature.bind(x, *args, **kwargs).args
        x = _copy.copy(x)
        getattr(x, method)(*args)
        return x

    primitive.__signature__ = signature  # type: ignore[attr-defined]
    return _named(primitive, name, doc)


def _named(fun: Callable[..., Any], name: str, doc: str) -> Callable[..., Any]:
    """``fun`` as the module-level primitive ``name``: its name, qualname and docstring
    (what the operator's description, ``help`` and pickling by reference use)."""
    fun.__name__ = fun.__qualname__ = name
    fun.__doc__ = doc
    return fun


# ---------------------------------------------------------------------------- identity, unary
def pos(x: Any) -> Any:
    """This is a pos operator of x."""
    return +x


def neg(x: Any) -> Any:
    """This is a neg operator of x."""
    return -x


def invert(x: Any) -> Any:
    """This is an invert operator of x."""
    return ~x


def round(x: Any, n: Any = None) -> Any:
    """This is a round operator of x."""
    return builtins.round(x, n)


# ---------------------------------------------------------------------------- arithmetic
def add(x: Any, y: Any) -> Any:
    """This is an add operator of x and y."""
    return x + y


def subtract(x: Any, y: Any) -> Any:
    """This is a subtract operator of x and y."""
    return x - y


def multiply(x: Any, y: Any) -> Any:
    """This is a multiply operator of x and y."""
    return x * y


def floor_divide(x: Any, y: Any) -> Any:
    """This is a floor_divide operator of x and y."""
    return x // y


def divide(x: Any, y: Any) -> Any:
    """This is a divide operator of x and y."""
    return x / y


def mod(x: Any, y: Any) -> Any:
    """This is a mod operator of x and y."""
    return x % y


def node_divmod(x: Any, y: Any) -> Any:
    """This is a divmod operator of x and y."""
    return builtins.divmod(x, y)


def power(x: Any, y: Any) -> Any:
    """This is a power operator of x and y."""
    return x**y


def lshift(x: Any, y: Any) -> Any:
    """This is a lshift operator of x and y."""
    return x << y


def rshift(x: Any, y: Any) -> Any:
    """This is a rshift operator of x and y."""
    return x >> y


def and_(x: Any, y: Any) -> Any:
    """This is an and operator of x and y."""
    return x & y


def or_(x: Any, y: Any) -> Any:
    """This is an or operator of x and y."""
    return x | y


def xor(x: Any, y: Any) -> Any:
    """This is a xor operator of x and y."""
    return x ^ y


# ---------------------------------------------------------------------------- comparison, logic
def lt(x: Any, y: Any) -> Any:
    """This is a lt operator of x and y."""
    return x < y


def le(x: Any, y: Any) -> Any:
    """This is a le operator of x and y."""
    return x <= y


def eq(x: Any, y: Any) -> Any:
    """This is an eq operator of x and y."""
    return x == y


def neq(x: Any, y: Any) -> Any:
    """This is a not eq operator of x and y."""
    return x != y


def ne(x: Any, y: Any) -> Any:
    """This is a ne operator of x and y."""
    return x != y


def ge(x: Any, y: Any) -> Any:
    """This is a ge operator of x and y."""
    return x >= y


def gt(x: Any, y: Any) -> Any:
    """This is a gt operator of x and y."""
    return x > y


def cond(condition: Any, x: Any, y: Any) -> Any:
    """This selects x if condition is True, otherwise y."""
    return x if condition else y


def not_(x: Any) -> Any:
    """This is a not operator of x."""
    return not x


def is_(x: Any, y: Any) -> Any:
    """Whether x is equal to y."""
    return x is y


def is_not(x: Any, y: Any) -> Any:
    """Whether x is not equal to y."""
    return x is not y


def in_(x: Any, y: Any) -> Any:
    """Whether x is in y."""
    return x in y


def not_in(x: Any, y: Any) -> Any:
    """Whether x is not in y."""
    return x not in y


# ---------------------------------------------------------------------------- indexing, strings
def getitem(x: Any, index: Any) -> Any:
    """This is a getitem operator of x based on index."""
    return x[index]


def pop(x: Any, index: Any) -> Any:
    """This is a pop operator of x based on index (x itself is not modified)."""
    return _copy.copy(x).pop(index)


def concat(x: Any, y: Any) -> Any:
    """This is a concatenation operator of x and y."""
    return x + y


def lower(x: Any) -> Any:
    """This makes each character in x lower case."""
    return x.lower()


def upper(x: Any) -> Any:
    """This makes each character in x upper case."""
    return x.upper()


def title(x: Any) -> Any:
    """This makes the first character of each word in x upper case."""
    return x.title()


def swapcase(x: Any) -> Any:
    """This swaps the case of each character in x."""
    return x.swapcase()


def capitalize(x: Any) -> Any:
    """This capitalizes the first character of x."""
    return x.capitalize()


def split(x: Any, y: Any, maxsplit: Any = -1) -> Any:
    """Splits x into a list of strings at separator y (at most maxsplit times)."""
    return x.split(y, maxsplit)


def strip(x: Any, chars: Any = None) -> Any:
    """Removes the leading and trailing characters of x."""
    return x.strip(chars)


def replace(x: Any, old: Any, new: Any, count: Any = -1) -> Any:
    """Replaces occurrences of old in x by new (at most count times)."""
    return x.replace(old, new, count)


def format(x: Any, *args: Any, **kwargs: Any) -> Any:
    """Fills in a string template with content, str.format()."""
    return x.format(*args, **kwargs)


def join(x: Any, *y: Any) -> Any:
    """Joins a sequence y with the separator x."""
    return x.join(list(y))


# ---------------------------------------------------------------------------- attributes, calls
def node_getattr(obj: Any, attr: Any) -> Any:
    """This operator gets attr of obj."""
    return builtins.getattr(obj, attr)


def call(fun: Any, *args: Any, **kwargs: Any) -> Any:
    """This operator calls the function `fun` with args (args_0, args_1, etc.) and kwargs.
    If there are no args or kwargs, i.e. call(fun=function_name), the function takes no input.
    """
    fn = fun._data if isinstance(fun, Node) else fun
    if not callable(fn):
        raise TypeError(f"call: {fn!r} is not callable.")
    return fn(*args, **kwargs)


# ---------------------------------------------------------------------------- construction
def make_list(*args: Any) -> Any:
    """This creates a list from the arguments."""
    return builtins.list(args)


def make_dict(**kwargs: Any) -> Any:
    """This creates a dictionary from the keyword arguments."""
    return builtins.dict(kwargs)


def make_set(*args: Any) -> Any:
    """This creates a set from the arguments."""
    return builtins.set(args)


def make_tuple(*args: Any) -> Any:
    """This creates a tuple from the arguments."""
    return builtins.tuple(args)


# ---------------------------------------------------------------------------- containers
def keys(x: Any) -> Any:
    """Return the keys of a dictionary x as a list."""
    if not isinstance(x, dict):
        raise AttributeError(f"{type(x)} object has no attribute 'keys'.")
    return builtins.list(x.keys())


def values(x: Any) -> Any:
    """Return the values of a dictionary x as a list."""
    if not isinstance(x, dict):
        raise AttributeError(f"{type(x)} object has no attribute 'values'.")
    return builtins.list(x.values())


def get(x: Any, key: Any, default: Any = None) -> Any:
    """Return the value of key in x, or default when key is absent."""
    return x.get(key, default)


def list_sort(x: Any, key: Any = None, reverse: Any = False) -> Any:
    """Sort the list x (returns a new list)."""
    x = _copy.copy(x)
    x.sort(key=key, reverse=reverse)
    return x


# ---------------------------------------------------------------------------- tables
#: One-input primitives applying an existing function: (name, function, docstring).
_APPLYING: tuple[tuple[str, Callable[[Any], Any], str], ...] = (
    ("clone", _copy.deepcopy, "This is a clone operator of x."),
    ("abs", builtins.abs, "This is an abs operator of x."),
    ("floor", math.floor, "This is a floor operator of x."),
    ("ceil", math.ceil, "This is a ceil operator of x."),
    ("trunc", math.trunc, "This is a trunc operator of x."),
    ("len_", builtins.len, "This is a len operator of x."),
    ("ord_", builtins.ord, "The unicode number of a character."),
    ("chr_", builtins.chr, "The character of a unicode number."),
    ("to_list", builtins.list, "This converts x to a list."),
    ("to_dict", builtins.dict, "This converts x to a dictionary."),
    ("to_set", builtins.set, "This converts x to a set."),
    ("to_tuple", builtins.tuple, "This converts x to a tuple."),
)  # fmt: skip
#: Copy-then-mutate primitives ``<type>_<method>``: (name, inputs, docstring).
_ON_COPY: tuple[tuple[str, str, str], ...] = (
    ("dict_update", "x y", "Update the dictionary x with y (returns a new dictionary)."),
    ("dict_pop", "x key", "Pop key from the dictionary x (returns the new dictionary)."),
    ("dict_popitem", "x", "Pop the last item from the dictionary x (returns the new dictionary)."),
    ("list_append", "x y", "Append y to the list x (returns a new list)."),
    ("list_clear", "x", "Clear the list x (returns a new, empty list)."),
    ("list_extend", "x y", "Extend the list x with y (returns a new list)."),
    ("list_insert", "x index y", "Insert y at index in the list x (returns a new list)."),
    ("list_pop", "x index", "Pop the item at index from the list x (returns the new list)."),
    ("list_remove", "x y", "Remove the first occurrence of y from the list x (returns a new list)."),
    ("list_reverse", "x", "Reverse the list x (returns a new list)."),
    ("set_add", "x y", "Add y to the set x (returns a new set)."),
    ("set_clear", "x", "Clear the set x (returns a new, empty set)."),
    ("set_discard", "x y", "Discard y from the set x (returns a new set)."),
    ("set_intersection_update", "x y", "Keep only the elements of x also in y (returns a new set)."),
    ("set_pop", "x", "Pop an element from the set x (returns the new set)."),
    ("set_remove", "x y", "Remove y from the set x (returns a new set)."),
    ("set_symmetric_difference_update", "x y", "Keep the elements in exactly one of x and y (returns a new set)."),
    ("set_update", "x y", "Add the elements of y to the set x (returns a new set)."),
)  # fmt: skip
for _name, _fun, _doc in _APPLYING:
    globals()[_name] = _applying(_name, _fun, _doc)
for _name, _inputs, _doc in _ON_COPY:
    globals()[_name] = _on_copy(_name, _inputs, _doc)
del _name, _fun, _doc, _inputs


#: Every primitive function, in the order :mod:`opto.trace.operators` lists them.
FUNCTIONS: tuple[Callable[..., Any], ...] = tuple(
    globals()[_name]
    for _name in """
    clone pos neg abs invert round floor ceil trunc add subtract multiply floor_divide divide
    mod node_divmod power lshift rshift and_ or_ xor lt le eq neq ne ge gt cond not_ is_ is_not
    in_ not_in getitem pop len_ ord_ chr_ concat lower upper title swapcase capitalize split
    strip replace format join node_getattr call to_list make_list to_dict make_dict to_set
    make_set to_tuple make_tuple keys values get dict_update dict_pop dict_popitem list_append
    list_clear list_extend list_insert list_pop list_remove list_reverse list_sort set_add
    set_clear set_discard set_intersection_update set_pop set_remove
    set_symmetric_difference_update set_update
""".split()
)

for _fun in FUNCTIONS:
    OPERATORS[_fun.__name__] = Primitive(_fun, records=_fun is call)
del _fun
