"""Nodes: naming, descriptions, graph edges, untraced protocol, copies, dependencies."""

from __future__ import annotations

import copy
import gc
import pickle
import warnings

import pytest
from opto.trace import operators as ops
from opto.trace.bundle import bundle
from opto.trace.nodes import (
    GRAPH,
    IDENTITY_OPERATORS,
    NAME_SCOPES,
    ExceptionNode,
    Graph,
    MessageNode,
    Node,
    ParameterNode,
    get_op_name,
    node,
)

pytestmark = pytest.mark.usefixtures("fresh_graph")


# -- naming ---------------------------------------------------------------------------------


def test_default_names_count_per_type_and_restart_after_clear():
    assert node(1).name == "int:0"
    assert node(2).name == "int:1"
    assert node("s").name == "str:0"
    GRAPH.clear()
    assert node(3).name == "int:0"


def test_given_names_get_a_counter_and_py_name_and_id():
    x = node(1, name="x")
    y = node(2, name="x")
    assert (x.name, y.name) == ("x:0", "x:1")
    assert x.py_name == "x0"
    assert y.id == "1"


def test_names_with_colon_are_rejected_with_a_fix():
    with pytest.raises(ValueError, match="contains ':'"):
        node(1, name="a:b")


def test_register_requires_exactly_one_colon():
    n = node(1)
    n._name = "no_colon"
    with pytest.raises(ValueError, match="exactly one ':'"):
        GRAPH.register(n)
    n._name = "base:whatever"
    GRAPH.register(n)
    assert n.name == "base:0"


def test_graph_counts_len_and_legacy_only_lookups():
    GRAPH.clear()
    node(1, name="a")
    node(1, name="a")
    node(1, name="b")
    assert GRAPH.count("a") == 2
    assert len(GRAPH) == 3
    assert "'a': 2" in str(GRAPH)
    with pytest.raises(KeyError):
        GRAPH.count("zzz")
    with pytest.raises(ValueError, match="LEGACY_GRAPH_BEHAVIOR"):
        GRAPH.get("a:0")
    with pytest.raises(ValueError, match="LEGACY_GRAPH_BEHAVIOR"):
        GRAPH.roots


def test_legacy_graph_keeps_nodes_for_lookup():
    graph = Graph()
    Graph.LEGACY_GRAPH_BEHAVIOR = True
    try:
        graph.clear()
        n = Node(1, name="q")
        n._name = "q:x"
        graph.register(n)
        assert graph.get("q:0") is n
        assert n in graph.roots
    finally:
        Graph.LEGACY_GRAPH_BEHAVIOR = False


def test_name_scopes_prefix_names():
    NAME_SCOPES.append("scope")
    try:
        v = node(1, name="v")
    finally:
        NAME_SCOPES.pop()
    assert v.name == "scope/v:0"
    assert v.py_name == "scope/v0"
    assert len(NAME_SCOPES) == 0


def test_node_built_from_a_node_shares_data_and_reuses_the_base_name():
    data = [1, 2]
    a = node(data)
    b = Node(a)
    assert b is not a and b._data is data
    assert b.name == "list:1"


# -- descriptions -----------------------------------------------------------------------------


def test_description_tag_normalization():
    assert node(1, description="x")._description == "[Node] x"
    assert node(1, description="x").description == "x"
    assert node(1)._description == "[Node]"
    assert node(1).description is None
    p = node(1, trainable=True, description="x")
    assert p._description == "[ParameterNode] x"
    assert node(1, trainable=True)._description == "[ParameterNode]"
    tagged = node(1, description="[custom] text ")
    assert tagged._description == "[custom] text "
    assert tagged.description == "text"
    assert tagged.op_name == "custom"


def test_description_must_be_a_string():
    with pytest.raises(TypeError, match="description"):
        node(1, description=3)


def test_get_op_name():
    assert get_op_name("[add] This is an add operator") == "add"
    with pytest.raises(ValueError, match="brackets"):
        get_op_name("no tag")


# -- the node() factory -----------------------------------------------------------------------


def test_node_of_a_node_is_returned_unchanged_and_warns_about_a_name():
    x = node(1)
    assert node(x) is x
    with pytest.warns(UserWarning, match="is ignored because data is already a Node"):
        assert node(x, name="y") is x


def test_trainable_node_of_a_node_shares_data_and_reuses_base_name():
    data = {"k": 1}
    x = node(data)
    out = x.getattr("keys")
    p = node(out, trainable=True)
    assert isinstance(p, ParameterNode)
    assert p.name.startswith("node_getattr:")
    assert p.parents == []
    p2 = node(x, trainable=True)
    assert p2._data is data


# -- graph edges, inputs and levels --------------------------------------------------------------


