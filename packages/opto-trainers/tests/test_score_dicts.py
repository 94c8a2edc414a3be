"""Score dicts from guides: `Guide.get_score_dict`, rollouts and `evaluate(score_dicts=True)`."""

from __future__ import annotations

import threading

import pytest
from opto import trace
from opto.trace import bundle, node
from opto.trainers import ExactMatchGuide, Guide, evaluate
from opto.trainers.evaluation import run_rollouts
from opto.trainers.guide import GuideError
from opto.trainers.objectives import aggregate_score_dicts


@bundle()
def divide(a, b):
    """Divide a by b."""
    return a / b


@trace.model
class Divider:
    def __init__(self):
        self.k = node(12, trainable=True)

    def forward(self, x):
        return divide(self.k, x)


class DictScore(Guide):
    """A guide whose get_feedback returns a dict as its score."""

    def get_feedback(self, query, response, reference=None, **kwargs):
        return {"exact": float(response == reference), "size": float(response)}, "fb"


class Metrics(Guide):
    """A scalar guide that also reports several metrics; counts its calls."""

    def __init__(self):
        self.calls = {"feedback": 0, "score_dict": 0}
        self.lock = threading.Lock()

    def get_feedback(self, query, response, reference=None, **kwargs):
        with self.lock:
            self.calls["feedback"] += 1
        return float(response == reference), "fb"

    def get_score_dict(self, query, response, reference=None, **kwargs):
        with self.lock:
            self.calls["score_dict"] += 1
        return {"exact": float(response == reference), "size": float(response)}

    def copy(self):
        return self  # share the counter across the per-rollout copies


def test_default_get_score_dict_wraps_the_scalar():
    assert ExactMatchGuide().get_score_dict("q", 1, 1) == {"score": 1.0}


def test_get_score_dict_passes_a_dict_score_through():
    assert DictScore().get_score_dict("q", 2, 2) == {"exact": 1.0, "size": 2.0}


def test_get_score_dict_rejects_non_numbers():
    class Words(Guide):
        def get_feedback(self, query, response, reference=None, **kwargs):
            return "good", "fb"

    class Empty(Guide):
        def get_feedback(self, query, response, reference=None, **kwargs):
            return {}, "fb"

    with pytest.raises(GuideError, match="metric 'score' as 'good'"):
        Words().get_score_dict("q", 1, 1)
    with pytest.raises(GuideError, match="empty score dict"):
        Empty().get_score_dict("q", 1, 1)


def test_evaluate_returns_score_dicts_when_asked():
    inputs, infos = [1, 2, 3], [12.0, 6.0, 5.0]
    assert evaluate(Divider(), ExactMatchGuide(), inputs, infos) == [1.0, 1.0, 0.0]
    dicts = evaluate(Divider(), ExactMatchGuide(), inputs, infos, score_dicts=True)
    assert dicts == [{"score": 1.0}, {"score": 1.0}, {"score": 0.0}]
    multi = evaluate(Divider(), DictScore(), inputs, infos, score_dicts=True)
    assert multi == [
        {"exact": 1.0, "size": 12.0},
        {"exact": 1.0, "size": 6.0},
        {"exact": 0.0, "size": 4.0},
    ]
    assert aggregate_score_dicts(multi) == {"exact": pytest.approx(2 / 3), "size": 22 / 3}
    repeated = evaluate(Divider(), DictScore(), [2], [6.0], num_samples=2, score_dicts=True)
    assert repeated == [[{"exact": 1.0, "size": 6.0}] * 2]


def test_evaluate_score_dicts_ask_an_overriding_guide_once_per_example():
    guide = Metrics()
    dicts = evaluate(Divider(), guide, [1, 2], [12.0, 0.0], score_dicts=True)
    assert dicts == [{"exact": 1.0, "size": 12.0}, {"exact": 0.0, "size": 6.0}]
    assert guide.calls == {"feedback": 0, "score_dict": 2}


def test_training_rollouts_carry_feedback_and_score_dicts():
    guide = Metrics()
    (r,) = run_rollouts([Divider()], [2], [6.0], guide, score_dicts=True)
    assert (r.score, r.feedback) == (1.0, "fb")
    assert r.score_dict == {"exact": 1.0, "size": 6.0}
    assert r.to_dict()["score_dict"] == {"exact": 1.0, "size": 6.0}
    assert guide.calls == {"feedback": 1, "score_dict": 1}
    (plain,) = run_rollouts([Divider()], [2], [6.0], guide)
    assert plain.score_dict is None and "score_dict" not in plain.to_dict()


def test_failed_examples_score_dicts_follow_min_score():
    # divide by zero: an ExecutionError of the agent
    assert evaluate(Divider(), DictScore(), [0], [1.0], score_dicts=True) == [None]
    assert evaluate(Divider(), DictScore(), [0], [1.0], min_score=0, score_dicts=True) == [
        {"score": 0.0}
    ]
    floor = {"exact": 0.0, "size": -1.0}
    assert evaluate(Divider(), DictScore(), [0], [1.0], min_score=floor, score_dicts=True) == [
        floor
    ]

    class Broken(Guide):
        def get_feedback(self, query, response, reference=None, **kwargs):
            raise ConnectionError("judge down")

    assert evaluate(Divider(), Broken(), [1], [1.0], min_score=0.5, score_dicts=True) == [
        {"score": 0.5}
    ]


def test_a_guide_returning_a_non_dict_from_get_score_dict_is_a_guide_error():
    class Bad(Guide):
        def get_feedback(self, query, response, reference=None, **kwargs):
            return 1.0, "fb"

        def get_score_dict(self, query, response, reference=None, **kwargs):
            return 1.0

    with pytest.raises(GuideError, match=r"get_score_dict returned 1\.0"):
        evaluate(Divider(), Bad(), [1], [1.0], score_dicts=True)
