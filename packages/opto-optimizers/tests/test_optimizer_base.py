"""The Optimizer base: parameter validation, the step pipeline, step records, state, copies."""

from __future__ import annotations

import copy
import json
import logging
import math
from typing import Any

import pytest
from opto import trace
from opto.optimizers import AbstractOptimizer, Optimizer, StepRecord
from opto.trace.nodes import ParameterNode
from opto.trace.projections import Projection
from opto.trace.propagators import GraphPropagator, TraceGraph
from opto.utils.llm.types import Usage

pytestmark = pytest.mark.usefixtures("fresh_graph")


class Constant(Optimizer):
    """Proposes ``value`` for every trainable parameter; remembers the calls."""

    def __init__(self, parameters: Any, value: Any = 10, **kwargs: Any) -> None:
        super().__init__(parameters, **kwargs)
        self.value = value
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def _step(self, *args: Any, **kwargs: Any) -> dict[ParameterNode, Any]:
        self.calls.append((args, kwargs))
        self.current_step.suggestion = {p.py_name: self.value for p in self.parameters}
        return {p: self.value for p in self.parameters}


class Failing(Optimizer):
    def _step(self) -> dict[ParameterNode, Any]:
        raise RuntimeError("backend down")


class AddOne(Projection):
    def project(self, x: Any) -> Any:
        return x + 1


class Explode(Projection):
    def project(self, x: Any) -> Any:
        raise ValueError("cannot project")


def param(value: Any = 1, name: str = "x", **kwargs: Any) -> ParameterNode:
    if "projections" in kwargs:
        return ParameterNode(value, name=name, trainable=True, **kwargs)
    return trace.node(value, name=name, trainable=True, **kwargs)


# --- validation ---------------------------------------------------------------------------


def test_accepts_any_iterable_of_parameters_and_drops_duplicates():
    a, b = param(1, "a"), param(2, "b")
    assert Constant((a, b)).parameters == [a, b]
    assert Constant(p for p in [a, b, a]).parameters == [a, b]


def test_a_single_node_is_rejected_with_the_fix():
    with pytest.raises(TypeError, match=r"wrap it in a list"):
        Constant(param())


def test_empty_parameters_are_rejected():
    with pytest.raises(ValueError, match="no parameters"):
        Constant([])


@pytest.mark.parametrize("bad", [[1], [trace.node(1)], ["x"]])
def test_non_parameter_elements_are_rejected_naming_the_index(bad):
    with pytest.raises(TypeError, match=r"parameters\[0\] is a .*trainable=True"):
        Constant(bad)


@pytest.mark.parametrize("bad", ["abc", {"x": 1}, 3])
def test_non_iterables_strings_and_mappings_are_rejected(bad):
    with pytest.raises(TypeError, match="iterable of ParameterNodes"):
        Constant(bad)


def test_parameters_that_are_all_frozen_are_rejected():
    frozen = ParameterNode(1, name="frozen", trainable=False)
    with pytest.raises(ValueError, match="trainable"):
        Constant([frozen])


def test_non_trainable_parameters_are_kept_but_never_updated():
    frozen = ParameterNode(1, name="frozen", trainable=False)
    live = param(1)
    opt = Constant([frozen, live])
    assert opt.trainable_parameters == [live]
    update = opt.step()
    assert frozen in update and live in update
    assert frozen.data == 1 and live.data == 10
    assert opt.last_step.applied == {live.py_name: 10}


def test_the_base_classes_are_abstract():
    with pytest.raises(TypeError):
        AbstractOptimizer([param()])  # type: ignore[abstract]
    with pytest.raises(TypeError):
        Optimizer([param()])  # type: ignore[abstract]


def test_unknown_arguments_are_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="opto.optimizers.optimizer"):
        Constant([param()], colour="blue")
    assert "colour" in caplog.text


# --- feedback -------------------------------------------------------------------------------


def test_default_propagator_is_a_graph_propagator_and_a_bad_one_is_rejected():
    assert isinstance(Constant([param()]).propagator, GraphPropagator)
    with pytest.raises(TypeError, match="Propagator"):
        Constant([param()], propagator=object())


def test_backward_uses_the_optimizers_propagator():
    class Counting(GraphPropagator):
        calls = 0

        def _propagate(self, child):
            Counting.calls += 1
            return super()._propagate(child)

    x = param(2)
    opt = Constant([x], propagator=Counting())
    opt.backward(x * 3 + 1, "more")
    assert Counting.calls == 2
    assert isinstance(opt.trace_graph, TraceGraph)
    assert opt.trace_graph.user_feedback == "more"


