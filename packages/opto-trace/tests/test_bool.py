"""Python's `and`/`or`/`not` with nodes: untraced, decided by the truth of the data."""

from __future__ import annotations

import itertools

import pytest
from opto.trace.nodes import Node, node

VALUES = [True, False]
KINDS = ["node", "raw"]


def make(value: bool, kind: str):
    return node(value) if kind == "node" else value


@pytest.mark.parametrize(
    ("a_value", "a_kind", "b_value", "b_kind"),
    list(itertools.product(VALUES, KINDS, VALUES, KINDS)),
)
def test_and_or_return_the_python_operand(a_value, a_kind, b_value, b_kind):
    a = make(a_value, a_kind)
    b = make(b_value, b_kind)
    and_result = a and b
    or_result = a or b
    assert and_result is (b if a_value else a)
    assert or_result is (a if a_value else b)
    assert bool(and_result) is (a_value and b_value)
    assert bool(or_result) is (a_value or b_value)
    assert isinstance(and_result, Node) is ((b_kind if a_value else a_kind) == "node")


def test_not_is_a_plain_bool():
    assert (not node(0)) is True
    assert (not node([1])) is False


def test_comparison_nodes_drive_if_statements():
    x = node(3)
    taken = "yes" if x > 2 else "no"
    assert taken == "yes"
