"""Operators: results match plain Python both ways, names, keys, descriptions, B1/B4 fixes."""

from __future__ import annotations

import inspect
import math
import operator
import pickle
from types import SimpleNamespace

import pytest
from opto.trace import operators as ops
from opto.trace import primitives
from opto.trace.bundle import FunModule
from opto.trace.errors import ExecutionError
from opto.trace.nodes import MessageNode, Node, node

BINARY = [
    (operator.add, "add"),
    (operator.sub, "subtract"),
    (operator.mul, "multiply"),
    (operator.truediv, "divide"),
    (operator.floordiv, "floor_divide"),
    (operator.mod, "mod"),
    (operator.pow, "power"),
    (operator.lshift, "lshift"),
    (operator.rshift, "rshift"),
    (operator.and_, "and_"),
    (operator.or_, "or_"),
    (operator.xor, "xor"),
]


@pytest.mark.parametrize(("op", "name"), BINARY)
def test_binary_operators_both_ways_match_python(op, name):
    x = node(7)
    forward = op(x, 2)
    reflected = op(2, x)
    assert isinstance(forward, MessageNode) and isinstance(reflected, MessageNode)
    assert forward.data == op(7, 2)
    assert reflected.data == op(2, 7)
    assert forward.op_name == name == reflected.op_name
    assert forward.parents[0] is x
    assert reflected.parents[1] is x  # operand order is kept
    assert list(forward.inputs) == ["x", "y"]


@pytest.mark.usefixtures("fresh_graph")
def test_reflected_operands_are_named_by_type():
    a = node(5, name="a")
    out = 3 - a
    assert [p.name for p in out.parents] == ["int:0", "a:0"]


@pytest.mark.usefixtures("fresh_graph")
def test_direct_operator_calls_name_constants_after_parameters():
    out = ops.add(1, 2)
    assert out.data == 3
    assert [p.name for p in out.parents] == ["x:0", "y:0"]
    assert out.name == "add:0"


def test_divmod_both_ways():
    x = node(7)
    assert divmod(x, 2).data == (3, 1)
    assert divmod(9, x).data == (1, 2)
    assert divmod(x, 2).op_name == "node_divmod"


def test_unary_operators():
    x = node(-2.5)
    assert (-x).data == 2.5
    assert (+x).data == -2.5
    assert (~node(5)).data == ~5
    assert math.floor(x).data == -3
    assert math.ceil(x).data == -2
    assert math.trunc(x).data == -2


def test_abs_and_round_work_b1():
    x = node(-2.567)
    assert abs(x).data == 2.567
    assert abs(x).op_name == "abs"
    assert round(x, 1).data == -2.6
    assert round(x).data == -3
    assert list(round(x, 2).inputs) == ["x", "n"]


def test_comparisons():
    x = node(3)
    assert (x < 4).data is True
    assert (x <= 3).data is True
    assert (x > 4).data is False
    assert (x >= 4).data is False
    assert ops.eq(x, 3).data is True
    assert ops.neq(x, 3).data is False
    assert ops.ne(x, 2).data is True


def test_logic_operators():
    assert ops.not_(node(0)).data is True
    marker = object()
    assert ops.is_(node(marker), node(marker)).data is True
    assert ops.is_not(node(1), node(None)).data is True
    assert ops.in_(node(1), node([1, 2])).data is True
    assert ops.not_in(node(3), node([1, 2])).data is True
    c = ops.cond(node(False), node("a"), node("b"))
    assert c.data == "b" and len(c.parents) == 3


def test_string_operators():
    assert ops.ord_(node("a")).data == 97
    assert ops.chr_(node(97)).data == "a"
    assert ops.concat(node("a"), node("b")).data == "ab"
    assert ops.split(node("a,b,c"), node(","), maxsplit=node(1)).data == ["a", "b,c"]
    assert ops.strip(node("xax"), node("x")).data == "a"
    assert ops.replace(node("aaa"), node("a"), node("b"), node(2)).data == "bba"
    assert ops.format(node("{}-{k}"), 1, k=2).data == "1-2"
    assert ops.join(node("-"), node("a"), node("b")).data == "a-b"


