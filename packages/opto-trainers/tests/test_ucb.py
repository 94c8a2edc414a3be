"""UCBSearch (the reference's UCBSearchAlgorithm)."""

from __future__ import annotations

import math

import opto_trainers_test_support as S
import pytest
from opto.trainers.algorithms.ucb import BufferEntry, UCBSearch, UCBSearchAlgorithm
from opto.trainers.options import UnknownTrainArgumentError


def test_reaches_the_target_with_a_bounded_buffer():
    logger = S.RecordingLogger()
    trainer, agent, _ = S.make(UCBSearch, max_buffer_size=2, logger=logger)
    result = trainer.train(
        S.TargetGuide(),
        S.DATA,
        num_search_iterations=5,
        train_batch_size=2,
        evaluation_batch_size=3,
    )
    assert agent.a.data == S.TARGET
    assert result.best_score == 1.0 and result.n_iters == 5
    assert len(trainer.buffer) == 2
    assert max(logger.values("UCB/buffer_size")) == 2
    assert UCBSearchAlgorithm is UCBSearch


def test_ucb_scores_follow_the_formula_scaled_by_the_score_range():
    trainer, _, _ = S.make(UCBSearch, ucb_exploration_factor=2.0)
    trainer.score_range = (0.0, 10.0)
    trainer._total_samples = 8
    entry = BufferEntry({"a": 1}, rollouts=[{"score": 0.75}] * 4)
    bonus = 2.0 * math.sqrt(math.log(8) / 4) * 10.0
    assert trainer.compute_ucb(entry) == pytest.approx(0.75 + bonus)
    assert trainer.compute_ucb(BufferEntry({"a": 2})) == math.inf
    # the unscored entry is pulled first; ties go to the oldest
    assert trainer.select([entry, BufferEntry({"a": 2})]).paramset == {"a": 2}
    assert trainer.select([entry, BufferEntry({"a": 1}, rollouts=[{"score": 0.75}] * 4)]) is entry


def test_the_pulled_candidate_counts_its_training_rewards():
    trainer, _, _ = S.make(UCBSearch)
    trainer.train(
        S.TargetGuide(),
        S.DATA,
        num_search_iterations=1,
        train_batch_size=2,
        evaluation_batch_size=4,
    )
    parent, child = trainer.buffer
    assert parent.paramset == {"a": 1} and child.paramset == {"a": 2}
    assert parent.num_scored == 4 + 2  # seed validation + the pull's training rollouts
    assert child.num_scored == 4
    assert trainer._total_samples == 10


def test_a_step_without_proposal_adds_no_duplicate():
    trainer, _, optimizer = S.make(UCBSearch)

    def nothing(*args, **kwargs):
        return {}

    optimizer._step = nothing
    result = trainer.train(
        S.TargetGuide(), S.DATA, num_search_iterations=2, evaluation_batch_size=2
    )
    assert len(trainer.buffer) == 1 and result.n_iters == 2


def test_validation_dataset_alias_and_conflicts():
    trainer, _, _ = S.make(UCBSearch)
    val = {"inputs": [5], "infos": [15]}
    trainer.train(S.TargetGuide(), S.DATA, validate_dataset=val, num_search_iterations=1)
    assert trainer.validation_dataset == val and trainer.evaluation_batch_size == 1
    with pytest.raises(UnknownTrainArgumentError, match="alias"):  # as for every alias
        trainer.train(S.TargetGuide(), S.DATA, validate_dataset=val, validation_dataset=val)
    with pytest.raises(ValueError, match="score_range"):
        trainer.train(S.TargetGuide(), S.DATA, score_range=(0, math.inf))


def test_batch_size_is_the_training_batch_when_given():
    trainer, _, optimizer = S.make(UCBSearch)
    trainer.train(S.TargetGuide(), S.DATA, batch_size=3, num_search_iterations=1)
    assert trainer.train_batch_size == 3
    assert optimizer.events[0][1].count("ID [") == 3


def test_resume_continues_exactly(tmp_path):
    (straight, straight_agent, _, expected), (second, agent, _, resumed) = S.straight_and_resumed(
        UCBSearch,
        tmp_path,
        "num_search_iterations",
        5,
        2,
        init={"max_buffer_size": 3},
        train_batch_size=1,
        evaluation_batch_size=2,
    )
    assert resumed.n_iters == 5
    assert resumed.train_scores == expected.train_scores
    assert agent.a.data == straight_agent.a.data
    assert [e.to_dict() for e in second.buffer] == [e.to_dict() for e in straight.buffer]


def test_a_too_large_default_training_batch_names_train_batch_size():
    trainer, _, _ = S.make(UCBSearch)
    tiny = {"inputs": [1], "infos": [3]}
    with pytest.raises(ValueError, match=r"train_batch_size=2 is larger than the training set"):
        trainer.train(S.TargetGuide(), tiny, num_search_iterations=1)
