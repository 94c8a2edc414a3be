"""Type-preserving conversion of suggested values and the checks of suggested code."""

from __future__ import annotations

import collections
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opto.optimizers.conversion import (
    ConversionError,
    check_code,
    convert_code,
    convert_value,
    function_signature,
)
from opto.trace.code_policy import CodePolicy

# --- values: the reference's conversion table (optimizers.md §3.8), fixed -----------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (1, "2", 2),
        (1, 2, 2),
        (1, " 7 ", 7),
        (1, "4.0", 4),
        (1, 4.0, 4),
        (1, "1e3", 1000),
        (1.5, "2", 2.0),
        (1.5, 3, 3.0),
        (1.5, "-1e3", -1000.0),
        (True, "False", False),
        (True, "no", False),
        (False, "yes", True),
        (False, "TRUE", True),
        (True, 0, False),
        (False, True, True),
        ([1], "[3, 4]", [3, 4]),
        ([1], (3, 4), [3, 4]),
        ([1], "(3, 4,)", [3, 4]),
        ((1,), [2, 3], (2, 3)),
        ({"a": 1}, "{'b': 2}", {"b": 2}),
        ({"a": 1}, {"b": 2}, {"b": 2}),
        ({1}, "[1, 2]", {1, 2}),
        ("s", 42, "42"),
        ("s", {"k": 1}, '{"k": 1}'),
        ("s", [1, "a"], '[1, "a"]'),
        ("s", "undefined", "undefined"),
        ("s", "def f(): pass", "def f(): pass"),
        (None, "value", "value"),
        (None, [1], [1]),
    ],
)
def test_conversions(old, new, expected):
    value = convert_value(old, new)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (1, "3.9", "not an integer; rounding"),
        (1, 3.9, "not an integer"),
        (1, "ten", "not an integer"),
        (1, True, "boolean, not an integer"),
        (1, [1], "not an integer"),
        (1, "9" * 5000, "not an integer"),
        (1.0, "abc", "not a number"),
        (1.0, False, "boolean"),
        (1.0, 10**400, "too large"),
        (True, "maybe", "not a boolean"),
        (True, 2, "not a boolean"),
        ([1], "abc", "not a JSON or Python literal"),
        ([1], "{'a': 1}", "not a list"),
        ([1], 5, "not a list"),
        ({"a": 1}, "[1]", "not an object"),
        ("s", None, "null"),
    ],
)
def test_lossy_or_wrong_conversions_are_rejected_with_a_reason(old, new, reason):
    with pytest.raises(ConversionError, match=reason):
        convert_value(old, new)


def test_user_converters_win_and_unknown_types_need_one():
    class Temperature:
        def __init__(self, degrees: float) -> None:
            self.degrees = degrees

    with pytest.raises(ConversionError, match="no converter for Temperature"):
        convert_value(Temperature(1.0), "20")
    converted = convert_value(
        Temperature(1.0), "20", converters={Temperature: lambda old, new: Temperature(float(new))}
    )
    assert converted.degrees == 20.0
    same = Temperature(3.0)
    assert convert_value(Temperature(1.0), same) is same


@pytest.mark.parametrize(
    "new", ["nan", "NaN", "inf", "-inf", " Infinity ", math.nan, math.inf, -math.inf, "1e999"]
)
def test_float_parameters_reject_nan_and_inf(new):
    with pytest.raises(ConversionError, match="not a finite number"):
        convert_value(1.5, new)


def test_float_parameters_reject_json_nan_and_infinity_literals():
    for text in ('{"v": NaN}', '{"v": Infinity}', '{"v": -Infinity}'):
        with pytest.raises(ConversionError, match="finite"):
            convert_value(1.5, json.loads(text)["v"])


@pytest.mark.parametrize(
    ("old", "reply", "expected"),
    [
        ({1: "a", 2: "b"}, '{"1": "x", "2": "y"}', {1: "x", 2: "y"}),
        ({1: "a", 2: "b"}, '{"1": "x", "3": "z"}', {1: "x", 3: "z"}),
        ({1.5: 0, 2.5: 1}, '{"1.5": 3}', {1.5: 3}),
        ({True: "on", False: "off"}, '{"true": "yes", "false": "no"}', {True: "yes", False: "no"}),
        ({(1, 2): "a"}, '{"(1, 2)": "b", "(3, 4)": "c"}', {(1, 2): "b", (3, 4): "c"}),
        ({None: 1, "k": 2}, '{"null": 5, "k": 6, "new": 7}', {None: 5, "k": 6, "new": 7}),
        ({"a": 1}, '{"1": 2}', {"1": 2}),
    ],
)
def test_dict_keys_keep_their_types_through_a_json_reply(old, reply, expected):
    value = convert_value(old, json.loads(reply))
    assert value == expected
    assert [type(k) for k in value] == [type(k) for k in expected]
    assert convert_value(old, reply) == expected  # the same reply still as text


def test_dict_key_that_cannot_take_the_key_type_is_rejected():
    with pytest.raises(ConversionError, match="key 'three' is not of type int"):
        convert_value({1: "a"}, {"three": "c"})
    with pytest.raises(ConversionError, match="appears twice"):
        convert_value({1: "a"}, {"1": "x", "1.0": "y"})


