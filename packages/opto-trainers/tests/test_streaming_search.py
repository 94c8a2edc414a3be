"""StreamingPrioritySearch: no validation pass, proposals scored on the next training batch,
K proposing pairs drawn by a seeded softmax over priorities."""

from __future__ import annotations

import math
import random
import threading
from collections import Counter

import opto_trainers_test_support as S
import pytest
from opto.trainers.search.classical import FixedOptionError
from opto.trainers.search.engine import SearchEngine
from opto.trainers.search.streaming import (
    StreamingPrioritySearch,
    num_proposing_pairs,
    softmax_sample,
)


class CountingGuide(S.TargetGuide):
    """`TargetGuide` that counts its calls per input (across copies)."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.lock = threading.Lock()

    def copy(self) -> CountingGuide:
        return self

    def get_feedback(self, query, response, reference=None, **kwargs):
        with self.lock:
            self.calls[query] += 1
        return super().get_feedback(query, response, reference)


# -- K and the softmax draw --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "k"),
    [
        ((10, 1, 0.5, 20, 30), 5),  # floor(10 * 0.5 / 1)
        ((10, 3, 0.5, 20, 30), 1),  # floor(5 / 3)
        ((10, 20, 0.5, 20, 30), 1),  # at least 1
        ((10, 2, 0.5, 1, 30), 5),  # raised: 1 available + 2 * 2 < 10 -> 2 + ceil(5 / 2)
        ((10, 1, 0.5, 0, 30), 10),  # raised to fill, capped at 10 // 1
        ((10, 1, 1.0, 20, 3), 3),  # capped by the pairs there are
    ],
)
def test_number_of_proposing_pairs(args, k):
    assert num_proposing_pairs(*args) == k


def test_softmax_sample_is_reproducible_with_a_seed_and_distinct():
    priorities = [0.1, 0.5, 0.9, 0.3, 0.7]
    first = softmax_sample(priorities, 3, 1.0, random.Random(7))
    assert first == softmax_sample(priorities, 3, 1.0, random.Random(7))
    assert len(set(first)) == 3
    draws = {tuple(softmax_sample(priorities, 3, 1.0, random.Random(s))) for s in range(20)}
    assert len(draws) > 1  # it is a draw, not a sort


def test_softmax_sample_follows_the_softmax_at_its_temperature():
    rng = random.Random(0)
    priorities, temperature = [0.0, 1.0, 2.0], 0.5
    counts = Counter(softmax_sample(priorities, 1, temperature, rng)[0] for _ in range(6000))
    weights = [math.exp(p / temperature) for p in priorities]
    for index, weight in enumerate(weights):
        assert counts[index] / 6000 == pytest.approx(weight / sum(weights), abs=0.02)
    # a low temperature is greedy
    assert softmax_sample(priorities, 2, 1e-3, rng) == [2, 1]


def test_softmax_sample_draws_infinite_priorities_first_and_unscored_last():
    rng = random.Random(1)
    picks = softmax_sample([None, 0.2, math.inf, -math.inf, 0.4, math.inf], 6, 1.0, rng)
    assert set(picks[:2]) == {2, 5}
    assert set(picks[2:4]) == {1, 4}
    assert set(picks[4:]) == {0, 3}


# -- the search --------------------------------------------------------------------------------


def test_proposals_are_never_validated_but_explored_on_the_next_batch(monkeypatch):
    def no_validation(*args, **kwargs):
        raise AssertionError("StreamingPrioritySearch ran a validation pass")

    monkeypatch.setattr(SearchEngine, "rollouts", no_validation)
    guide = CountingGuide()
    trainer, _, _ = S.make(StreamingPrioritySearch)
    trainer.train(guide, S.DATA, batch_size=2, num_candidates=2, num_proposals=1, num_steps=1)
    # one explorer on one batch of 2: the guide saw only those 2 training rollouts
    assert sum(guide.calls.values()) == 2
    fresh = [c for c in trainer.memory if c.num_rollouts == 0]
    assert len(fresh) == 1  # one (explorer, minibatch) pair, one proposal, unscored
    assert [p for p, c in trainer.memory.items() if c in fresh] == [trainer.max_score]


def test_a_proposal_is_scored_by_the_training_batch_it_explores_next():
    trainer, _, _ = S.make(StreamingPrioritySearch)
    trainer.train(
        S.TargetGuide(), S.DATA, batch_size=2, num_candidates=2, num_proposals=1, num_steps=2
    )
    proposal = next(c for c in trainer.memory if c.paramset == {"a": 2})
    # made in step 1 (unscored), explored in step 2 on 2 training examples
    assert proposal.num_rollouts == 2 and proposal.mean_score() is not None


def test_only_k_pairs_propose():
    trainer, _, optimizer = S.make(StreamingPrioritySearch)
    trainer.train(
        S.TargetGuide(),
        S.DATA,
        batch_size=1,
        num_batches=4,
        num_candidates=4,
        num_proposals=1,
        exploration_ratio=0.5,
        num_steps=1,
    )
    # 1 explorer x 4 minibatches: K = floor(4 * 0.5) = 2, raised to 3 so that the explorer
    # and the proposals fill next step's 4 candidates; only those 3 pairs step
    assert len(optimizer.events) == 3


def test_the_same_seed_draws_the_same_search_and_another_seed_may_not():
    def run(seed):
        # One thread: the optimizer's event list is then in a fixed order (with several
        # threads, concurrent proposal steps append in whatever order they finish).
        trainer, _, optimizer = S.make(StreamingPrioritySearch, seed=seed, num_threads=1)
        result = trainer.train(
            S.TargetGuide(),
            S.DATA,
            batch_size=1,
            num_batches=4,
            num_candidates=6,
            num_proposals=1,
            exploration_temperature=0.2,
            num_steps=4,
        )
        return result.train_scores, [text for _, text in optimizer.events]

    assert run(3) == run(3)
    assert len({repr(run(seed)) for seed in range(4)}) > 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"validate_dataset": S.DATA}, "validate_dataset=None"),
        ({"validate_guide": S.TargetGuide()}, "validate_guide=None"),
    ],
)
def test_a_validation_set_is_an_error_naming_it(kwargs, match):
    trainer, _, _ = S.make(StreamingPrioritySearch)
    with pytest.raises(FixedOptionError, match=match):
        trainer.train(S.TargetGuide(), S.DATA, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"exploration_ratio": 0}, "exploration_ratio"),
        ({"exploration_ratio": 1.5}, "exploration_ratio"),
        ({"exploration_temperature": 0}, "exploration_temperature"),
        ({"exploration_temperature": math.inf}, "exploration_temperature"),
    ],
)
def test_exploration_knobs_are_validated(kwargs, match):
    trainer, _, _ = S.make(StreamingPrioritySearch)
    with pytest.raises(ValueError, match=match):
        trainer.train(S.TargetGuide(), S.DATA, **kwargs)


def test_an_interrupt_mid_step_resumes_to_the_uninterrupted_result(tmp_path):
    pytest.importorskip("sqlalchemy", reason="checkpoints need opto-utils[storage]")
    options = dict(batch_size=1, num_batches=2, num_candidates=4, num_proposals=2, num_steps=5)
    straight, straight_agent, _ = S.make(StreamingPrioritySearch)
    expected = straight.train(S.TargetGuide(), S.DATA, **options)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    first, _, _ = S.make(StreamingPrioritySearch)
    stopped = first.train(S.InterruptingGuide(at=9), S.DATA, storage=url, run_name="r", **options)
    assert stopped.stopped == "interrupted" and 0 < stopped.n_iters < 5
    second, agent, _ = S.make(StreamingPrioritySearch)
    resumed = second.train(
        S.TargetGuide(), S.DATA, storage=url, run_name="r", resume=True, **options
    )
    assert resumed.train_scores == expected.train_scores
    assert agent.a.data == straight_agent.a.data
    assert [c.to_dict() for c in second.memory] == [c.to_dict() for c in straight.memory]


@pytest.mark.parametrize("executor", ["threads", "pickling"])
def test_engine_proposes_only_from_the_selected_jobs(executor):
    from opto.trainers.executors import ThreadExecutor
    from opto.trainers.search.engine import ExplorationJob

    agent = S.Scale(1)
    optimizer = S.NudgeOptimizer(agent.parameters(), S.ScriptedLLM(S.nudge))
    runner = ThreadExecutor(4) if executor == "threads" else S.PicklingExecutor()
    engine = SearchEngine(agent, [optimizer], runner)
    jobs = [
        ExplorationJob(paramset={"a": a}, xs=[1, 2], infos=[3, 6], num_proposals=2) for a in (1, 5)
    ]
    seen = []

    def select(rollouts):
        seen.append([[r.score for r in rows] for rows in rollouts])
        return [1]

    results = engine.explore(jobs, S.TargetGuide(), select=select)
    assert seen == [[[pytest.approx(1 / 3)] * 2] * 2]  # a=1 and a=5 both miss by 2/3
    assert [len(r.rollouts) for r in results] == [2, 2]
    assert [r.proposals for r in results][0] == []
    assert [p.paramset for p in results[1].proposals] == [{"a": 4}, {"a": 4}]
    assert agent.a.data == 1


def test_a_resume_with_other_exploration_knobs_is_refused(tmp_path):
    pytest.importorskip("sqlalchemy", reason="checkpoints need opto-utils[storage]")
    from opto.trainers.resume_check import ResumeMismatchError

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    options = dict(batch_size=2, num_candidates=2, storage=url, run_name="r")
    first, _, _ = S.make(StreamingPrioritySearch)
    first.train(S.TargetGuide(), S.DATA, num_steps=1, **options)
    second, _, _ = S.make(StreamingPrioritySearch)
    with pytest.raises(ResumeMismatchError, match="exploration_temperature"):
        second.train(
            S.TargetGuide(), S.DATA, num_steps=2, resume=True, exploration_temperature=0.1,
            **options,
        )  # fmt: skip
