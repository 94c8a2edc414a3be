"""Module.save/load (JSON by default, pickle on request), state_dict, pickling modules."""

import collections
import json
import pickle
import re

import pytest
from opto.trace.bundle import bundle
from opto.trace.code_policy import UntrustedCodeError
from opto.trace.containers import Map, Seq, StateDictError
from opto.trace.modules import Module, ModuleStateError, model
from opto.trace.nodes import node


@model
class Agent:
    """An agent with a prompt, a trainable method and containers."""

    def __init__(self):
        self.prompt = node("You are helpful.", trainable=True)
        self.settings = node({"temperature": 0.5, "stop": ["\n"]}, trainable=True)
        self.layers = Seq(node(1, trainable=True), node(2, trainable=True))
        self.table = Map({"greeting": node("hello", trainable=True)})
        self.history = []

    @bundle(trainable=True)
    def act(self, x):
        return x + 1

    def forward(self, x):
        return self.act(x)


class Plain(Module):
    def __init__(self, value):
        self.value = node(value, trainable=True)


def changed_agent():
    agent = Agent()
    agent.prompt._set("Be brief.")
    agent.settings._set({"temperature": 0.1, "stop": []})
    agent.layers[1]._set(20)
    agent.table["greeting"]._set("hi")
    agent.act.parameter._set("def act(self, x):\n    return x + 100\n")
    return agent


def test_state_dict_paths_and_values():
    agent = changed_agent()
    state = agent.state_dict()
    assert state == {
        "act": "def act(self, x):\n    return x + 100\n",
        "layers.0": 1,
        "layers.1": 20,
        "prompt": "Be brief.",
        "settings": {"temperature": 0.1, "stop": []},
        "table.greeting": "hi",
    }
    state["settings"]["temperature"] = 9  # a copy: the parameter is unchanged
    assert agent.settings.data["temperature"] == 0.1


def test_json_round_trip_into_a_fresh_instance(tmp_path):
    agent = changed_agent()
    path = agent.save(tmp_path / "sub" / "agent.json")
    assert path == tmp_path / "sub" / "agent.json"

    fresh = Agent()
    own_prompt, own_layer = fresh.prompt, fresh.layers[1]
    fresh.load(path, trust_code=True)  # changed_agent() edited the code of act
    assert fresh.prompt is own_prompt and own_prompt.data == "Be brief."
    assert fresh.layers[1] is own_layer and own_layer.data == 20
    assert fresh.table["greeting"].data == "hi"
    assert fresh.settings.data == {"temperature": 0.1, "stop": []}
    assert fresh.state_dict() == agent.state_dict()
    # The loaded code is what the method now runs.
    assert fresh.forward(1).data == 101


def test_json_file_is_readable(tmp_path):
    changed_agent().save(tmp_path / "agent.json")
    document = json.loads((tmp_path / "agent.json").read_text())
    assert document["format"] == "opto.trace.module-state"
    assert document["version"] == 1
    assert document["class"].endswith(".Agent")
    assert document["parameters"]["prompt"] == "Be brief."
    assert document["parameters"]["table.greeting"] == "hi"
    assert list(tmp_path.iterdir()) == [tmp_path / "agent.json"]  # no temp files left


def test_save_overwrites_atomically(tmp_path):
    target = tmp_path / "agent.json"
    target.write_text("old")
    Plain(1).save(target)
    fresh = Plain(0)
    fresh.load(target)
    assert fresh.value.data == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.json"]


def test_bundle_save_and_load_after_editing_code(tmp_path):
    @bundle(trainable=True)
    def fun(x):
        return x * 2

    fun.parameter._set("def fun(x):\n    return x * 3\n")
    fun.save(tmp_path / "fun.json")

    @bundle(trainable=True)
    def fun(x):  # a fresh bundle of the same function
        return x * 2

    assert fun(2).data == 4
    with pytest.raises(UntrustedCodeError, match="trust_code=True"):
        fun.load(tmp_path / "fun.json")
    assert fun(2).data == 4
    fun.load(tmp_path / "fun.json", trust_code=True)
    assert fun(2).data == 6


