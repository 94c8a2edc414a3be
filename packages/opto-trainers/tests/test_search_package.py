"""The `opto.trainers.search` package: one candidate type, optimizer forks, per-algorithm
options, and the batch backward shared by every trainer."""

from __future__ import annotations

import math

import opto_trainers_test_support as S
import pytest
from opto.trainers.algorithms.beamsearch import (
    Beam,
    BeamSearch,
    BeamSearchHistory,
    BeamSearchHistoryOptions,
    BeamSearchOptions,
)
from opto.trainers.algorithms.priority_search import (
    ModuleCandidate,
    PrioritySearch,
    PrioritySearchOptions,
)
from opto.trainers.algorithms.ucb import BufferEntry, UCBSearch, UCBSearchOptions
from opto.trainers.evaluation import batch_backward
from opto.trainers.executors import SerialExecutor
from opto.trainers.options import TrainOptions, UnknownTrainArgumentError
from opto.trainers.search import (
    Candidate,
    ExplorationJob,
    SearchEngine,
    bind_optimizer,
    bind_worker,
    chain_state,
)
from opto.utils.testing import ScriptedLLM

# -- one candidate type --------------------------------------------------------------------


def test_every_search_uses_the_one_candidate_type():
    assert ModuleCandidate is Candidate and Beam is Candidate and BufferEntry is Candidate


def test_a_candidates_values_are_a_private_copy_that_cannot_be_reassigned():
    values = {"a": 1}
    c = Candidate(values, optimizer_index=1)
    values["a"] = 2
    assert c.paramset == {"a": 1} and c.update_dict is c.paramset
    with pytest.raises(AttributeError):
        c.paramset = {"a": 3}  # type: ignore[misc]
    assert c.key == Candidate({"a": 1}, optimizer_index=1).key != Candidate({"a": 1}).key
    with pytest.raises(TypeError, match="paramset="):
        Candidate()


def test_candidate_statistics_come_from_its_scores():
    c = Candidate({"a": 1})
    assert c.score is None and c.mean_score() is None and c.num_scored == 0
    assert c.add_scores([1.0, None, 0.5]) == 2
    assert c.num_rollouts == 3 and c.num_scored == 2
    assert c.mean_score() == pytest.approx(0.75)
    assert c.score == -math.inf  # an unscored rollout makes the strict mean -inf
    c.reset_scores()
    c.add_scores([0.25])
    assert c.score == 0.25
    again = Candidate.from_dict(c.to_dict())
    assert again.paramset == {"a": 1} and again.scores == [0.25]


# -- per-algorithm options -----------------------------------------------------------------


def test_algorithm_options_extend_train_options_with_validated_fields():
    for cls in (PrioritySearchOptions, BeamSearchOptions, UCBSearchOptions):
        assert issubclass(cls, TrainOptions)
    options = PrioritySearchOptions.from_kwargs(
        {"num_candidates": 3, "num_steps": 2}, algorithm="PrioritySearch"
    )
    assert options.num_candidates == 3 and options.max_steps == 2
    with pytest.raises(ValueError, match="num_candidates must be a positive int"):
        PrioritySearchOptions(num_candidates=0)
    with pytest.raises(ValueError, match="score_function"):
        PrioritySearchOptions(score_function="best")
    with pytest.raises(UnknownTrainArgumentError, match="did you mean 'beam_width'"):
        BeamSearchOptions.from_kwargs({"beam_widht": 2}, algorithm="BeamSearch")
    with pytest.raises(UnknownTrainArgumentError, match="max_history_size"):
        BeamSearchOptions.from_kwargs({"max_history_size": 2}, algorithm="BeamSearch")


def test_the_history_variant_has_its_own_defaults():
    plain, history = BeamSearchOptions(), BeamSearchHistoryOptions()
    assert (plain.num_proposals, plain.eval_frequency) == (4, 4)
    assert (history.num_proposals, history.eval_frequency, history.max_history_size) == (1, 5, 10)
    assert BeamSearch.options_class is BeamSearchOptions
    assert BeamSearchHistory.options_class is BeamSearchHistoryOptions


