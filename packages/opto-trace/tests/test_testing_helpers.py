"""opto.trace.testing (fresh graph, one optimizer step) and opto.trace.utils.is_code_name."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from opto import trace
from opto.trace.nodes import GRAPH, Node, ParameterNode, node
from opto.trace.testing import isolated_graph, one_step
from opto.trace.utils import CODE_PARAMETER_NAME, is_code_name

pytestmark = pytest.mark.usefixtures("fresh_graph")


class TakeTheNumber:
    """A real (if tiny) optimizer: sets each parameter to the number in its feedback."""

    def __init__(self, parameters: list[ParameterNode]) -> None:
        self.parameters = parameters
        self.calls: list[str] = []

    def zero_feedback(self) -> None:
        self.calls.append("zero")
        for parameter in self.parameters:
            parameter.zero_feedback()

    def backward(self, output: Node, feedback: Any) -> None:
        self.calls.append("backward")
        output.backward(feedback)

    def step(self, scale: int = 1) -> dict[str, Any]:
        self.calls.append("step")
        for parameter in self.parameters:
            received = [fb for fbs in parameter.feedback.values() for fb in fbs]
            parameter._set(int(received[-1].user_feedback) * scale)
        return {"updated": len(self.parameters)}


def test_fresh_graph_restarts_names_for_each_test_first():
    assert node(1).name == "int:0"
    assert node(1).name == "int:1"


def test_fresh_graph_restarts_names_for_each_test_second(fresh_graph):
    assert fresh_graph is GRAPH
    assert node(1).name == "int:0"


def test_isolated_graph_clears_on_entry_and_exit():
    node(1)
    with isolated_graph():
        assert node(1).name == "int:0"
    assert node(1).name == "int:0"


def test_one_step_runs_zero_backward_step_with_a_node_and_plain_feedback():
    x = node(1, trainable=True)
    optimizer = TakeTheNumber([x])
    result = one_step(optimizer, x + 1, "5", scale=2)
    assert result == {"updated": 1}
    assert optimizer.calls == ["zero", "backward", "step"]
    assert x.data == 10


def test_one_step_runs_the_forward_callable_and_the_guide():
    x = node(3, trainable=True)
    seen: list[int] = []

    def guide(value: int) -> str:
        seen.append(value)
        return str(value * 10)

    one_step(TakeTheNumber([x]), lambda: x * 2, guide)
    assert seen == [6]
    assert x.data == 60


def test_is_code_name_matches_code_parameters_of_trainable_bundles():
    @trace.bundle(trainable=True)
    def double(v):
        return v * 2

    parameter = double.parameter
    assert is_code_name(parameter.name) and is_code_name(parameter.py_name)
    assert CODE_PARAMETER_NAME == "__code"
    assert is_code_name("agent/__code:3")
    assert not is_code_name(node(1, trainable=True).name)
    assert not is_code_name("code")


def test_testing_imports_without_pytest_and_without_optimizers():
    code = (
        "import sys; sys.modules['pytest'] = None; "  # pytest made unimportable
        "import opto.trace.testing as t; "
        "print(hasattr(t, 'fresh_graph'), 'fresh_graph' in t.__all__, "
        "'opto.optimizers' in sys.modules, callable(t.one_step))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False", "False", "True"]
