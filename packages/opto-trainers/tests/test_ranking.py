"""Best-candidate selection: NaN never wins, None ranks below every number, ties keep the
earlier candidate — in the shared helpers and in every trainer that selects."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from opto.trainers.algorithms.beamsearch import Beam, BeamSearch
from opto.trainers.algorithms.priority_search import HeapMemory, ModuleCandidate
from opto.trainers.algorithms.ucb import BufferEntry, UCBSearch
from opto.trainers.ranking import best_index, is_score, rank_value, score_key
from opto.trainers.stopping import StopConditions

NAN = math.nan


def test_helpers_rank_nan_and_none_below_every_number():
    assert [is_score(v) for v in (1, 0.5, -math.inf, math.inf, NAN, None, True, "1")] == [
        True, True, True, True, False, False, False, False,
    ]  # fmt: skip
    assert best_index([NAN, 0.1, None, 0.3, 0.3]) == 3
    assert best_index([NAN, -math.inf]) == 1
    assert best_index([NAN, None]) is None and best_index([]) is None
    assert sorted([NAN, 2, None, -math.inf], key=score_key, reverse=True)[:2] == [2, -math.inf]
    assert rank_value(NAN) == rank_value(None) == -math.inf and rank_value(3) == 3.0


def test_early_stopping_never_takes_nan_as_the_best():
    stop = StopConditions(patience=2)
    assert stop.observe(NAN) is False and stop.best is None and stop.bad_evaluations == 1
    assert stop.observe(0.1) is True and stop.best == 0.1
    assert stop.observe(NAN) is False and stop.observe(NAN) is False and stop.best == 0.1
    assert stop.check(5) == "no_improvement"


def _candidate(created: int, *scores: float) -> ModuleCandidate:
    return ModuleCandidate(
        update_dict={"x": created}, created=created, rollouts=[{"score": s} for s in scores]
    )


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
def test_priority_search_memory_never_picks_a_nan_candidate(order):
    candidates = [_candidate(0, NAN, 1.0), _candidate(1, 0.2), _candidate(2, None)]
    memory = HeapMemory()
    for index in order:
        memory.push(NAN if index == 0 else 0.5, candidates[index])
    assert memory.best(lambda c: c.mean_score()) is candidates[1]
    assert memory.pop()[1] is not candidates[0]  # a NaN priority pops last


def test_beam_search_keeps_real_scores_first():
    scores = [NAN, 0.1, None, 0.9, NAN]  # None: never validated
    beams = [
        Beam({"i": i}, rollouts=[] if s is None else [{"score": s}]) for i, s in enumerate(scores)
    ]
    kept = BeamSearch.select(None, beams, 3)
    assert [b.paramset["i"] for b in kept] == [3, 1, 0]


def test_ucb_best_entry_and_pull_ignore_nan_means():
    entries = [BufferEntry({"i": 0}), BufferEntry({"i": 1})]
    entries[0].add_scores([NAN])
    entries[1].add_scores([0.2])
    trainer = SimpleNamespace(buffer=entries)
    assert UCBSearch.best_entry(trainer).paramset == {"i": 1}


# -- whole trainers ------------------------------------------------------------------------


def _echo_agent_and_optimizer():
    from opto import trace
    from opto.optimizers.optimizer import Optimizer

    @trace.model
    class Echo:
        def __init__(self):
            self.prompt = trace.node("v0", trainable=True)

        def forward(self, x):
            return self.prompt + ""

    class Next(Optimizer):
        def _step(self, **kwargs):
            (p,) = self.parameters
            return {p: "v" + str(int(p.data[1:]) + 1)}

    agent = Echo()
    return agent, Next(agent.parameters())


def _nan_for_v0_guide():
    from opto.trainers.guide import Guide

    class NaNForV0(Guide):
        """v0 scores NaN (an undefined metric); vN scores N / 10."""

        def get_feedback(self, query, response, reference=None, **kwargs):
            return (NAN if response == "v0" else int(response[1:]) / 10), "more"

    return NaNForV0()


def test_basic_search_prefers_a_real_score_over_a_nan_current_one():
    from opto.trainers import BasicSearchAlgorithm
    from opto.trainers.executors import SerialExecutor

    agent, optimizer = _echo_agent_and_optimizer()
    data = {"inputs": [1, 2], "infos": ["x", "y"]}
    trainer = BasicSearchAlgorithm(agent, optimizer, executor=SerialExecutor())
    result = trainer.train(_nan_for_v0_guide(), data, batch_size=2, num_epochs=1)
    assert result.final_parameters == {"prompt": "v1"}


def test_the_run_best_is_never_a_nan_score():
    from opto.trainers import MinibatchAlgorithm
    from opto.trainers.executors import SerialExecutor

    agent, optimizer = _echo_agent_and_optimizer()
    data = {"inputs": [1, 2], "infos": ["x", "y"]}
    trainer = MinibatchAlgorithm(agent, optimizer, executor=SerialExecutor())
    result = trainer.train(_nan_for_v0_guide(), data, batch_size=2, num_epochs=2, test_dataset=data)
    assert result.best_score == pytest.approx(0.2)
    assert result.best_parameters == {"prompt": "v2"}
