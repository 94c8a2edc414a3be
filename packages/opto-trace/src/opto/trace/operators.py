"""Traced operators.

Every operator is a bundled function: its parameter names are the input keys of the
MessageNode it returns and its docstring is the node's description (``"[add] ..."``).
Builtins are always called through :mod:`builtins`, since several operators shadow them.
"""

from __future__ import annotations

import builtins
import copy as _copy
import math
from typing import Any

from opto.trace.bundle import bundle
from opto.trace.nodes import Node

# ---------------------------------------------------------------------------- identity


@bundle()
def clone(x: Any) -> Any:
    """This is a clone operator of x."""
    return _copy.deepcopy(x)


def identity(x: Node[Any]) -> Node[Any]:
    """A traced copy of ``x`` (same as ``x.clone()``)."""
    return x.clone()


# ---------------------------------------------------------------------------- unary


@bundle()
def pos(x: Any) -> Any:
    """This is a pos operator of x."""
    return +x


@bundle()
def neg(x: Any) -> Any:
    """This is a neg operator of x."""
    return -x


@bundle()
def abs(x: Any) -> Any:
    """This is an abs operator of x."""
    return builtins.abs(x)


@bundle()
def invert(x: Any) -> Any:
    """This is an invert operator of x."""
    return ~x


@bundle()
def round(x: Any, n: Any = None) -> Any:
    """This is a round operator of x."""
    return builtins.round(x, n)


@bundle()
def floor(x: Any) -> Any:
    """This is a floor operator of x."""
    return math.floor(x)


@bundle()
def ceil(x: Any) -> Any:
    """This is a ceil operator of x."""
    return math.ceil(x)


@bundle()
def trunc(x: Any) -> Any:
    """This is a trunc operator of x."""
    return math.trunc(x)


# ---------------------------------------------------------------------------- arithmetic


@bundle()
def add(x: Any, y: Any) -> Any:
    """This is an add operator of x and y."""
    return x + y


@bundle()
def subtract(x: Any, y: Any) -> Any:
    """This is a subtract operator of x and y."""
    return x - y


@bundle()
def multiply(x: Any, y: Any) -> Any:
    """This is a multiply operator of x and y."""
    return x * y


@bundle()
def floor_divide(x: Any, y: Any) -> Any:
    """This is a floor_divide operator of x and y."""
    return x // y


@bundle()
def divide(x: Any, y: Any) -> Any:
    """This is a divide operator of x and y."""
    return x / y


@bundle()
def mod(x: Any, y: Any) -> Any:
    """This is a mod operator of x and y."""
    return x % y


@bundle()
def node_divmod(x: Any, y: Any) -> Any:
    """This is a divmod operator of x and y."""
    return builtins.divmod(x, y)


@bundle()
def power(x: Any, y: Any) -> Any:
    """This is a power operator of x and y."""
    return x**y


@bundle()
def lshift(x: Any, y: Any) -> Any:
    """This is a lshift operator of x and y."""
    return x << y


@bundle()
def rshift(x: Any, y: Any) -> Any:
    """This is a rshift operator of x and y."""
    return x >> y


@bundle()
def and_(x: Any, y: Any) -> Any:
    """This is an and operator of x and y."""
    return x & y


@bundle()
def or_(x: Any, y: Any) -> Any:
    """This is an or operator of x and y."""
    return x | y


@bundle()
def xor(x: Any, y: Any) -> Any:
    """This is a xor operator of x and y."""
    return x ^ y


# ---------------------------------------------------------------------------- comparison


@bundle()
def lt(x: Any, y: Any) -> Any:
    """This is a lt operator of x and y."""
    return x < y


@bundle()
def le(x: Any, y: Any) -> Any:
    """This is a le operator of x and y."""
    return x <= y


@bundle()
def eq(x: Any, y: Any) -> Any:
    """This is an eq operator of x and y."""
    return x == y