def test_trace_graph_is_zero_without_feedback_and_zero_feedback_clears():
    x = param(2)
    opt = Constant([x])
    assert opt.trace_graph == 0
    opt.backward(x + 1, "fb")
    assert x.feedback
    opt.zero_feedback()
    assert not x.feedback and opt.trace_graph == 0


# --- the step pipeline ----------------------------------------------------------------------


def test_step_proposes_projects_and_updates_in_that_order():
    x = param(1, projections=[AddOne(), AddOne()])
    opt = Constant([x], value=10)
    update = opt.step()
    assert update == {x: 12}
    assert x.data == 12


def test_step_passes_extra_arguments_to_propose():
    opt = Constant([param()])
    opt.step(False, "a", mask=["#Code"])
    assert opt.calls == [(("a",), {"mask": ["#Code"]})]


def test_bypassing_returns_the_update_without_assigning():
    x = param(1)
    opt = Constant([x])
    assert opt.step(bypassing=True) == {x: 10}
    assert x.data == 1
    assert opt.last_step.bypassed and opt.last_step.applied == {}
    assert opt.step(True) == {x: 10} and x.data == 1  # positional, as in the reference


def test_a_failing_projection_rejects_that_update_only():
    bad, good = param(1, "bad", projections=[Explode()]), param(1, "good")
    opt = Constant([bad, good])
    update = opt.step()
    assert update == {good: 10}
    assert bad.data == 1 and good.data == 10
    assert "cannot project" in opt.last_step.rejected[bad.py_name]


def test_update_assigns_values_directly():
    x = param([1])
    opt = Constant([x])
    value = [1, 2]
    opt.update({x: value})
    assert x.data is value


def test_every_step_leaves_a_record_and_history_is_bounded():
    opt = Constant([param()], max_history=3)
    assert opt.last_step is None and opt.steps == []
    for _ in range(5):
        opt.step()
    assert [r.index for r in opt.steps] == [2, 3, 4]
    assert opt.step_count == 5
    assert opt.last_step is opt.steps[-1]
    assert opt.last_step.suggestion == {"x0": 10}
    with pytest.raises(ValueError, match="max_history"):
        Constant([param()], max_history=0)


def test_propose_alone_also_leaves_a_record():
    x = param(1)
    opt = Constant([x])
    assert opt.propose() == {x: 10}
    assert x.data == 1
    assert opt.last_step.suggestion == {"x0": 10} and opt.last_step.applied == {}


def test_a_failing_step_is_recorded_and_the_error_propagates():
    opt = Failing([param()])
    with pytest.raises(RuntimeError, match="backend down"):
        opt.step()
    assert opt.last_step.error == "RuntimeError: backend down"
    assert opt.step_count == 1


def test_current_step_exists_only_during_a_step():
    with pytest.raises(RuntimeError, match="no step is in progress"):
        _ = Constant([param()]).current_step


def test_step_record_sums_usage_and_renders_messages():
    record = StepRecord(index=0, system_prompt="sys", user_prompt="usr")
    record.add_usage(Usage(prompt_tokens=3, completion_tokens=1, cost_usd=0.5))
    record.add_usage(Usage(prompt_tokens=2, completion_tokens=2, cost_usd=0.25))
    record.add_usage(None)
    assert record.llm_calls == 3
    assert record.usage.total_tokens == 8 and record.usage.cost_usd == 0.75
    assert record.messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "usr"},
    ]
    assert StepRecord(index=1).messages == []
    unknown = StepRecord(index=2)
    unknown.add_usage(Usage(cost_usd=None))
    unknown.add_usage(Usage(cost_usd=1.0))
    assert unknown.usage.cost_usd is None


def test_step_record_round_trips_through_json():
    record = StepRecord(
        index=4,
        suggestion={"x0": {1, 2}},
        applied={"x0": 3},
        rejected={"y0": "why"},
        usage=Usage(prompt_tokens=1),
    )
    data = json.loads(json.dumps(record.to_dict()))
    back = StepRecord.from_dict({**data, "unknown": 1})
    assert back.index == 4 and back.suggestion == {"x0": [1, 2]}
    assert back.usage == Usage(prompt_tokens=1)


def test_step_record_with_non_finite_numbers_is_standard_json():
    record = StepRecord(index=1, suggestion={"x0": math.nan}, applied={"x0": -math.inf})
    text = json.dumps(record.to_dict(), allow_nan=False)  # strict JSON: no NaN tokens
    back = StepRecord.from_dict(json.loads(text))
    assert back.suggestion == {"x0": "NaN"} and back.applied == {"x0": "-Infinity"}


