"""Helpers the trainers rely on: batchify, standard_optimization_step, parameter sets."""

import math

from opto import trace
from opto.optimizers import Optimizer
from opto.trace import bundle, node
from opto.trainers import ExactMatchGuide, batchify
from opto.trainers.algorithms import standard_optimization_step
from opto.trainers.algorithms.base import copy_optimizer
from opto.trainers.utils import (
    bind,
    get_paramset,
    paramset_from_update,
    safe_mean,
    to_jsonable,
    update_from_paramset,
)
from opto.utils.testing import ScriptedLLM


@bundle()
def shout(prompt, x):
    """Upper-case the prompt, failing on zero."""
    return prompt.upper() + str(1 / x)


@trace.model
class Agent:
    def __init__(self):
        self.prompt = node("hi", trainable=True)
        self.style = node("plain", trainable=True)

    def forward(self, x):
        return shout(self.prompt, x)


def test_batchify_is_a_traced_op_with_the_id_line_format():
    a, b = node("first"), node("second")
    joined = batchify(a, b)
    assert joined.data == "ID [0]: first\nID [1]: second\n"
    assert set(joined.parents) == {a, b}


def test_standard_optimization_step_turns_execution_errors_into_feedback():
    agent = Agent()
    target, score, feedback = standard_optimization_step(agent, 1, ExactMatchGuide(), "HI1.0")
    assert (target.data, score, feedback) == ("HI1.0", 1.0, "Correct.")
    target, score, feedback = standard_optimization_step(agent, 0, ExactMatchGuide(), "x", -1)
    assert score == -1 and "ZeroDivisionError" in str(feedback)
    assert type(target).__name__ == "ExceptionNode"


def test_bind_gives_a_candidate_its_own_nodes_and_leaves_the_agent_alone():
    agent = Agent()
    bound = bind(agent, {"prompt": "yo"})
    assert bound(2).data == "YO0.5" and agent(2).data == "HI0.5"
    assert get_paramset(bound) == {"prompt": "yo", "style": "plain"}
    assert bound.prompt is not agent.prompt


def test_update_dicts_and_parameter_sets_convert_both_ways():
    agent = Agent()
    update = {agent.prompt: "hey", node("stranger", trainable=True): "ignored"}
    paramset = paramset_from_update(agent, update)
    assert paramset == {"prompt": "hey", "style": "plain"}
    back = update_from_paramset(agent, paramset)
    assert back == {agent.prompt: "hey", agent.style: "plain"}


def test_safe_mean_and_to_jsonable():
    assert safe_mean([1, None, [2, [3]]]) == 2.0
    assert safe_mean([None], missing_value=-1) == -1
    assert to_jsonable({1: (2, object), "x": math.inf})["1"][0] == 2
    assert to_jsonable({"x": math.inf, "y": math.nan}) == {"x": "Infinity", "y": "NaN"}
    assert to_jsonable({"o": object}) == {"o": repr(object)}


class Stepper(Optimizer):
    def __init__(self, parameters, llm):
        super().__init__(parameters)
        self.llm = llm
        self.notes = []

    def _step(self, **kwargs):
        self.notes.append("stepped")
        return {}


def test_copy_optimizer_shares_parameters_and_llm_but_not_state():
    agent = Agent()
    llm = ScriptedLLM(default="x")
    optimizer = Stepper(agent.parameters(), llm)
    twin = copy_optimizer(optimizer)
    twin.step()
    assert twin.parameters == optimizer.parameters and twin.parameters[0] is agent.parameters()[0]
    assert twin.llm is llm and optimizer.notes == [] and twin.notes == ["stepped"]


def test_guide_save_and_load_round_trip(tmp_path):
    guide = ExactMatchGuide(normalize=True)
    guide.save(tmp_path / "guide.pkl")
    other = ExactMatchGuide()
    other.load(tmp_path / "guide.pkl")
    assert other.normalize is True