@bundle()
def neq(x: Any, y: Any) -> Any:
    """This is a not eq operator of x and y."""
    return x != y


@bundle()
def ne(x: Any, y: Any) -> Any:
    """This is a ne operator of x and y."""
    return x != y


@bundle()
def ge(x: Any, y: Any) -> Any:
    """This is a ge operator of x and y."""
    return x >= y


@bundle()
def gt(x: Any, y: Any) -> Any:
    """This is a gt operator of x and y."""
    return x > y


# ---------------------------------------------------------------------------- logic


@bundle()
def cond(condition: Any, x: Any, y: Any) -> Any:
    """This selects x if condition is True, otherwise y."""
    return x if condition else y


@bundle()
def not_(x: Any) -> Any:
    """This is a not operator of x."""
    return not x


@bundle()
def is_(x: Any, y: Any) -> Any:
    """Whether x is equal to y."""
    return x is y


@bundle()
def is_not(x: Any, y: Any) -> Any:
    """Whether x is not equal to y."""
    return x is not y


@bundle()
def in_(x: Any, y: Any) -> Any:
    """Whether x is in y."""
    return x in y


@bundle()
def not_in(x: Any, y: Any) -> Any:
    """Whether x is not in y."""
    return x not in y


# ---------------------------------------------------------------------------- indexing


@bundle()
def getitem(x: Any, index: Any) -> Any:
    """This is a getitem operator of x based on index."""
    return x[index]


@bundle()
def pop(x: Any, index: Any) -> Any:
    """This is a pop operator of x based on index (x itself is not modified)."""
    return _copy.copy(x).pop(index)


@bundle()
def len_(x: Any) -> Any:
    """This is a len operator of x."""
    return builtins.len(x)


# ---------------------------------------------------------------------------- strings


@bundle()
def ord_(x: Any) -> Any:
    """The unicode number of a character."""
    return builtins.ord(x)


@bundle()
def chr_(x: Any) -> Any:
    """The character of a unicode number."""
    return builtins.chr(x)


@bundle()
def concat(x: Any, y: Any) -> Any:
    """This is a concatenation operator of x and y."""
    return x + y


@bundle()
def lower(x: Any) -> Any:
    """This makes each character in x lower case."""
    return x.lower()


@bundle()
def upper(x: Any) -> Any:
    """This makes each character in x upper case."""
    return x.upper()


@bundle()
def title(x: Any) -> Any:
    """This makes the first character of each word in x upper case."""
    return x.title()


@bundle()
def swapcase(x: Any) -> Any:
    """This swaps the case of each character in x."""
    return x.swapcase()


@bundle()
def capitalize(x: Any) -> Any:
    """This capitalizes the first character of x."""
    return x.capitalize()


@bundle()
def split(x: Any, y: Any, maxsplit: Any = -1) -> Any:
    """Splits x into a list of strings at separator y (at most maxsplit times)."""
    return x.split(y, maxsplit)


@bundle()
def strip(x: Any, chars: Any = None) -> Any:
    """Removes the leading and trailing characters of x."""
    return x.strip(chars)


@bundle()
def replace(x: Any, old: Any, new: Any, count: Any = -1) -> Any:
    """Replaces occurrences of old in x by new (at most count times)."""
    return x.replace(old, new, count)


@bundle()
def format(x: Any, *args: Any, **kwargs: Any) -> Any:
    """Fills in a string template with content, str.format()."""
    return x.format(*args, **kwargs)


@bundle()
def join(x: Any, *y: Any) -> Any:
    """Joins a sequence y with the separator x."""
    return x.join(list(y))


# ---------------------------------------------------------------------------- attributes


@bundle()
def node_getattr(obj: Any, attr: Any) -> Any:
    """This operator gets attr of obj."""
    return builtins.getattr(obj, attr)