def test_algorithm_options_reach_the_resume_configuration(tmp_path):
    trainer, _, _ = S.make(BeamSearch)
    trainer.train(
        S.TargetGuide(), S.DATA, beam_width=2, max_depth=1, storage=f"sqlite:///{tmp_path}/r.db"
    )
    assert trainer._config["beam_width"] == 2


# -- optimizer forks -----------------------------------------------------------------------


def test_bind_optimizer_forks_onto_the_worker_and_leaves_the_template_alone():
    _, agent, optimizer = S.make(PrioritySearch)
    worker = bind_worker(agent, {"a": 5})
    worker_nodes = list(worker.parameters())
    bound = bind_optimizer(optimizer, agent, worker)
    assert bound.parameters == worker_nodes and bound is not optimizer
    assert worker_nodes[0].data == 5 and agent.parameters()[0].data == 1
    assert optimizer.parameters == list(agent.parameters())
    assert bound.llm is optimizer.llm and bound.steps == []


def test_chain_states_carry_no_growing_step_log():
    trainer, _, optimizer = S.make(PrioritySearch)
    trainer.train(S.TargetGuide(), S.DATA, batch_size=2, num_candidates=2, num_steps=3)
    for candidate in trainer.memory:
        state = candidate.optimizer_state
        assert state is not None and "parameters" not in state
        assert len(state["steps"]) <= 1  # at most the step that made the candidate
    assert "steps" in chain_state(optimizer) and chain_state(optimizer)["steps"] == []


# -- the batch backward --------------------------------------------------------------------


def test_batch_backward_joins_outputs_and_feedback_and_adds_the_context():
    agent = S.Scale()
    optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(default="1"))
    outputs = [agent(1), agent(2)]
    batch_backward(optimizer, outputs, ["too small", "too large"], context="\nearlier: 3")
    (param,) = agent.parameters()
    feedback = str(optimizer.trace_graph.user_feedback)
    assert feedback.startswith("--- Current Feedback ---\nID [0]: too small\nID [1]: too large")
    assert feedback.endswith("earlier: 3") and param.feedback
    with pytest.raises(ValueError, match="one feedback per output"):
        batch_backward(optimizer, outputs, ["only one"])


def test_the_engine_proposes_from_one_batch_backward_per_job():
    agent = S.Scale()
    optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(S.nudge))
    engine = SearchEngine(agent, [optimizer], SerialExecutor())
    (result,) = engine.explore(
        [ExplorationJob(paramset={"a": 1}, xs=[1, 2], infos=[3, 6], num_proposals=2)],
        S.TargetGuide(),
    )
    assert len(optimizer.events) == 2  # two forks, each stepped once
    assert all("ID [0]" in text and "ID [1]" in text for _, text in optimizer.events)
    assert {p.paramset["a"] for p in result.proposals} == {2}
    assert optimizer.steps == [] and agent.parameters()[0].data == 1


def test_ucb_buffer_statistics_use_the_candidates_scores():
    trainer, _, _ = S.make(UCBSearch)
    trainer.train(S.TargetGuide(), S.DATA, num_search_iterations=1, evaluation_batch_size=4)
    parent = trainer.buffer[0]
    assert isinstance(parent, Candidate) and parent.num_scored == 4 + 2


def test_minibatch_algorithms_declare_their_keywords_as_options():
    from opto.trainers.algorithms.minibatch import (
        BasicSearchAlgorithm,
        BasicSearchOptions,
        MinibatchAlgorithm,
        MinibatchOptions,
    )

    assert MinibatchAlgorithm.options_class is MinibatchOptions
    assert BasicSearchAlgorithm.options_class is BasicSearchOptions
    assert issubclass(BasicSearchOptions, MinibatchOptions)
    assert BasicSearchOptions().num_proposals == 4
    with pytest.raises(ValueError, match="num_proposals must be a positive int"):
        BasicSearchOptions(num_proposals=0)
    with pytest.raises(UnknownTrainArgumentError, match="did you mean 'ensure_improvement'"):
        MinibatchOptions.from_kwargs({"ensure_improvment": True}, algorithm="MinibatchAlgorithm")
    with pytest.raises(UnknownTrainArgumentError, match="num_proposals"):
        MinibatchOptions.from_kwargs({"num_proposals": 2}, algorithm="MinibatchAlgorithm")