def test_add_builds_edges_inputs_and_levels():
    x = node(1, name="x")
    y = node(2, name="y")
    z = x + y
    assert isinstance(z, MessageNode)
    assert z.data == 3
    assert z.parents == [x, y] and z.parents[0] is x
    assert x.children[0] is z and y.children[0] is z
    assert list(z.inputs) == ["x", "y"]
    assert z.inputs["x"] is x and z._inputs["y"] is y
    assert z.level == 1 and x.level == 0
    assert x.is_root and z.is_leaf and not x.is_leaf and not z.is_root
    assert z.name == "add:0"
    assert z._description == "[add] This is an add operator of x and y."
    assert z.op_name == "add"


def test_string_add_dispatches_to_concat_on_the_left_type():
    s = node("a")
    assert (s + "b").op_name == "concat"
    assert ("b" + s).data == "ba"
    assert ("b" + s).op_name == "concat"


def test_join_cond_and_getitem_keys():
    sep = node(",")
    joined = sep.join(["a", "b"])
    assert joined.data == "a,b"
    assert list(joined.inputs) == ["x", "y_0", "y_1"]
    c = ops.cond(node(True), node(1), node(2))
    assert c.data == 1 and list(c.inputs) == ["condition", "x", "y"]
    lst = node([10, 20])
    item = lst[1]
    assert item.data == 20 and list(item.inputs) == ["x", "index"]


def test_same_node_under_two_keys_is_one_parent():
    x = node(3)
    y = x + x
    assert y.data == 6
    assert len(y.parents) == 1
    assert list(y.inputs) == ["x", "y"]
    assert y.inputs["x"] is y.inputs["y"] is x


def test_level_is_one_more_than_the_deepest_parent():
    x = node(1)
    deep = x + 1 + 1 + 1
    mixed = deep + x
    assert deep.level == 3
    assert mixed.level == 4


def test_level_comparison_helpers_are_inverted():
    x = node(1)
    y = x + 1
    assert y.lt(x) and not x.lt(y)
    assert x.gt(y)
    assert y._itemize()[0] == -1


def test_message_node_from_list_inputs_is_keyed_by_name():
    a, b = node(1, name="a"), node(2, name="b")
    m = MessageNode(3, inputs=[a, b], description="[sum] adds")
    assert list(m.inputs) == ["a:0", "b:0"]
    assert m.description == "adds"
    with pytest.raises(TypeError, match="must be nodes"):
        MessageNode(3, inputs={"a": 1}, description="[sum] adds")


def test_message_node_description_gets_a_tag():
    m = MessageNode(1, inputs=[], description="plain")
    assert m._description == "[MessageNode] plain"


# -- untraced protocol ----------------------------------------------------------------------


def test_equality_is_by_value_hash_by_identity():
    x = node(1)
    y = node(1)
    assert x == y and x == 1 and (x != 2)
    assert hash(x) != hash(y)
    assert y in [x]
    assert y not in {x}


def test_bool_len_and_in_are_untraced():
    assert bool(node(0)) is False
    assert len(node([1, 2, 3])) == 3
    with pytest.raises(TypeError):
        len(node(1))
    lst = node([1, 2])
    assert (1 in lst) is True
    traced = lst.__contains__(1)
    assert isinstance(traced, MessageNode) and traced.data is True


def test_comparison_returns_a_node_usable_in_if():
    x = node(1)
    lt = x < 2
    assert isinstance(lt, MessageNode) and lt.data is True
    assert lt.op_name == "lt"
    assert (3 > x).data is True


def test_no_attribute_passthrough_and_no_setitem():
    x = node({"a": 1})
    with pytest.raises(AttributeError):
        x.anything
    with pytest.raises(TypeError):
        x["a"] = 2


def test_str_shows_name_type_and_data():
    assert str(node(1, name="n")) == "Node: (n:0, dtype=<class 'int'>, data=1)"
    assert str(node(1, name="p", trainable=True)).startswith("ParameterNode: (p:0")


def test_callable_node_output_has_function_and_argument_parents():
    f = node(lambda v: v + 1)
    x = node(1)
    out = f(x)
    assert out.data == 2
    assert len(out.parents) == 2
    assert out.parents[0] is f and out.parents[1] is x


# -- named methods ----------------------------------------------------------------------------


def test_named_traced_methods():
    x = node(2)
    assert x.eq(2).data is True and x.eq(2).op_name == "eq"
    assert x.neq(2).data is False
    assert node([1, 2]).len().data == 2
    assert node("abc").getattr("upper").data() == "ABC"
    assert node("a b").call("split").data == ["a", "b"]
    s = node(" Hello World ")
    assert s.lower().data == " hello world "
    assert s.upper().data == " HELLO WORLD "
    assert s.strip().data == "Hello World"
    assert s.split().data == ["Hello", "World"]
    assert s.replace("World", "You").data == " Hello You "
    assert node("ab").swapcase().data == "AB"
    assert node("ab cd").title().data == "Ab Cd"
    assert node("ab").capitalize().data == "Ab"
    assert node("{} {y}").format(1, y=2).data == "1 2"
    with pytest.raises(TypeError):  # a keyword named x collides with the operator's own x
        node("{x}").format(x=1)