@bundle(_process_inputs=False, allow_external_dependencies=True)
def call(fun: Any, *args: Any, **kwargs: Any) -> Any:
    """This operator calls the function `fun` with args (args_0, args_1, etc.) and kwargs.
    If there are no args or kwargs, i.e. call(fun=function_name), the function takes no input.
    """
    fn = fun._data if isinstance(fun, Node) else fun
    if not callable(fn):
        raise TypeError(f"call: {fn!r} is not callable.")
    return fn(*args, **kwargs)


# ---------------------------------------------------------------------------- construction


@bundle()
def to_list(x: Any) -> Any:
    """This converts x to a list."""
    return builtins.list(x)


@bundle()
def make_list(*args: Any) -> Any:
    """This creates a list from the arguments."""
    return builtins.list(args)


@bundle()
def to_dict(x: Any) -> Any:
    """This converts x to a dictionary."""
    return builtins.dict(x)


@bundle()
def make_dict(**kwargs: Any) -> Any:
    """This creates a dictionary from the keyword arguments."""
    return builtins.dict(kwargs)


@bundle()
def to_set(x: Any) -> Any:
    """This converts x to a set."""
    return builtins.set(x)


@bundle()
def make_set(*args: Any) -> Any:
    """This creates a set from the arguments."""
    return builtins.set(args)


@bundle()
def to_tuple(x: Any) -> Any:
    """This converts x to a tuple."""
    return builtins.tuple(x)


@bundle()
def make_tuple(*args: Any) -> Any:
    """This creates a tuple from the arguments."""
    return builtins.tuple(args)


# ---------------------------------------------------------------------------- dict


@bundle()
def keys(x: Any) -> Any:
    """Return the keys of a dictionary x as a list."""
    if not isinstance(x, dict):
        raise AttributeError(f"{type(x)} object has no attribute 'keys'.")
    return builtins.list(x.keys())


@bundle()
def values(x: Any) -> Any:
    """Return the values of a dictionary x as a list."""
    if not isinstance(x, dict):
        raise AttributeError(f"{type(x)} object has no attribute 'values'.")
    return builtins.list(x.values())


@bundle()
def get(x: Any, key: Any, default: Any = None) -> Any:
    """Return the value of key in x, or default when key is absent."""
    return x.get(key, default)


@bundle()
def dict_update(x: Any, y: Any) -> Any:
    """Update the dictionary x with y (returns a new dictionary)."""
    x = _copy.copy(x)
    x.update(y)
    return x


@bundle()
def dict_pop(x: Any, key: Any) -> Any:
    """Pop key from the dictionary x (returns the new dictionary)."""
    x = _copy.copy(x)
    x.pop(key)
    return x


@bundle()
def dict_popitem(x: Any) -> Any:
    """Pop the last item from the dictionary x (returns the new dictionary)."""
    x = _copy.copy(x)
    x.popitem()
    return x


# ---------------------------------------------------------------------------- list


@bundle()
def list_append(x: Any, y: Any) -> Any:
    """Append y to the list x (returns a new list)."""
    x = _copy.copy(x)
    x.append(y)
    return x


@bundle()
def list_clear(x: Any) -> Any:
    """Clear the list x (returns a new, empty list)."""
    x = _copy.copy(x)
    x.clear()
    return x


@bundle()
def list_extend(x: Any, y: Any) -> Any:
    """Extend the list x with y (returns a new list)."""
    x = _copy.copy(x)
    x.extend(y)
    return x


@bundle()
def list_insert(x: Any, index: Any, y: Any) -> Any:
    """Insert y at index in the list x (returns a new list)."""
    x = _copy.copy(x)
    x.insert(index, y)
    return x


@bundle()
def list_pop(x: Any, index: Any) -> Any:
    """Pop the item at index from the list x (returns the new list)."""
    x = _copy.copy(x)
    x.pop(index)
    return x


@bundle()
def list_remove(x: Any, y: Any) -> Any:
    """Remove the first occurrence of y from the list x (returns a new list)."""
    x = _copy.copy(x)
    x.remove(y)
    return x