def test_container_subclasses_keep_their_type():
    ordered = convert_value(collections.OrderedDict(a=1), '{"b": 2}')
    assert type(ordered) is collections.OrderedDict and ordered == {"b": 2}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([0, 1.5, True, "s", [1], (1,), {"a": 1}, {1}, None]),
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
)
def test_convert_value_keeps_the_type_or_raises_conversion_error(old, new):
    try:
        value = convert_value(old, new)
    except ConversionError:
        return
    if old is not None:
        assert type(value) is type(old)


# --- code ------------------------------------------------------------------------------------

OLD = 'def scale(x, k=2, *, bias=0):\n    """Scale x."""\n    return x * k + bias\n'


def test_function_signature_reads_name_and_parameters():
    assert function_signature(OLD) == ("scale", "x, k, *, bias")
    assert function_signature("def f(a, /, b, *args, c, **kw): pass") == (
        "f",
        "a, /, b, *args, c, **kw",
    )
    assert function_signature("x = 1") is None
    assert function_signature("def (") is None


def test_valid_code_is_accepted_with_fences_and_indentation_removed():
    new = "```python\n    def scale(x, k=3, *, bias=1):\n        return x * k - bias\n```"
    assert convert_code(OLD, new) == "def scale(x, k=3, *, bias=1):\n    return x * k - bias\n"


def test_imports_around_the_function_are_allowed_but_top_level_helpers_are_not():
    new = "import math\n\ndef scale(x, k=2, *, bias=0):\n    return math.floor(x)\n"
    assert convert_code(OLD, new).startswith("import math")
    helper = "def helper(v):\n    return v\n\n" + new.split("\n\n", 1)[1]
    with pytest.raises(ConversionError, match="only imports and the definition of scale"):
        convert_code(OLD, helper)


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        ("def scale(x, k=2, *, bias=0)\n    return x", "does not compile"),
        ("def other(x, k=2, *, bias=0):\n    return x", "must define the function scale"),
        ("def scale(x):\n    return x", r"signature must stay scale\(x, k, \*, bias\)"),
        ("def scale(x, k, bias):\n    return x", "signature"),
        ("x = 1", "defines no function"),
        ("   \n", "empty"),
        ("def scale(x, k=2, *, bias=0):\n    return '\x00'", "null bytes"),
    ],
)
def test_broken_code_is_rejected_with_a_reason(new, reason):
    with pytest.raises(ConversionError, match=reason):
        convert_code(OLD, new)


def test_non_string_code_is_rejected():
    with pytest.raises(ConversionError, match="string"):
        convert_code(OLD, 42)


def test_code_without_a_previous_function_is_only_compiled():
    assert convert_code(None, "def anything(): pass") == "def anything(): pass\n"
    assert convert_code("not code at all (", "def g(): pass") == "def g(): pass\n"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("import os\n    return os.getcwd()", "imports os"),
        ("import os.path as p\n    return p", "imports os.path"),
        ("from subprocess import run\n    return run", "imports from subprocess"),
        ("return __import__('os').getcwd()", '"__import__" is an invalid variable name'),
        ("import importlib\n    return importlib.import_module('subprocess')", "imports importlib"),
        ("return os.system('ls')", "uses the module name os"),
        ("return eval('1')", "uses eval"),
        ("return open('f').read()", "uses open"),
        ("import shutil\n    return shutil.rmtree('x')", "uses shutil.rmtree"),
    ],
)
def test_the_safety_check_rejects_forbidden_modules_and_calls(body, problem):
    new = f"def scale(x, k=2, *, bias=0):\n    {body}\n"
    assert convert_code(OLD, new)  # the check is opt-in
    with pytest.raises(ConversionError, match=problem):
        convert_code(
            OLD,
            new,
            forbidden_modules={"os", "subprocess"},
            forbidden_calls={"eval", "open", "rmtree"},
        )


def test_the_safety_check_allows_similar_but_different_names():
    new = "import osmium\n\ndef scale(x, k=2, *, bias=0):\n    return osmium.evaluate(x)\n"
    check_code(
        new,
        original=OLD,
        policy=CodePolicy(allowed_imports={"osmium"}),
        forbidden_modules={"os"},
        forbidden_calls={"eval"},
    )


def test_check_code_alone():
    check_code("def f(a): return a", expected=("f", "a"))
    with pytest.raises(ConversionError, match="line 1"):
        check_code("def f(:")


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("def f(x):\n return()[]{}'\"`#*/,=.import os_\x00")),
        max_size=80,
    )
    | st.text(max_size=80)
)
def test_convert_code_raises_only_conversion_error(source):
    try:
        result = convert_code(OLD, source, forbidden_modules={"os"}, forbidden_calls={"eval"})
    except ConversionError:
        return
    assert function_signature(result) is not None


def test_convert_suggestion_picks_code_or_value_conversion_by_parameter():
    from opto import trace
    from opto.optimizers.conversion import convert_suggestion

    number = trace.node(3, trainable=True)
    assert convert_suggestion(number, "7") == 7
    with pytest.raises(ConversionError):
        convert_suggestion(number, "3.9")

    @trace.bundle(trainable=True)
    def double(x):
        return x * 2

    code = double.parameter
    assert "__code" in code.py_name
    new = convert_suggestion(code, "def double(x):\n    return x * 3\n")
    assert "x * 3" in new
    with pytest.raises(ConversionError):
        convert_suggestion(code, "def triple(y):\n    return y\n")