def test_getitem_pop_and_len():
    lst = node([1, 2, 3])
    assert lst[0].data == 1
    assert ops.len_(lst).data == 3
    popped = ops.pop(lst, node(0))
    assert popped.data == 1
    assert lst.data == [1, 2, 3]  # not mutated (B4)


def test_construction_operators():
    assert ops.to_list(node((1, 2))).data == [1, 2]
    assert ops.to_tuple(node([1, 2])).data == (1, 2)
    assert ops.to_set(node([1, 1])).data == {1}
    assert ops.to_dict(node([("a", 1)])).data == {"a": 1}
    made = ops.make_list(node(1), 2)
    assert made.data == [1, 2] and list(made.inputs) == ["args_0", "args_1"]
    assert ops.make_tuple(1, 2).data == (1, 2)
    assert ops.make_set(1, 1).data == {1}
    md = ops.make_dict(a=1, b=node(2))
    assert md.data == {"a": 1, "b": 2} and list(md.inputs) == ["a", "b"]


def test_container_operators_copy_then_mutate():
    d = {"a": 1}
    dn = node(d)
    assert ops.dict_update(dn, node({"b": 2})).data == {"a": 1, "b": 2}
    assert ops.dict_pop(dn, node("a")).data == {}
    assert ops.dict_popitem(dn).data == {}
    assert ops.get(dn, node("a")).data == 1
    assert d == {"a": 1}
    data = [3, 1, 2]
    ln = node(data)
    assert ops.list_append(ln, node(4)).data == [3, 1, 2, 4]
    assert ops.list_clear(ln).data == []
    assert ops.list_extend(ln, node([5])).data == [3, 1, 2, 5]
    assert ops.list_insert(ln, node(0), node(9)).data == [9, 3, 1, 2]
    assert ops.list_pop(ln, node(0)).data == [1, 2]
    assert ops.list_remove(ln, node(1)).data == [3, 2]
    assert ops.list_reverse(ln).data == [2, 1, 3]
    assert ops.list_sort(ln).data == [1, 2, 3]
    assert ops.list_sort(ln, reverse=True).data == [3, 2, 1]
    assert data == [3, 1, 2]
    s = {1, 2}
    sn = node(s)
    assert ops.set_add(sn, node(3)).data == {1, 2, 3}
    assert ops.set_clear(sn).data == set()
    assert ops.set_discard(sn, node(1)).data == {2}
    assert ops.set_intersection_update(sn, node({2, 5})).data == {2}
    assert len(ops.set_pop(sn).data) == 1
    assert ops.set_remove(sn, node(2)).data == {1}
    assert ops.set_symmetric_difference_update(sn, node({2, 3})).data == {1, 3}
    assert ops.set_update(sn, node({7})).data == {1, 2, 7}
    assert s == {1, 2}