@bundle()
def list_reverse(x: Any) -> Any:
    """Reverse the list x (returns a new list)."""
    x = _copy.copy(x)
    x.reverse()
    return x


@bundle()
def list_sort(x: Any, key: Any = None, reverse: Any = False) -> Any:
    """Sort the list x (returns a new list)."""
    x = _copy.copy(x)
    x.sort(key=key, reverse=reverse)
    return x


# ---------------------------------------------------------------------------- set


@bundle()
def set_add(x: Any, y: Any) -> Any:
    """Add y to the set x (returns a new set)."""
    x = _copy.copy(x)
    x.add(y)
    return x


@bundle()
def set_clear(x: Any) -> Any:
    """Clear the set x (returns a new, empty set)."""
    x = _copy.copy(x)
    x.clear()
    return x


@bundle()
def set_discard(x: Any, y: Any) -> Any:
    """Discard y from the set x (returns a new set)."""
    x = _copy.copy(x)
    x.discard(y)
    return x


@bundle()
def set_intersection_update(x: Any, y: Any) -> Any:
    """Keep only the elements of x also in y (returns a new set)."""
    x = _copy.copy(x)
    x.intersection_update(y)
    return x


@bundle()
def set_pop(x: Any) -> Any:
    """Pop an element from the set x (returns the new set)."""
    x = _copy.copy(x)
    x.pop()
    return x


@bundle()
def set_remove(x: Any, y: Any) -> Any:
    """Remove y from the set x (returns a new set)."""
    x = _copy.copy(x)
    x.remove(y)
    return x


@bundle()
def set_symmetric_difference_update(x: Any, y: Any) -> Any:
    """Keep the elements in exactly one of x and y (returns a new set)."""
    x = _copy.copy(x)
    x.symmetric_difference_update(y)
    return x


@bundle()
def set_update(x: Any, y: Any) -> Any:
    """Add the elements of y to the set x (returns a new set)."""
    x = _copy.copy(x)
    x.update(y)
    return x


# ---------------------------------------------------------------------------- LLM


def _ask(llm: Any, system_prompt: Any, user_prompts: tuple[Any, ...], options: Any) -> Any:
    messages = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    for prompt in user_prompts:
        messages.append({"role": "user", "content": prompt})
    response = llm(messages=messages, **options)
    return response.choices[0].message.content


@bundle(catch_execution_error=False)
def call_llm(llm: Any, system_prompt: Any, *user_prompts: Any, **kwargs: Any) -> Any:
    """Query the language model of system_prompt with user_prompts."""
    return _ask(llm, system_prompt, user_prompts, kwargs)


@bundle(catch_execution_error=False)
def call_default_llm(system_prompt: Any, *user_prompts: Any, **kwargs: Any) -> Any:
    """Query the default language model with system_prompt and user_prompts."""
    return _ask(_default_llm(), system_prompt, user_prompts, kwargs)


_call_given_llm = call_llm


def call_llm(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
    """Query an LLM: ``call_llm(llm, system_prompt, *user_prompts, **options)``, or
    ``call_llm(system_prompt, *user_prompts, **options)`` with the default ``LLM()``.

    The first form is chosen when the first argument is an LLM (not a str or None); it
    traces a ``call_llm`` operator, the second a ``call_default_llm`` one, each with its
    inputs named after what they are.
    """
    first = args[0] if args else kwargs.get("llm", kwargs.get("system_prompt"))
    value = first._data if isinstance(first, Node) else first
    if "llm" not in kwargs and (value is None or isinstance(value, str)):
        return call_default_llm(*args, **kwargs)
    return _call_given_llm(*args, **kwargs)


def _default_llm() -> Any:
    """`opto.utils.llm.LLM()`: the configured default LLM."""
    from opto.utils.llm import LLM

    return LLM()