def test_string_methods_require_string_data():
    with pytest.raises(AttributeError, match="no attribute 'upper'"):
        node(1).upper()
    with pytest.raises(TypeError, match="Can only join an iterable"):
        node(",").join(3)


def test_dict_methods():
    d = node({"a": 1, "b": 2})
    assert d.keys().data == ["a", "b"]
    assert d.values().data == [1, 2]
    assert d.get("a").data == 1
    assert d.get("z", 0).data == 0
    pairs = [(k.data, v.data) for k, v in d.items()]
    assert pairs == [("a", 1), ("b", 2)]
    with pytest.raises(AttributeError):
        node([1]).keys()


def test_append_and_pop_are_traced_and_do_not_mutate_b4():
    data = [1, 2]
    lst = node(data)
    item = node(3)
    appended = lst.append(item)
    assert appended.data == [1, 2, 3]  # the item's data, not the Node object
    assert data == [1, 2]
    assert appended.parents == [lst, item]
    popped = lst.pop()
    assert popped.data == 2
    assert data == [1, 2]
    assert popped.parents[0] is lst


def test_clone_and_identity_have_one_parent_and_copy_data():
    data = [1]
    x = node(data)
    c = x.clone()
    assert c.op_name == "clone" and c.parents == [x]
    assert c.data == data and c.data is not data
    i = ops.identity(x)
    assert i.parents == [x]
    assert IDENTITY_OPERATORS == ("identity", "clone")


# -- copies ---------------------------------------------------------------------------------


def test_deepcopy_and_detach_naming():
    x = node([1], name="x")
    y = copy.deepcopy(x)
    assert y.name == "x0_copy:0"
    assert y.data == [1] and y.data is not x.data
    assert copy.deepcopy(y).name == "x0_copy0_copy:0"
    z = x.detach()
    assert z.name == "x0_copy:1"
    p = node(1, name="p", trainable=True)
    pc = copy.deepcopy(p)
    assert isinstance(pc, ParameterNode) and pc.name == "p0_copy:0"
    assert pc.parameter_dependencies == {pc}


def test_deepcopy_of_message_node_registers_no_upstream_copies_b21():
    x = node(1, name="x", trainable=True)
    y = x + 1
    before = len(GRAPH)
    c = copy.deepcopy(y)
    assert len(GRAPH) == before + 1  # only the copy itself
    assert c.name == "add0_copy:0"
    assert c.parents == [] and y.parents[0] is x
    assert x.children == [y]
    assert c.inputs["x"] is x  # inputs reference, never copy, upstream nodes


def test_shallow_copy_does_not_share_edge_lists():
    x = node([1])
    y = x + [2]  # noqa: RUF005 - a traced concatenation
    c = copy.copy(y)
    assert c.parents == [] and c.data is y.data
    assert y.parents[0] is x


def test_pickle_of_a_live_node_drops_the_graph_b14():
    p = node("v", name="p", trainable=True)
    for _ in range(20):
        p + "x"
    restored = pickle.loads(pickle.dumps(p))
    assert restored.data == "v" and restored.children == []
    assert restored.name == p.name
    assert restored.parameter_dependencies == {restored}


def test_set_replaces_data_without_graph_changes():
    x = node(1)
    y = x + 1
    x._set(node(5))
    assert x.data == 5 and y.data == 2 and y.parents[0] is x


# -- detach by identity (B15) --------------------------------------------------------------------


def test_detach_removes_only_itself_among_equal_siblings_b15():
    x = node(1, trainable=True)
    a = x + 0
    b = x + 0
    assert a == b
    b._detach()
    assert x.children == [a]
    assert b.children == []


def test_detach_works_with_numpy_data_b15():
    np = pytest.importorskip("numpy")
    x = node(np.arange(3), trainable=True)
    a = x + 1
    b = x + 1
    b._detach()
    assert len(x.children) == 1 and x.children[0] is a
    assert list(a.inputs) == ["x", "y"]


def test_detach_keeps_inputs_of_children():
    x = node(1, trainable=True)
    y = x + 1
    z = y * 2
    y._detach()
    assert z.parents == [z.inputs["y"]]
    assert z.inputs["x"] is y


# -- dependencies ---------------------------------------------------------------------------------


def test_parameter_dependencies():
    x = node(2, name="x", trainable=True)
    y = node(3, name="y")
    out = x**y + x * x * x * x + 0.5
    assert out.parameter_dependencies == {x}
    assert x.parameter_dependencies == {x}
    assert y.parameter_dependencies == set()
    assert out.expandable_dependencies == set()
    assert out.hidden_dependencies == set()
    assert not y._has_dependencies() and out._has_dependencies()


