"""recursive_conversion and apply_op over nested containers of nodes."""

from __future__ import annotations

import pytest
from opto.trace import operators as ops
from opto.trace.broadcast import apply_op, recursive_conversion
from opto.trace.bundle import detach_inputs, wrap_node
from opto.trace.containers import NodeContainer
from opto.trace.nodes import Node, node


class Pair(NodeContainer):
    def __init__(self, x, v):
        self.x = x
        self.v = v


def test_recursive_conversion_rebuilds_containers():
    convert = recursive_conversion(lambda n: ("node", n.data), lambda x: ("raw", x))
    x = node(1)
    result = convert({"a": [x, 2], "b": (x,), "c": {3}})
    assert result == {"a": [("node", 1), ("raw", 2)], "b": (("node", 1),), "c": {("raw", 3)}}


def test_node_containers_are_shallow_copied_with_converted_attributes():
    convert = recursive_conversion(lambda n: n.data, lambda x: x)
    pair = Pair(node(1), 2)
    copy = convert(pair)
    assert copy is not pair and isinstance(copy, Pair)
    assert copy.x == 1 and isinstance(pair.x, Node)


def test_wrap_node_and_detach_inputs():
    wrapped = wrap_node([1, node(2)])
    assert all(isinstance(w, Node) for w in wrapped)
    x = node(3, name="x")
    (copied,) = detach_inputs([x])
    assert copied is not x and copied.name.startswith(x.py_name + "_copy:")


def test_apply_op_on_nodes_calls_the_operator():
    out = apply_op(ops.add, None, node(1), node(2))
    assert out.data == 3


def test_apply_op_over_lists_tuples_and_dicts_broadcasts_nodes():
    out = apply_op(ops.add, [None, None], [node(1), node(2)], node(10))
    assert [o.data for o in out] == [11, 12]
    tup = apply_op(ops.add, (None, None), (node(1), node(2)), (node(3), node(4)))
    assert isinstance(tup, tuple) and [o.data for o in tup] == [4, 6]
    d = {"a": None}
    result = apply_op(ops.multiply, d, {"a": node(2)}, node(5))
    assert result is d and d["a"].data == 10


def test_apply_op_over_node_containers_fills_in_place():
    foo = Pair(node(1), 7)
    bar = Pair(node(2), 8)
    foobar = Pair(None, 9)
    result = apply_op(ops.add, foobar, foo, bar)
    assert result is foobar
    assert foobar.x.data == 3
    assert foobar.v == 9  # non-node fields are left alone


def test_apply_op_nested_and_list_building_ops():
    out = apply_op(ops.make_list, [None], [node(1)], [node(2)])
    assert out[0].data == [1, 2]
    nested = apply_op(ops.add, {"k": [None]}, {"k": [node(1)]}, node(1))
    assert nested["k"][0].data == 2


def test_apply_op_rejects_mismatched_inputs():
    with pytest.raises(TypeError, match="type of output"):
        apply_op(ops.add, [None], (node(1),), node(1))
    with pytest.raises(ValueError, match="length"):
        apply_op(ops.add, [None, None], [node(1)], node(1))
