"""BeamSearch and BeamSearchHistory (the reference's beam search algorithms)."""

from __future__ import annotations

import math

import opto_trainers_test_support as S
import pytest
from opto.trainers.algorithms.base import UnknownTrainArgumentError
from opto.trainers.algorithms.beamsearch import (
    BeamSearch,
    BeamsearchAlgorithm,
    BeamSearchHistory,
    BeamsearchHistoryAlgorithm,
)


def test_reaches_the_target_and_returns_the_reference_pair():
    logger = S.RecordingLogger()
    trainer, agent, _ = S.make(BeamSearch, logger=logger)
    result = trainer.train(
        S.TargetGuide(),
        S.DATA,
        batch_size=2,
        max_depth=3,
        beam_width=2,
        num_proposals=2,
        validation_dataset_size=3,
    )
    assert agent.a.data == S.TARGET
    assert result.best_score == 1.0 and result.n_iters == 3
    train_scores, test_score = result
    assert len(train_scores) == 3 and test_score is None
    assert logger.values("Final validation score") == [1.0]
    assert len(logger.values("Best validation score")) == 3


def test_beams_are_bounded_ranked_and_keep_their_parents():
    trainer, _, _ = S.make(BeamSearch)
    trainer.train(
        S.TargetGuide(),
        S.DATA,
        batch_size=2,
        max_depth=1,
        beam_width=3,
        num_proposals=1,
        validation_dataset_size=4,
    )
    # depth 1: the parent (a=1) stays a candidate next to its proposal (a=2).
    assert [b.paramset["a"] for b in trainer.beams] == [2, 1]
    scores = [b.score for b in trainer.beams]
    assert scores == sorted(scores, reverse=True)
    trainer.train(
        S.TargetGuide(),
        S.DATA,
        batch_size=2,
        max_depth=3,
        beam_width=1,
        num_proposals=2,
    )
    assert len(trainer.beams) == 1


def test_test_set_is_evaluated_before_periodically_and_at_the_end():
    logger = S.RecordingLogger()
    trainer, _, _ = S.make(BeamSearch, logger=logger)
    result = trainer.train(
        S.TargetGuide(),
        S.DATA,
        test_dataset=S.DATA,
        test_frequency=2,
        batch_size=2,
        max_depth=3,
        beam_width=2,
    )
    assert [entry["step"] for entry in result.test_scores] == [0, 2, 3]
    assert result.final_test_score == 1.0


def test_validation_subsamples_are_seeded():
    runs = []
    for _ in range(2):
        trainer, _, optimizer = S.make(BeamSearch, seed=7)
        trainer.train(
            S.TargetGuide(),
            S.DATA,
            batch_size=1,
            max_depth=2,
            beam_width=2,
            validation_dataset_size=2,
        )
        runs.append(sorted(text for _, text in optimizer.events))
    assert runs[0] == runs[1]


def test_an_interrupt_mid_validation_leaves_the_agent_at_the_last_completed_depth():
    reference, ref_agent, _ = S.make(BeamSearch)
    kwargs = dict(batch_size=2, beam_width=1, num_proposals=1, validation_dataset_size=2)
    reference.train(S.TargetGuide(), S.DATA, max_depth=1, **kwargs)
    trainer, agent, _ = S.make(BeamSearch)
    # depth 1 validates 2 candidates x 2 examples; the 5th call is in depth 2.
    result = trainer.train(
        S.TargetGuide(),
        S.DATA,
        validate_guide=S.InterruptingGuide(at=5),
        max_depth=3,
        **kwargs,
    )
    assert result.stopped == "interrupted" and result.n_iters == 1
    assert agent.a.data == ref_agent.a.data == 2


def test_num_epochs_bounds_the_depth_when_given():
    trainer, _, _ = S.make(BeamSearch)
    result = trainer.train(
        S.TargetGuide(), S.DATA, batch_size=2, beam_width=1, max_depth=10, num_epochs=1
    )
    assert result.n_iters == 2


def test_bad_arguments_are_rejected():
    trainer, _, _ = S.make(BeamSearch)
    with pytest.raises(UnknownTrainArgumentError):
        trainer.train(S.TargetGuide(), S.DATA, beam_size=2)
    with pytest.raises(ValueError, match="beam_width"):
        trainer.train(S.TargetGuide(), S.DATA, beam_width=0)


def test_history_variant_shows_past_attempts_to_the_optimizer():
    trainer, _, optimizer = S.make(BeamSearchHistory)
    trainer.train(
        S.TargetGuide(),
        S.DATA,
        batch_size=2,
        max_depth=3,
        beam_width=2,
        max_history_size=2,
        validation_dataset_size=4,
    )
    first, *later = [text for _, text in optimizer.events]
    assert "History Context" not in first
    assert all(text.startswith("--- Current Feedback ---") for text in later)
    assert "Attempt 1 (Score: " in later[0]
    assert len(trainer.parameter_history) == 2
    assert all(math.isfinite(score) for _, score in trainer.parameter_history)


def test_reference_names_are_aliases():
    assert BeamsearchAlgorithm is BeamSearch
    assert BeamsearchHistoryAlgorithm is BeamSearchHistory


@pytest.mark.parametrize("cls", [BeamSearch, BeamSearchHistory])
def test_resume_continues_exactly(tmp_path, cls):
    (straight, straight_agent, straight_opt, expected), (second, agent, second_opt, resumed) = (
        S.straight_and_resumed(
            cls,
            tmp_path,
            "max_depth",
            4,
            2,
            batch_size=1,
            beam_width=2,
            num_proposals=2,
            validation_dataset_size=2,
        )
    )
    assert resumed.n_iters == 4
    assert resumed.train_scores == expected.train_scores
    assert agent.a.data == straight_agent.a.data
    assert [b.to_dict() for b in second.beams] == [b.to_dict() for b in straight.beams]
    # the resumed run made only the remaining depths' steps
    assert len(second_opt.events) < len(straight_opt.events)


def test_execution_errors_of_the_agent_become_feedback():
    from opto import trace

    @trace.bundle()
    def checked(a, x):
        if x == 2:
            raise ValueError("x=2 is not allowed")
        return a * x

    @trace.model
    class Crashy:
        def __init__(self):
            self.a = trace.node(1, trainable=True, name="a")

        def forward(self, x):
            return checked(self.a, x)

    agent = Crashy()
    optimizer = S.NudgeOptimizer(agent.parameters(), S.ScriptedLLM(S.nudge))
    trainer = BeamSearch(agent, optimizer, num_threads=4, seed=0)
    result = trainer.train(
        S.TargetGuide(), S.DATA, batch_size=4, max_depth=2, beam_width=1, min_score=0.0
    )
    assert any("x=2 is not allowed" in text for _, text in optimizer.events)
    assert agent.a.data == S.TARGET  # 1 -> 2 -> 3, one step per depth
    assert result.n_iters == 2