def test_dependency_sets_are_shared_along_chains():
    x = node(1, trainable=True)
    a = x + 1
    b = a * 2
    assert a._dependencies is b._dependencies is x._dependencies
    returned = b.parameter_dependencies
    returned.add(node(0))  # the public sets are copies
    assert b.parameter_dependencies == {x}


def test_long_chain_over_many_parameters_has_correct_dependencies():
    params = [node(i, trainable=True) for i in range(3000)]
    total = params[0]
    for p in params[1:]:
        total = total + p
    assert total.parameter_dependencies == set(params)
    assert total.parents[0].parameter_dependencies == set(params[:-1])


def test_dependencies_setter_and_materialized_dict_shape():
    x = node(1, trainable=True)
    assert x._dependencies == {"parameter": {x}, "expandable": set()}
    n = node(1)
    assert n._dependencies == {"parameter": set(), "expandable": set()}
    n._dependencies = {"parameter": {x}, "expandable": set()}
    assert n.parameter_dependencies == {x}


def test_hidden_dependencies_of_traceable_code():
    hidden = node(5, name="hidden", trainable=True)

    @bundle(traceable_code=True)
    def inner(v):
        return v * 2 + hidden

    @bundle(traceable_code=True)
    def outer(v):
        return inner(v) + 1

    x = node(1, name="x", trainable=True)
    out = inner(x)
    assert out.data == 7
    assert out.parameter_dependencies == {x}
    assert out.hidden_dependencies == {hidden}
    assert out.expandable_dependencies == {out}
    nested = outer(x)
    assert nested.data == 8
    assert nested.hidden_dependencies == {hidden}
    assert nested.expandable_dependencies == {nested}


# -- feedback -------------------------------------------------------------------------------------


def test_feedback_storage_and_message_node_single_entry():
    x = node(1, trainable=True)
    y = x + 1
    x._add_feedback(y, "a")
    x._add_feedback(y, "b")
    assert x.feedback[y] == ["a", "b"]
    x.zero_feedback()
    assert dict(x.feedback) == {}
    z = y + 1
    y._add_feedback(z, "once")
    with pytest.raises(ValueError, match="one feedback per child"):
        y._add_feedback(z, "twice")


def test_add_parent_validates():
    x = node(1)
    with pytest.raises(ValueError):
        x._add_parent(x)
    with pytest.raises(TypeError):
        x._add_parent(3)
    y = node(2)
    y._add_parent(x)
    assert y.parents == [x] and x.children == [y] and y.level == 1


# -- exceptions -----------------------------------------------------------------------------------


def test_exception_node_data_and_feedback():
    e = ExceptionNode(ZeroDivisionError("division by zero"), inputs=[])
    assert e.data == "(ZeroDivisionError) division by zero"
    assert e.name == "str:0"
    assert e._description == "[ExceptionNode]"
    assert e.create_feedback() == e.data
    assert e.create_feedback("full") == e.data
    e._info = {"error_comment": "annotated"}
    assert e.create_feedback("full") == "annotated"
    with pytest.raises(ValueError):
        e.create_feedback("other")
    from opto.trace.errors import TraceMissingInputsError

    qualified = ExceptionNode(TraceMissingInputsError("m"), inputs=[])
    assert qualified.data == "(opto.trace.errors.TraceMissingInputsError) m"


# -- misc --------------------------------------------------------------------------------------------


def test_type_info_and_nodes_are_weakly_referenceable():
    import weakref

    x = node(1.5)
    assert x.type is float and x.info is None
    ref = weakref.ref(x)
    del x
    gc.collect()
    assert ref() is None


def test_visualization_style_guides_are_reexported():
    from opto.trace.nodes import NodeVizStyleGuide, NodeVizStyleGuideColorful

    assert NodeVizStyleGuide.__name__ == "NodeVizStyleGuide"
    assert NodeVizStyleGuideColorful.__name__ == "NodeVizStyleGuideColorful"
    import opto.trace.nodes as nodes_module

    with pytest.raises(AttributeError):
        nodes_module.DoesNotExist


def test_no_warnings_on_plain_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = node(1)
        (x + 1) * 2


def test_name_scope_context_manager_is_context_local():
    import threading

    from opto.trace._state import name_scope

    seen = {}

    def other():
        seen["other"] = node(1, name="t").name

    with name_scope("outer"):
        with name_scope("inner"):
            inner = node(1, name="v")
        outer = node(1, name="v")
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert inner.name == "inner/v:0"
    assert outer.name == "outer/v:0"
    assert seen["other"] == "t:0"
    assert list(NAME_SCOPES) == []
    with pytest.raises(ValueError):
        NAME_SCOPES.append("a:b")