@pytest.mark.parametrize("name", [f.__name__ for f in primitives.FUNCTIONS])
def test_every_primitive_is_a_named_documented_picklable_function(name):
    fun = getattr(primitives, name)
    assert fun.__name__ == fun.__qualname__ == name
    assert fun.__module__ == "opto.trace.primitives"
    assert getattr(ops, name).description == f"[{name}] {inspect.cleandoc(fun.__doc__)}"
    assert pickle.loads(pickle.dumps(fun)) is fun
    assert pickle.loads(pickle.dumps(getattr(ops, name)))._fun is fun
    params = [
        p for p in inspect.signature(fun).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    assert primitives.OPERATORS[name]._keys == tuple(p.name for p in params)


def test_copy_then_mutate_primitives_bind_like_their_signature():
    assert (
        str(inspect.signature(primitives.list_insert))
        == "(x: 'Any', index: 'Any', y: 'Any') -> 'Any'"
    )
    assert primitives.list_insert(y=9, index=0, x=[1]) == [9, 1]
    assert primitives.dict_popitem(x={"a": 1}) == {}
    out = ops.list_insert(node([1]), index=0, y=9)
    assert out.data == [9, 1] and list(out.inputs) == ["x", "index", "y"]
    with pytest.raises(TypeError, match="'index'"):
        primitives.list_insert([1])
    with pytest.raises(TypeError):
        primitives.set_add({1}, 2, 3)
    with pytest.raises(TypeError, match="'y'"):
        ops.list_append(node([1]))


def test_keys_and_values_of_non_dicts_raise_execution_error():
    with pytest.raises(ExecutionError) as info:
        ops.values(node([1]))
    assert "AttributeError" in info.value.exception_node.data


def test_node_getattr_and_call():
    obj = SimpleNamespace(v=3, double=lambda a: a * 2)
    o = node(obj)
    got = ops.node_getattr(o, node("v"))
    assert got.data == 3 and list(got.inputs) == ["obj", "attr"]
    called = o.getattr("double")(node(4))
    assert called.data == 8
    assert called.parents[0].op_name == "node_getattr"
    with pytest.raises(ExecutionError, match="not callable"):
        ops.call(node(3))


def test_call_passes_nodes_to_bundles_so_edges_survive():
    @ops.bundle()
    def inc(v):
        return v + 1

    f = node(inc)
    x = node(1)
    out = f(x)
    assert out.data == 2
    assert out.parents == [f, x]


def test_operator_descriptions_are_docstrings():
    out = node(1) * 2
    assert out._description == "[multiply] This is a multiply operator of x and y."
    assert out.description == "This is a multiply operator of x and y."
    assert isinstance(ops.add, FunModule)
    assert ops.add.name == "add"
    assert not ops.add.trainable


def test_identity_is_clone():
    x = node([1])
    assert ops.identity(x).op_name == "clone"


class FakeLLM:
    def __init__(self):
        self.calls = []

    def __call__(self, messages, **kwargs):
        self.calls.append((messages, kwargs))
        content = f"echo {messages[-1]['content']}"
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=content))])


def test_call_llm_with_any_callable_llm():
    llm = FakeLLM()
    prompt = node("hi", trainable=True)
    out = ops.call_llm(llm, "sys", prompt, "again", temperature=0)
    assert out.data == "echo again"
    messages, kwargs = llm.calls[0]
    assert messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "again"},
    ]
    assert kwargs == {"temperature": 0}
    assert prompt in out.parameter_dependencies
    ops.call_llm(llm, None, "only user")
    assert llm.calls[1][0] == [{"role": "user", "content": "only user"}]


def test_call_llm_errors_propagate_raw():
    def broken(messages, **kwargs):
        raise RuntimeError("provider down")

    with pytest.raises(RuntimeError, match="provider down"):
        ops.call_llm(broken, "s", "u")


def test_operators_on_raw_values_return_nodes():
    out = ops.add(node(1), 2)
    assert isinstance(out, Node) and out.data == 3


def test_call_llm_without_an_llm_uses_the_default_llm(monkeypatch):
    """trace-opt's form `call_llm(system_prompt, *user_prompts)` asks `LLM()`."""
    llm = FakeLLM()
    monkeypatch.setattr(ops, "_default_llm", lambda: llm)
    prompt = node("hi", trainable=True)
    out = ops.call_llm("sys", prompt, "again", max_tokens=5)
    assert out.data == "echo again"
    assert llm.calls[0] == (
        [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "hi"},
            {"role": "user", "content": "again"},
        ],
        {"max_tokens": 5},
    )
    assert prompt in out.parameter_dependencies
    assert out.inputs["system_prompt"].data == "sys"  # inputs named after what they are
    assert out.inputs["user_prompts_0"] is prompt
    ops.call_llm(None, "only user")
    assert llm.calls[1][0] == [{"role": "user", "content": "only user"}]


def test_call_llm_default_form_needs_a_configured_llm(monkeypatch):
    from opto.utils.llm import factory
    from opto.utils.llm.errors import LLMConfigurationError

    for name in ("OPTO_LLM_MODEL", "TRACE_LITELLM_MODEL", "TRACE_DEFAULT_LLM_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(factory, "env_model", lambda: None)
    monkeypatch.setattr(factory, "provider_default_model", lambda: None)
    monkeypatch.setattr(factory, "local_model_available", lambda: False)
    with pytest.raises(LLMConfigurationError, match="No LLM is configured"):
        ops.call_llm("sys", "user")
