"""SequentialUpdate, SequentialSearch and ParetobasedPS: their fixed knobs, their one-candidate
memory, and the per-input Pareto frontier."""

from __future__ import annotations

import opto_trainers_test_support as S
import pytest
from opto.trainers.search.candidate import Candidate
from opto.trainers.search.classical import (
    FixedOptionError,
    ParetobasedPS,
    SequentialSearch,
    SequentialUpdate,
    input_key,
    pareto_frontier,
    per_input_means,
)
from opto.utils.testing import ScriptedLLM

# -- fixed knobs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "knob"),
    [
        (SequentialUpdate, {"num_candidates": 3}, "num_candidates=1"),
        (SequentialUpdate, {"num_proposals": 2}, "num_proposals=1"),
        (SequentialUpdate, {"memory_size": 4}, r"long_term_memory_size=1 .*alias memory_size"),
        (SequentialUpdate, {"long_term_memory_size": None}, "long_term_memory_size=1"),
        (SequentialUpdate, {"memory_update_frequency": 2}, "memory_update_frequency=0"),
        (SequentialSearch, {"num_candidates": 2}, "num_candidates=1"),
        (SequentialSearch, {"short_term_memory_size": 3}, "short_term_memory_size=None"),
    ],
)
def test_a_conflicting_fixed_knob_is_an_error_naming_it(cls, kwargs, knob):
    trainer, agent, _ = S.make(cls)
    with pytest.raises(FixedOptionError, match=knob):
        trainer.train(S.TargetGuide(), S.DATA, batch_size=2, **kwargs)
    assert agent.a.data == 1


def test_the_fixed_values_themselves_and_free_knobs_are_accepted():
    trainer, _, optimizer = S.make(SequentialSearch)
    result = trainer.train(
        S.TargetGuide(), S.DATA, batch_size=2, num_candidates=1, memory_size=1, num_proposals=3,
        num_steps=2,
    )  # fmt: skip
    assert result.n_iters == 2
    assert len(optimizer.events) == 6  # num_proposals is SequentialSearch's own


# -- the one-candidate memory ------------------------------------------------------------------


def test_sequential_update_keeps_one_candidate_and_makes_one_proposal_per_step():
    logger = S.RecordingLogger()
    trainer, agent, optimizer = S.make(SequentialUpdate, logger=logger)
    trainer.train(S.TargetGuide(), S.DATA, batch_size=2, num_steps=5)
    assert logger.values("Update/memory_size") == [1] * 5
    assert len(optimizer.events) == 5
    assert len(trainer.memory) == 1 and agent.a.data == S.TARGET


def test_sequential_update_rejects_a_worse_proposal():
    # The optimizer always proposes a = 0 (score 0): the incumbent a = 1 stays.
    agent = S.Scale(1)
    optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(default="0"))
    trainer = SequentialUpdate(agent, optimizer, num_threads=2, seed=0)
    trainer.train(S.TargetGuide(), S.DATA, batch_size=2, num_steps=3)
    (kept,) = list(trainer.memory)
    assert kept.paramset == {"a": 1} and agent.a.data == 1
    assert kept.num_rollouts == 6  # 3 training batches of 2


def test_sequential_search_judges_proposals_on_the_validation_set():
    val = {"inputs": [5, 6], "infos": [15, 18]}
    guide = S.TargetGuide()
    trainer, _, optimizer = S.make(SequentialSearch)
    trainer.train(guide, S.DATA, validate_dataset=val, batch_size=2, num_proposals=2, num_steps=1)
    (kept,) = list(trainer.memory)
    # proposals a=2 (one distinct value): validated on 5, 6; the incumbent re-scored there too
    assert kept.paramset == {"a": 2}
    assert kept.num_rollouts == 2 and len(optimizer.events) == 2


# -- the Pareto frontier -----------------------------------------------------------------------


def scored(created: int, **per_input: list[float]) -> Candidate:
    c = Candidate({"a": created}, created=created)
    c.add_rollouts([{"x": x, "score": s} for x, scores in per_input.items() for s in scores])
    return c


