"""Errors: ExecutionError/ExceptionNode, annotated error comments, trainable code errors."""

from __future__ import annotations

import pytest
from opto.trace.bundle import bundle, trace_nodes
from opto.trace.errors import ExecutionError, TraceMissingInputsError
from opto.trace.nodes import ExceptionNode, node
from opto.trace.propagators import GraphPropagator

pytestmark = pytest.mark.usefixtures("fresh_graph")


@bundle()
def err(x):
    return x / 0


def test_plain_error_becomes_execution_error_with_annotated_comment():
    x = node(1, name="x")
    with pytest.raises(ExecutionError) as info:
        err(x)
    e = info.value
    n = e.exception_node
    assert isinstance(n, ExceptionNode)
    assert n.data == "(ZeroDivisionError) division by zero"
    assert e.args[0] == n.data
    assert n.name == "exception_err:0"
    assert n._description == "[exception] The operator err raises an exception."
    assert n.parents == [x]
    assert n.info["error_comment"] == (
        "def err(x):\n    return x / 0 <--- (ZeroDivisionError) division by zero.\n"
        "(ZeroDivisionError) division by zero."
    )
    assert str(e).startswith("\n\nTraceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in str(e)
    assert n.create_feedback() == n.data
    assert n.create_feedback("full") == n.info["error_comment"]


def test_errors_in_helpers_annotate_every_frame():
    def helper(v):
        return v["missing"]

    @bundle()
    def outer(x):
        y = x
        return helper(y)

    with pytest.raises(ExecutionError) as info:
        outer({})
    comment = info.value.exception_node.info["error_comment"]
    assert "return helper(y) <--- Error raised in function call. See below." in comment
    assert 'return v["missing"] <--- (KeyError) missing.' in comment
    assert comment.endswith("\n(KeyError) missing.")


def test_inline_and_method_errors():
    def raw(x):
        raise RuntimeError("inline")

    with pytest.raises(ExecutionError, match="inline"):
        bundle()(raw)(1)

    class A:
        @bundle()
        def m(self, x):
            raise RuntimeError("method")

    with pytest.raises(ExecutionError) as info:
        A().m(1)
    n = info.value.exception_node
    assert n.data == "(RuntimeError) method"
    assert len(n.parents) == 2  # self node and x


def test_nested_bundle_error_surfaces_as_execution_error_b3():
    @bundle()
    def outer(x):
        return err(x)

    with pytest.raises(ExecutionError) as info:
        outer(1)
    n = info.value.exception_node
    assert n.data == "(opto.trace.errors.ExecutionError) (ZeroDivisionError) division by zero"
    comment = n.info["error_comment"]
    assert "return err(x) <--- Error raised in function call. See below." in comment
    assert "return x / 0 <--- (ZeroDivisionError) division by zero." in comment


def test_execution_error_construction_is_side_effect_free_b3():
    n = ExceptionNode(ValueError("v"), inputs=[], info={"traceback": "tb"})
    with trace_nodes() as used:
        e = ExecutionError(n)
        text = str(e)
    assert used == set()
    assert text == "\n\ntb"


def test_exception_without_args_b9():
    @bundle()
    def bare(x):
        raise ValueError()

    with pytest.raises(ExecutionError) as info:
        bare(1)
    n = info.value.exception_node
    assert n.data == "(ValueError) "
    assert "raise ValueError() <--- (ValueError)" in n.info["error_comment"]


def test_returned_exception_is_an_error():
    @bundle()
    def give(x):
        return KeyError("returned")

    with pytest.raises(ExecutionError, match="returned"):
        give(1)


def test_operator_errors_surface_from_magic_methods():
    with pytest.raises(ExecutionError) as info:
        node(1) + "a"
    assert info.value.exception_node.name == "exception_add:0"
    assert "TypeError" in info.value.exception_node.data


def test_unpacking_none_raises_execution_error():
    @bundle()
    def nothing(x):
        return None

    with pytest.raises(ExecutionError) as info:
        _a, _b = nothing(1)
    n = info.value.exception_node
    assert n.data == "(TypeError) TypeError: Cannot unpack non-iterable <class 'NoneType'> object"
    assert n._description == "[ExceptionNode]"
    assert n.name.startswith("str:")


def test_syntax_error_in_trainable_code_shows_the_line():
    @bundle(trainable=True)
    def f(x):
        return x + 1

    f.parameter._set("def f(x):\n    return x +\n")
    with pytest.raises(ExecutionError) as info:
        f(1)
    n = info.value.exception_node
    assert n.data.startswith("(SyntaxError) invalid syntax")
    assert n.name == "exception___code0:0"
    assert n._description == "[exception] The code parameter __code0 has an error."
    assert n.parents == [f.parameter]
    assert n.info["error_comment"] == (
        "def f(x):\n    return x + <--- (SyntaxError) invalid syntax.\n(SyntaxError) invalid syntax."
    )
    assert n.info["traceback"].startswith("SyntaxError in trainable code definition.\n")


def test_runtime_error_in_trainable_code_has_the_code_as_parent():
    @bundle(trainable=True)
    def f(x):
        return x + 1

    f.parameter._set("def f(x):\n    y = 1\n    return x / 0\n")
    with pytest.raises(ExecutionError) as info:
        f(node(1, name="x"))
    n = info.value.exception_node
    assert n.name == "exception_eval:0"
    assert [p.name for p in n.parents] == ["x:0", "__code:0"]
    assert (
        "    return x / 0 <--- (ZeroDivisionError) division by zero." in (n.info["error_comment"])
    )
    assert n.info["fun_name"] == "eval"


def test_renamed_function_in_new_code_is_a_key_error():
    @bundle(trainable=True)
    def f(x):
        return x

    f.parameter._set("def g(x):\n    return x\n")
    with pytest.raises(ExecutionError) as info:
        f(1)
    assert info.value.exception_node.data == "(KeyError) 'f'"


def test_exec_time_errors_annotate_the_code():
    @bundle(trainable=True)
    def f(x):
        return x

    f.parameter._set("import does_not_exist_anywhere\ndef f(x):\n    return x\n")
    with pytest.raises(ExecutionError) as info:
        f(1)
    comment = info.value.exception_node.info["error_comment"]
    assert "import does_not_exist_anywhere <--- (ModuleNotFoundError)" in comment


def test_comprehension_scope_in_trainable_code():
    @bundle(trainable=True)
    def f(x):
        scale = 2
        return [i * scale for i in range(x)]

    assert f(3).data == [0, 2, 4]


def test_lambda_errors_are_annotated():
    @bundle()
    def apply(x):
        fn = lambda v: v / 0
        return fn(x)

    with pytest.raises(ExecutionError) as info:
        apply(1)
    assert (
        "<--- (ZeroDivisionError) division by zero."
        in (info.value.exception_node.info["error_comment"])
    )


def test_backward_from_an_exception_node():
    p = node(0, name="p", trainable=True)

    @bundle()
    def inv(x):
        return 1 / x

    try:
        inv(p)
    except ExecutionError as e:
        n = e.exception_node
        n.backward(n.create_feedback(), propagator=GraphPropagator())
    (entries,) = p.feedback.values()
    assert entries[0].user_feedback == "(ZeroDivisionError) division by zero"


def test_trace_missing_inputs_error_fields():
    e = TraceMissingInputsError("msg")
    assert e.message == "msg" and str(e) == "msg"


def test_missing_restrictedpython_names_the_sandbox_extra(monkeypatch):
    import sys

    from opto.trace.sandbox import restricted_compile_errors
    from opto.utils.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "RestrictedPython", None)  # import raises ImportError
    with pytest.raises(MissingExtraError) as caught:
        restricted_compile_errors("x = 1\n")
    message = str(caught.value)
    assert "pip install 'opto-trace[sandbox]'" in message
    assert "uv sync --all-packages --extra sandbox" in message
    assert isinstance(caught.value, ImportError)
