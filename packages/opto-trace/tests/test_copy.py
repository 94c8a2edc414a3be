"""Copy semantics: node deep copies, Module.copy() sharing parameters, deepcopy of modules."""

import copy
import functools

import pytest
from opto.trace.bundle import bundle
from opto.trace.containers import Map, Seq
from opto.trace.modules import Module, model
from opto.trace.nodes import ParameterNode, node


def test_deepcopy_of_nodes_uses_copy_names():
    x = node(1, name="x")
    p = node([1, 2], name="p", trainable=True)
    x_copy = copy.deepcopy(x)
    p_copy = copy.deepcopy(p)
    assert x_copy.name.startswith(x.py_name + "_copy:")
    assert copy.deepcopy(x_copy).name.startswith(x_copy.py_name + "_copy:")
    assert isinstance(p_copy, ParameterNode) and p_copy.data == [1, 2]
    assert p_copy.data is not p.data


def test_deepcopy_of_a_code_parameter():
    @bundle(trainable=True)
    def fun(x):
        return x

    code_copy = copy.deepcopy(fun.parameter)
    assert code_copy.name.startswith(fun.parameter.py_name + "_copy:")
    assert code_copy.data == fun.parameter.data


@model
class Agent:
    def __init__(self):
        self.prompt = node("p", trainable=True)
        self.notes = ["a"]
        self.helper = bundle(trainable=True)(lambda_free_helper)
        self.sub = Sub()
        self.layers = Seq(node(1, trainable=True))
        self.table = Map({"k": node(2, trainable=True)})

    @bundle(trainable=True)
    def act(self, x):
        return x

    def forward(self, x):
        return self.act(x)


def lambda_free_helper(x):
    return x


class Sub(Module):
    def __init__(self):
        self.value = node(3, trainable=True)
        self.log = []


def test_copy_shares_parameters_but_not_plain_attributes():
    agent = Agent()
    clone = agent.copy()
    assert isinstance(clone, Agent) and clone is not agent
    assert [id(p) for p in clone.parameters()] == [id(p) for p in agent.parameters()]
    assert clone.prompt is agent.prompt
    assert clone.act.parameter is agent.act.parameter
    assert clone.helper is not agent.helper and clone.helper.parameter is agent.helper.parameter
    assert clone.sub is not agent.sub and clone.sub.value is agent.sub.value
    assert clone.layers is not agent.layers and clone.layers[0] is agent.layers[0]
    assert clone.table["k"] is agent.table["k"]
    clone.notes.append("b")
    clone.sub.log.append(1)
    assert agent.notes == ["a"] and agent.sub.log == []


def test_new_code_on_the_original_reaches_the_copy():
    agent = Agent()
    clone = agent.copy()
    agent.act.parameter._set("def act(self, x):\n    return x * 10\n")
    out = clone.forward(2)
    assert out.data == 20
    # The copy's calls hang off the shared parameter.
    assert any(c is out for c in agent.act.parameter.children)


def test_deepcopy_copies_parameters():
    agent = Agent()
    twin = copy.deepcopy(agent)
    assert twin.prompt is not agent.prompt and twin.prompt.data == "p"
    assert twin.prompt.name.startswith(agent.prompt.py_name + "_copy:")
    assert twin.sub.value is not agent.sub.value
    assert twin.act.parameter is not agent.act.parameter
    assert twin.forward(3).data == 3
    assert len(twin.parameters()) == len(agent.parameters())


def test_copy_of_nested_modules_shares_parameters():
    outer = Sub()
    outer.inner = Sub()
    clone = outer.copy()
    assert clone.inner is not outer.inner
    assert clone.inner.value is outer.inner.value


def test_copy_with_partials():
    class WithPartial(Module):
        def __init__(self):
            self.p = node(1, trainable=True)
            self.plain = functools.partial(self.method, 1)
            self.trained = functools.partial(self.trainable_method, 1)

        @bundle()
        def method(self, x, y):
            return x + y

        @bundle(trainable=True)
        def trainable_method(self, x, y):
            return x + y

    module = WithPartial()
    clone = module.copy()
    assert clone.p is module.p
    assert clone.plain(2).data == 3
    with pytest.raises(ValueError, match=r"functools\.partial"):
        clone.parameters()


def test_copy_of_seq_and_map_is_shallow_like_list_and_dict():
    seq = Seq(node(1, trainable=True))
    assert seq.copy() == seq and seq.copy()[0] is seq[0]
    mapping = Map({"a": node(1, trainable=True)})
    assert mapping.copy()["a"] is mapping["a"]


def test_rollouts_on_copies_all_reach_the_shared_parameter():
    @model
    class Echo:
        def __init__(self):
            self.prefix = node(">", trainable=True)

        def forward(self, x):
            return self.prefix + x

    agent = Echo()
    outputs = [agent.copy()(str(i)) for i in range(5)]
    assert [o.data for o in outputs] == [">0", ">1", ">2", ">3", ">4"]
    assert len(agent.prefix.children) == 5


_PICKLE_IN_MAIN = """
import pickle, sys
from opto import trace

@trace.bundle()
def shout(text):
    return text.upper()

sys.stdout.buffer.write(pickle.dumps(shout))
"""


def test_a_bundle_defined_in_a_script_unpickles_elsewhere_with_an_error_naming_the_fix():
    import pickle
    import subprocess
    import sys

    payload = subprocess.run(
        [sys.executable, "-c", _PICKLE_IN_MAIN], capture_output=True, check=True
    ).stdout
    with pytest.raises(ImportError, match=r"shout.*__main__.*move the agent and its bundles"):
        pickle.loads(payload)
