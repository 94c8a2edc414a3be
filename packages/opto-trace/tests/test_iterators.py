"""Iterating nodes: element nodes are traced getitems of the container."""

from __future__ import annotations

import pytest
from opto.trace import operators as ops
from opto.trace.errors import ExecutionError
from opto.trace.iterators import DictIterable, SeqIterable, iterate
from opto.trace.nodes import MessageNode, node

pytestmark = pytest.mark.usefixtures("fresh_graph")


def test_iterating_a_list_yields_getitem_nodes_with_the_list_as_parent():
    lst = node([1, 2, 3])
    items = list(lst)
    assert [i.data for i in items] == [1, 2, 3]
    for item in items:
        assert isinstance(item, MessageNode)
        assert item.op_name == "getitem"
        assert item.parents[0] is lst
        assert list(item.inputs) == ["x", "index"]


def test_tuples_strings_and_sets():
    assert [i.data for i in node((1, 2))] == [1, 2]
    assert [c.data for c in node("ab")] == ["a", "b"]
    members = list(node({5}))
    assert [m.data for m in members] == [5]
    assert members[0].parents[0].op_name == "to_list"


def test_unpacking_a_tuple_output():
    a, b = node((1, 2))
    assert (a.data, b.data) == (1, 2)


def test_iterating_a_dict_yields_key_nodes():
    d = node({"a": 1, "b": 2})
    keys = list(d)
    assert [k.data for k in keys] == ["a", "b"]
    assert keys[0].parents[0].op_name == "keys"
    assert keys[0].parents[0].parents[0] is d


def test_items_key_and_value_parent_chains():
    d = node({"a": 1, "b": 2})
    pairs = list(d.items())
    assert [(k.data, v.data) for k, v in pairs] == [("a", 1), ("b", 2)]
    key, value = pairs[0]
    keys_node = key.parents[0]
    assert keys_node.op_name == "keys" and keys_node.parents[0] is d
    assert value.parents == [d, key]


def test_iterables_are_restartable():
    it = SeqIterable(node([1, 2]))
    assert [x.data for x in it] == [1, 2]
    assert [x.data for x in it] == [1, 2]
    d = DictIterable(node({"k": "v"}))
    assert [(k.data, v.data) for k, v in d] == [("k", "v")]
    assert [(k.data, v.data) for k, v in d] == [("k", "v")]


def test_iterate_wraps_raw_values():
    assert [x.data for x in iterate([7])] == [7]


def test_non_iterables_raise_execution_error():
    with pytest.raises(ExecutionError) as info:
        iter(node(5))
    n = info.value.exception_node
    assert n.data == "(TypeError) TypeError: Cannot unpack non-iterable <class 'int'> object"
    assert n.info["traceback"] == "TypeError: Cannot unpack non-iterable <class 'int'> object"
    assert n.name.startswith("str:")


def test_numpy_arrays_iterate_when_numpy_is_loaded():
    np = pytest.importorskip("numpy")
    arr = node(np.array([1, 2]))
    assert [int(x.data) for x in arr] == [1, 2]


def test_basic_container_operators_keep_parents():
    lst = node([1])
    extended = ops.list_extend(lst, node([2, 3]))
    assert extended.data == [1, 2, 3] and extended.parents[0] is lst
    updated = ops.dict_update(node({"a": 1}), node({"b": 2}))
    assert updated.data == {"a": 1, "b": 2}
    assert [v.data for v in ops.values(updated)] == [1, 2]
