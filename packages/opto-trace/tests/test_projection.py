"""Projections: exact outputs of the shipped code projections."""

from __future__ import annotations

import sys

import pytest
from opto.trace.nodes import ParameterNode
from opto.trace.projections import BlackCodeFormatter, DocstringProjection, Projection


def test_black_code_formatter_exact_output():
    pytest.importorskip("black")
    code = "def example_function( a,b ):\n  x=a+b\n  return   x\n"
    formatted = BlackCodeFormatter()(code)
    assert formatted == "def example_function(a, b):\n    x = a + b\n    return x\n"
    assert BlackCodeFormatter().project(formatted) == formatted, "idempotent"


def test_black_code_formatter_leaves_non_code_and_bad_code_alone(caplog):
    pytest.importorskip("black")
    formatter = BlackCodeFormatter()
    assert formatter.project("just text") == "just text"
    assert formatter.project(42) == 42
    broken = "def f(:\n  return"
    assert formatter.project(broken) == broken
    assert "cannot parse" in caplog.text


def test_black_code_formatter_without_black_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "black", None)
    with pytest.raises(ImportError, match=r"opto-trace\[black\]"):
        BlackCodeFormatter().project("def f(): pass")


def test_docstring_projection_exact_output():
    code = (
        "def example_function():\n"
        '    """This is an example function."""\n'
        '    print("Hello, World!")\n'
    )
    projection = DocstringProjection("This is a new docstring.")
    assert projection.project(code) == (
        'def example_function():\n    """This is a new docstring."""\n    print("Hello, World!")\n'
    )
    assert projection.project(projection.project(code)) == projection.project(code)


def test_docstring_projection_only_touches_the_first_docstring():
    code = 'def f():\n    """old"""\n    return """keep"""\n'
    assert DocstringProjection("new")(code) == 'def f():\n    """new"""\n    return """keep"""\n'


def test_docstring_projection_keeps_values_without_a_complete_docstring():
    projection = DocstringProjection("doc")
    assert projection.project("def f():\n    return 1\n") == "def f():\n    return 1\n"
    unterminated = 'def f():\n    """never closed\n    return 1\n'
    assert projection.project(unterminated) == unterminated
    assert projection.project(7) == 7


def test_projection_is_abstract_and_callable():
    with pytest.raises(TypeError):
        Projection()

    class Upper(Projection):
        def project(self, x):
            return x.upper()

    assert Upper()("abc") == "ABC"
    param = ParameterNode("abc", projections=[Upper()])
    assert [type(p) for p in param.projections] == [Upper]
