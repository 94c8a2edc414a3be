"""Source extraction of bundled functions: decorator stripping and exact line numbers."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from opto import trace
from opto.trace import bundle
from opto.trace._sources import DECORATOR as _DECORATOR
from opto.trace._sources import signature_hint as _signature_hint

LINES = Path(__file__).read_text().splitlines()


def line_of(text: str) -> int:
    """1-based line number of the first line of this file equal to ``text`` (stripped)."""
    return next(i for i, line in enumerate(LINES, 1) if line.strip() == text)


def passthrough(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


@trace.bundle()
def continued(x):
    return x


@bundle()
def plain(x):
    """Doc."""
    return x


@passthrough
@bundle(
    "[multi_line] A description (with parentheses)",
)
@passthrough
def between(x):  # decorators below bundle are kept
    return x


@bundle()  # a comment on the decorator line
# a comment between decorator and def
def commented(x):
    return x


def test_continued_decorator_line():
    info = continued.info
    assert info["source"] == "def continued(x):\n    return x\n"
    assert info["line_number"] == line_of("def continued(x):")
    assert info["file"] == __file__


def test_plain_decorator():
    assert plain.info["source"] == 'def plain(x):\n    """Doc."""\n    return x\n'
    assert plain.info["line_number"] == line_of("def plain(x):")


def test_bundle_between_other_decorators_keeps_the_lower_ones():
    fm = between.__wrapped__  # the outer decorator wraps the bundle
    source = fm.info["source"]
    assert source.startswith("@passthrough\ndef between(x):")
    assert "multi_line" not in source
    assert (
        fm.info["line_number"] == line_of("def between(x):  # decorators below bundle are kept") - 1
    )
    assert fm.name == "multi_line"
    assert between(3).data == 3


def test_comments_around_decorators():
    assert commented.info["source"].startswith("# a comment between decorator and def\n")
    assert commented.info["line_number"] == line_of("# a comment between decorator and def")


def test_inline_usage_keeps_the_whole_source():
    def inline(x):
        return x

    fm = bundle()(inline)
    assert fm.info["source"] == "def inline(x):\n    return x\n"
    assert fm.info["line_number"] == line_of("def inline(x):")


def test_methods_are_dedented():
    class A:
        @bundle()
        def method(self, x):
            return x

    assert A.method.info["source"] == "def method(self, x):\n    return x\n"


@pytest.mark.parametrize(
    ("line", "matches"),
    [
        ("@bundle()", True),
        ("    @bundle(trainable=True)", True),
        ("@trace.bundle()", True),
        ("@opto.trace.bundle(", True),
        ("@bundle\\", True),
        ("@trace.bundle\\", True),
        ("@ bundle()", True),
        ("@bundled()", False),
        ("@mybundle()", False),
        ("@bundle", False),
        ("# @bundle()", False),
        ("x = bundle()", False),
    ],
)
def test_decorator_detection_patterns(line, matches):
    assert bool(_DECORATOR.match(line)) is matches


def test_signature_hint():
    assert _signature_hint('def f(x):\n    """Doc."""\n    return x\n') == (
        'def f(x):\n    """Doc."""'
    )
    assert _signature_hint("def f(x):\n    return x\n") == "def f(x):"
    assert _signature_hint("def f(\n    x,\n):\n    return x\n") == "def f(\n    x,\n):"
    body_strings = 'def f(x):\n    """Doc."""\n    y = """other"""\n    return y\n'
    assert _signature_hint(body_strings) == 'def f(x):\n    """Doc."""'
    assert _signature_hint("def f(x): return x\n") == "def f(x): return x"