def test_unserializable_value_names_the_parameter(tmp_path):
    plain = Plain({"when": {1, 2}})
    with pytest.raises(ModuleStateError) as info:
        plain.save(tmp_path / "bad.json")
    message = str(info.value)
    assert "'value'" in message and "set" in message and "format='pickle'" in message
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(ModuleStateError, match="dict key 1 is not a string"):
        Plain({1: "a"}).save(tmp_path / "bad.json")
    with pytest.raises(ModuleStateError, match="not valid JSON"):
        Plain(float("nan")).save(tmp_path / "bad.json")
    with pytest.raises(ModuleStateError, match="tuple"):
        Plain((1, 2)).save(tmp_path / "bad.json")
    with pytest.raises(ModuleStateError, match="OrderedDict"):
        Plain(collections.OrderedDict(a=1)).save(tmp_path / "bad.json")
    with pytest.raises(ModuleStateError, match=re.escape("at value['a'][1]")):
        Plain({"a": [1, b"x"]}).save(tmp_path / "bad.json")


def test_pickle_format_only_when_asked(tmp_path):
    path = Plain({"when": {1, 2}}).save(tmp_path / "state.pkl", format="pickle")
    fresh = Plain(None)
    with pytest.raises(ModuleStateError, match="format='pickle'"):
        fresh.load(path)
    assert fresh.value.data is None
    fresh.load(path, format="pickle")
    assert fresh.value.data == {"when": {1, 2}}


def test_unpicklable_value_names_the_parameter(tmp_path):
    plain = Plain(lambda: 1)
    with pytest.raises(ModuleStateError, match=r"'value'.*unpicklable"):
        plain.save(tmp_path / "state.pkl", format="pickle")


def test_missing_and_unknown_keys(tmp_path):
    path = tmp_path / "state.json"
    Plain(1).save(path)
    agent = Agent()
    before = agent.state_dict()
    with pytest.raises(
        StateDictError, match=r"missing keys \[.*'prompt'.*unexpected keys \['value'\]"
    ):
        agent.load(path)
    assert agent.state_dict() == before

    result = agent.load_state_dict({"prompt": "x", "extra": 1}, strict=False)
    assert agent.prompt.data == "x"
    assert result.unexpected_keys == ["extra"]
    assert "layers.0" in result.missing_keys


def test_bad_files(tmp_path):
    plain = Plain(1)
    (tmp_path / "not-json").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ModuleStateError, match="not a JSON module state file"):
        plain.load(tmp_path / "not-json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ModuleStateError, match="not a module state file"):
        plain.load(tmp_path / "other.json")
    (tmp_path / "future.json").write_text(
        '{"format": "opto.trace.module-state", "version": 99, "parameters": {}}'
    )
    with pytest.raises(ModuleStateError, match="version 99"):
        plain.load(tmp_path / "future.json")
    with pytest.raises(ValueError, match="Unknown save format"):
        plain.save(tmp_path / "x", format="yaml")
    with pytest.raises(FileNotFoundError):
        plain.load(tmp_path / "missing.json")
    with pytest.raises(TypeError, match="expects a mapping"):
        plain.load_state_dict([("value", 1)])


def test_loading_into_another_class_warns(tmp_path, caplog):
    Plain(3).save(tmp_path / "p.json")

    class Other(Module):
        def __init__(self):
            self.value = node(0, trainable=True)

    other = Other()
    with caplog.at_level("WARNING", logger="opto.trace.modules"):
        other.load(tmp_path / "p.json")
    assert other.value.data == 3
    assert "Loading state saved from" in caplog.text


def test_pickling_a_live_model_stores_values_not_graphs():
    agent = changed_agent()
    small = len(pickle.dumps(agent))
    outputs = []
    for i in range(30):
        outputs.append(agent.forward(i))
        outputs.append(agent.prompt + "!")
    assert agent.prompt.children  # the live graph exists...
    restored = pickle.loads(pickle.dumps(agent))
    assert len(pickle.dumps(agent)) < small * 2  # ...but is not pickled
    assert restored.prompt.data == "Be brief."
    assert restored.prompt.children == []
    assert restored.state_dict() == agent.state_dict()
    assert restored.forward(1).data == 101


def test_bundle_returning_a_tuple_unpacks_into_nodes(tmp_path):
    @bundle(trainable=True)
    def split(x):
        return x, x + 1

    first, second = split(node(1))
    assert (first.data, second.data) == (1, 2)
    split.parameter._set("def split(x):\n    return x, x * 10\n")
    split.save(tmp_path / "split.json")

    @bundle(trainable=True)
    def split(x):  # a fresh bundle, restored from the file
        return x, x + 1

    split.load(tmp_path / "split.json", trust_code=True)
    assert [n.data for n in split(node(3))] == [3, 30]