# --- state ----------------------------------------------------------------------------------


def test_state_dict_is_json_and_load_state_dict_restores_it():
    x = param(1)
    opt = Constant([x])
    opt.step()
    state = json.loads(json.dumps(opt.state_dict()))
    assert state["parameters"] == ["x0"] and state["step_count"] == 1
    other = Constant([x])
    other.load_state_dict(state)
    assert other.step_count == 1
    assert other.last_step.applied == {"x0": 10}


def test_load_state_dict_rejects_bad_input():
    opt = Constant([param()])
    with pytest.raises(TypeError, match="state_dict"):
        opt.load_state_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="format"):
        opt.load_state_dict({"format": 99})


def test_load_state_dict_warns_about_other_parameters(caplog):
    opt = Constant([param(1, "a")])
    with caplog.at_level(logging.WARNING, logger="opto.optimizers.optimizer"):
        opt.load_state_dict({"type": "Other", "parameters": ["zzz"], "step_count": 2})
    assert "Other" in caplog.text and "zzz" in caplog.text
    assert opt.step_count == 2


def test_save_and_load_leave_a_working_optimizer(tmp_path):
    x = param(1)
    opt = Constant([x])
    opt.step()
    path = opt.save(tmp_path / "sub" / "opt.json")
    assert path.is_file() and json.loads(path.read_text())["step_count"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["opt.json"]  # no temp file left
    fresh = Constant([x], value=20)
    fresh.load(path)
    assert fresh.parameters == [x] and fresh.step_count == 1
    fresh.zero_feedback()
    fresh.step()
    assert x.data == 20 and fresh.step_count == 2


def test_deepcopy_shares_parameters_but_not_history():
    x = param(1)
    opt = Constant([x])
    opt.llm = object()
    opt.step()
    clone = copy.deepcopy(opt)
    assert clone.parameters[0] is x and clone.parameters is not opt.parameters
    assert clone.llm is opt.llm
    clone.step()
    assert clone.step_count == 2 and opt.step_count == 1
    assert len(opt.steps) == 1


def test_fork_optimizes_other_parameters_with_fresh_records_and_the_same_llm():
    x, y = param(1, name="x"), param(2, name="y")
    opt = Constant([x, y], value=5)
    opt.llm = object()
    opt.best = {x: "memory of x"}  # state that refers to the parameters follows the fork
    opt.step()
    x2, y2 = param(1, name="x"), param(2, name="y")
    fork = opt.fork([x2, y2])
    assert fork.parameters == [x2, y2] and fork.llm is opt.llm
    assert fork.best == {x2: "memory of x"} and opt.best == {x: "memory of x"}
    assert fork.steps == [] and fork.step_count == 1 and fork.calls == opt.calls
    fork.value = 9
    fork.step()
    assert (x2.data, y2.data) == (9, 9) and (x.data, y.data) == (5, 5)
    assert len(opt.steps) == 1 and len(fork.steps) == 1 and opt.step_count == 1


def test_fork_without_parameters_keeps_the_nodes_but_not_the_records():
    x = param(1)
    opt = Constant([x])
    opt.step()
    fork = opt.fork()
    assert fork.parameters == [x] and fork.parameters is not opt.parameters
    assert fork.steps == [] and len(opt.steps) == 1


def test_fork_needs_one_node_per_parameter():
    x, y = param(1, name="x"), param(2, name="y")
    opt = Constant([x, y])
    with pytest.raises(ValueError, match="one parameter per parameter"):
        opt.fork([param(3)])
    with pytest.raises(TypeError, match="ParameterNode"):
        opt.fork([x, "y"])


# --- package exports ------------------------------------------------------------------------


def test_optimizers_load_lazily_and_a_missing_module_only_affects_its_name(monkeypatch):
    import subprocess
    import sys

    import opto.optimizers as package

    code = (
        "import sys, opto.optimizers as o\n"
        "assert 'opto.optimizers.optoprime' not in sys.modules\n"
        "assert o.OptoPrime.__module__ == 'opto.optimizers.optoprime'\n"
        "assert o.FunctionFeedback.__module__.startswith('opto.trace.propagators')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setitem(package._EXPORTS, "Ghost", "opto.optimizers.ghost_optimizer")
    with pytest.raises(AttributeError, match="Ghost is not available"):
        _ = package.Ghost
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = package.Nothing
    assert {"OptoPrime", "OptoPrimeV2", "OptoPrimeMulti", "TextGrad", "OPRO"} <= set(dir(package))
