"""Loaded state is untrusted: code, types and malformed files (Module.load)."""

from __future__ import annotations

import json

import pytest
from opto.trace.bundle import bundle
from opto.trace.code_policy import CodePolicy, CodePolicyError, UntrustedCodeError
from opto.trace.loading import LoadedValueError, check_loaded_state
from opto.trace.modules import Module, ModuleStateError
from opto.trace.nodes import node


class Agent(Module):
    def __init__(self):
        self.count = node(3, trainable=True)
        self.rate = node(0.5, trainable=True)
        self.pair = node((1, 2), trainable=True)

    @bundle(trainable=True)
    def act(self, x):
        return x + 1


def _write(path, parameters):
    document = {
        "format": "opto.trace.module-state",
        "version": 1,
        "class": "x.Agent",
        "parameters": parameters,
    }
    path.write_text(json.dumps(document))
    return path


def _state(agent, **changes):
    state = dict(agent.state_dict())
    state.update(changes)
    return {key: list(v) if isinstance(v, tuple) else v for key, v in state.items()}


def test_unchanged_code_loads_without_trust(tmp_path):
    agent = Agent()
    agent.load(_write(tmp_path / "a.json", _state(agent)))
    assert agent.act(1).data == 2


def test_changed_code_needs_trust_and_the_module_stays_unchanged(tmp_path):
    agent = Agent()
    evil = "def act(self, x):\n    import os\n    return os.getcwd()\n"
    path = _write(tmp_path / "a.json", _state(agent, **{"act": evil, "count": 7}))
    with pytest.raises(UntrustedCodeError, match=r"'act'.*trust_code=True"):
        agent.load(path)
    assert agent.count.data == 3 and agent.act(1).data == 2
    agent.load(path, trust_code=True)
    assert agent.count.data == 7


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("def act(self, x):\n    return x\n\nimport os\nos.system('true')\n", "top level"),
        ("async def act(self, x):\n    return x\n", "must stay a def function"),
        ("def act(self):\n    return 1\n", "signature must stay"),
        ("def act(self, x=__import__('os').system('true')):\n    return x\n", "default value"),
        ("class act:\n    pass\n", "must define the function act"),
    ],
)
def test_trusted_code_still_passes_the_proposal_checks(tmp_path, code, reason):
    agent = Agent()
    path = _write(tmp_path / "a.json", _state(agent, **{"act": code}))
    with pytest.raises(CodePolicyError, match=reason):
        agent.load(path, trust_code=True)
    assert agent.act(1).data == 2


def test_loaded_code_meets_the_bundles_policy(tmp_path):
    pytest.importorskip("RestrictedPython")

    class Guarded(Module):
        @bundle(trainable=True, code_policy=CodePolicy(forbidden_modules={"os"}))
        def act(self, x):
            return x + 1

    agent = Guarded()
    code = "def act(self, x):\n    return x.__class__\n"
    path = _write(tmp_path / "g.json", {"act": code})
    with pytest.raises(CodePolicyError, match="not allowed"):
        agent.load(path, trust_code=True)


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [("count", "5", "str"), ("count", 2.5, "float"), ("rate", "0.1", "str"), ("pair", 3, "int")],
)
def test_a_value_of_another_type_is_refused(tmp_path, key, value, kind):
    agent = Agent()
    path = _write(tmp_path / "a.json", _state(agent, **{key: value}))
    with pytest.raises(LoadedValueError, match=f"'{key}' holds a .*file has a {kind}"):
        agent.load(path)


def test_values_keep_their_parameters_type(tmp_path):
    agent = Agent()
    path = _write(tmp_path / "a.json", _state(agent, count=5.0, rate=1, pair=[4, 5]))
    agent.load(path)
    assert type(agent.count.data) is int and agent.count.data == 5
    assert type(agent.rate.data) is float
    assert agent.pair.data == (4, 5)


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModuleStateError, match="not a JSON module state file"):
        Agent().load(path)


def test_state_that_is_not_a_mapping_is_a_clear_error():
    with pytest.raises(LoadedValueError, match="must be a mapping"):
        check_loaded_state({}, ["not", "a", "mapping"])