def test_frontier_keeps_per_input_winners_and_drops_strict_subsets():
    a = scored(1, x1=[1.0], x2=[1.0], x3=[0.0])  # best on x1, x2
    b = scored(2, x1=[0.2], x2=[1.0], x3=[0.1])  # best on x2 only: a strict subset of a's
    c = scored(3, x1=[0.0], x2=[0.0], x3=[0.9])  # best on x3
    d = scored(4, x1=[0.5], x2=[0.5], x3=[0.5])  # best nowhere, though its mean beats c's
    fresh = Candidate({"a": 9}, created=9)  # never scored: explores first
    assert pareto_frontier([d, c, b, a, fresh]) == [fresh, a, c]


def test_frontier_uses_per_input_means_and_ignores_inputs_a_candidate_never_saw():
    # Unseen inputs are not a 0 score (c would then win x1 and x2 over negative scores);
    # an input only one candidate saw (c's x3) tells nothing apart.
    a = scored(1, x1=[-1.0, -3.0], x2=[-5.0])
    b = scored(2, x1=[-2.5], x2=[-0.5])
    c = scored(3, x3=[-9.0])
    assert per_input_means(a) == {input_key("x1"): -2.0, input_key("x2"): -5.0}
    assert pareto_frontier([a, b, c]) == [b, a]  # by mean score


def test_frontier_ties_keep_every_winner_newest_first():
    a, b = scored(1, x1=[1.0], x2=[0.0]), scored(2, x1=[1.0], x2=[0.0])
    c = scored(3, x1=[0.0], x2=[0.4])
    assert pareto_frontier([a, b, c]) == [b, a, c]  # a and b tie: the newer first


def test_inputs_where_all_tie_are_skipped():
    # The old candidate saw more inputs; on a plateau (all 0) it must not win by coverage.
    old = scored(1, x1=[0.0], x2=[0.0], x3=[0.0])
    new = scored(2, x3=[0.0])
    assert pareto_frontier([old, new]) == []


def test_pareto_search_moves_on_along_a_plateau():
    # From a = -3 every candidate scores 0 until a = 1: all tie on every input, and the
    # newest must explore, or the search keeps re-exploring its first candidates.
    trainer, agent, _ = S.make(ParetobasedPS, a=-3)
    trainer.train(
        S.TargetGuide(), S.DATA, batch_size=1, num_batches=2, num_candidates=2, num_steps=10
    )
    assert agent.a.data == S.TARGET


def test_unhashable_and_long_inputs_have_short_stable_keys():
    assert input_key({"q": [1, 2]}) == input_key({"q": [1, 2]}) != input_key({"q": [2, 1]})
    assert input_key({"b": 1, "a": 2}) == input_key({"a": 2, "b": 1})
    assert len(input_key("x" * 10_000)) == 24 and input_key(1) != input_key("1")


def test_pareto_search_explores_the_frontier_and_logs_its_size():
    logger = S.RecordingLogger()
    trainer, _, _ = S.make(ParetobasedPS, logger=logger)
    trainer.train(S.TargetGuide(), S.DATA, batch_size=1, num_candidates=3, num_steps=1)
    trainer.memory.reset()
    a = scored(10, **{"1": [1.0], "2": [0.0]})
    b = scored(11, **{"1": [0.0], "2": [1.0]})
    c = scored(12, **{"1": [0.5], "2": [0.5]})
    for candidate in (a, b, c):
        trainer.memory.push(trainer.compute_exploration_priority(candidate), candidate)
    explorers = trainer.explore()
    assert explorers == [b, a] and list(trainer.memory) == [c]  # equal means: newest first
    trainer.num_candidates = 1
    trainer.memory.push(1.0, a)
    trainer.memory.push(1.0, b)
    assert trainer.explore() == [b]  # the frontier (equal means: newest first), cut to 1
    assert logger.values("Update/num_pareto_candidates") == [1, 2, 2]


def test_pareto_memory_keeps_each_rollouts_input():
    trainer, _, _ = S.make(ParetobasedPS)
    trainer.train(S.TargetGuide(), S.DATA, batch_size=2, num_candidates=2, num_steps=2)
    rows = [row for c in trainer.long_term_memory for row in c.rollouts]
    assert rows and all(set(row) <= {"score", "input_key"} for row in rows)
    assert {row["input_key"] for row in rows} <= {input_key(x) for x in S.DATA["inputs"]}
