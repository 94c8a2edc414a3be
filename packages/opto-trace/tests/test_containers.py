"""Seq and Map: list/dict behaviour, parameter discovery, stable keys, _set."""

import pickle

import pytest
from opto.trace.bundle import bundle
from opto.trace.containers import Map, ParameterContainer, Seq, StateDictError
from opto.trace.modules import Module
from opto.trace.nodes import ParameterNode, node


def test_seq_behaves_like_a_list():
    assert Seq(1, 2, 3) == [1, 2, 3]
    assert Seq([1, 2, 3]) == [1, 2, 3]
    assert Seq((4, 5)) == Seq(4, 5)
    assert Seq() == []
    seq = Seq(1, 2)
    seq.append(3)
    assert seq[1:] == [2, 3] and isinstance(seq[1:], Seq)
    assert pickle.loads(pickle.dumps(seq)) == seq
    assert isinstance(pickle.loads(pickle.dumps(seq)), Seq)


def test_map_behaves_like_a_dict():
    mapping = Map({"a": 1, "b": 2})
    assert mapping == {"a": 1, "b": 2}
    assert Map(a=1) == {"a": 1}
    restored = pickle.loads(pickle.dumps(mapping))
    assert restored == mapping and isinstance(restored, Map)
    with pytest.raises(TypeError):
        hash(mapping)


def test_seq_and_map_of_nodes_pickle_with_their_values():
    seq = Seq(node(1, trainable=True), node("x"))
    restored = pickle.loads(pickle.dumps(seq))
    assert [n.data for n in restored] == [1, "x"]
    assert isinstance(restored[0], ParameterNode)


def test_seq_counts_only_parameters():
    p1, p2 = node(1, trainable=True), node(2, trainable=True)
    seq = Seq(p1, node(3), 4, p2)
    assert seq.parameters() == [p1, p2]
    assert seq.parameters_dict() == {p1.name: p1, p2.name: p2}


def test_map_counts_values_and_parameter_keys():
    key = node("k", trainable=True)
    value = node("v", trainable=True)
    other = node(5, trainable=True)
    mapping = Map({key: value, "plain": node(1), "other": other})
    params = mapping.parameters()
    assert len(params) == 3
    assert {id(p) for p in params} == {id(key), id(value), id(other)}
    assert mapping.parameters_dict()["other"] is other
    assert mapping.parameters_dict()[key.name] is key


def test_nested_map_and_seq_counts():
    inner = Seq(node(1, trainable=True), node(2, trainable=True))
    mapping = Map({"a": node(0, trainable=True), "inner": inner, "deeper": Map({"x": inner})})
    assert len(mapping.parameters()) == 3  # the shared inner Seq is counted once
    seq = Seq(mapping, Seq(node(9, trainable=True)))
    assert len(seq.parameters()) == 4


def test_nested_container_keys_are_stable():
    def build():
        return Seq(Seq(node(1, trainable=True)), Map({"a": node(2, trainable=True)}))

    first, second = build(), build()
    assert list(first.parameters_dict()) == ["0", "1"] == list(second.parameters_dict())
    assert first.state_dict() == {"0.0": 1, "1.a": 2} == second.state_dict()
    assert all("0x" not in key for key in first.parameters_dict())


def test_map_with_a_container_key_raises():
    class Box(ParameterContainer):
        pass

    with pytest.raises(ValueError, match="Map key cannot be a ParameterContainer"):
        Map({Box(): 1}).parameters()


def test_trainable_bundle_in_a_seq_contributes_its_code():
    @bundle(trainable=True)
    def f(x):
        return x

    seq = Seq(f, node(1, trainable=True))
    params = seq.parameters()
    assert len(params) == 2 and params[0] is f.parameter
    assert seq.state_dict()["0.parameter"] == f.parameter.data


def test_seq_set_copies_values_into_own_nodes():
    seq = Seq(node(1, trainable=True), Map({"a": node(2, trainable=True)}), "plain")
    first, nested = seq[0], seq[1]["a"]
    seq._set([10, {"a": 20}, "ignored"])
    assert seq[0] is first and first.data == 10
    assert nested.data == 20 and seq[2] == "plain"
    with pytest.raises(StateDictError, match="length"):
        seq._set([1])


def test_map_set_and_missing_key():
    mapping = Map({"a": node(1, trainable=True), "b": 3})
    mapping._set(Map({"a": node(5), "b": 4}))
    assert mapping["a"].data == 5 and mapping["b"] == 3
    with pytest.raises(StateDictError, match="missing"):
        mapping._set({"b": 1})


def test_module_set_through_nested_seq_and_map():
    class Agent(Module):
        def __init__(self, a, b):
            self.layers = Seq(node(a, trainable=True))
            self.table = Map({"k": node(b, trainable=True)})

    agent, other = Agent(1, 2), Agent(3, 4)
    agent._set(other)
    assert agent.layers[0].data == 3 and agent.table["k"].data == 4
    assert agent.layers[0] is not other.layers[0]


def test_ambiguous_state_paths_are_reported():
    mapping = Map({1: node("a", trainable=True), "1": node("b", trainable=True)})
    assert len(mapping.parameters()) == 2
    with pytest.raises(StateDictError, match=r"paths \['1'\] are ambiguous"):
        mapping.state_dict()


def test_parameter_keyed_map_state():
    key = node("k", trainable=True)
    mapping = Map({"x": 1, key: node("v", trainable=True)})
    assert mapping.state_dict() == {"key[1]": "k", "value[1]": "v"}
    key._set("changed")
    assert list(mapping.state_dict()) == ["key[1]", "value[1]"]


def test_module_set_adds_new_parameters_but_never_shadows_attributes():
    class Agent(Module):
        def __init__(self):
            self.p = node(1, trainable=True)
            self.note = "plain"

    agent = Agent()
    extra = node(5, trainable=True)
    agent._set({"p": 2, "extra": extra})
    assert agent.p.data == 2 and agent.extra is extra
    assert len(agent.parameters()) == 2
    with pytest.raises(StateDictError, match="already has a plain attribute"):
        agent._set({"p": 3, "extra": 6, "note": node(0, trainable=True)})
    with pytest.raises(StateDictError, match=r"keys \['p'\] are missing"):
        agent._set({"extra": 1})
    with pytest.raises(TypeError, match="expects a mapping"):
        agent._set([1])


def test_parameters_from_many_threads_agree():
    from concurrent.futures import ThreadPoolExecutor

    class Agent(Module):
        def __init__(self):
            self.p = node(1, trainable=True)

        @bundle(trainable=True)
        def act(self, x):
            return x

    agent = Agent()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: [id(p) for p in agent.parameters()], range(32)))
    assert all(result == results[0] for result in results)
    assert len(results[0]) == 2
