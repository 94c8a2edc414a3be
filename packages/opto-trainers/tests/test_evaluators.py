"""`evaluate_vector` and `aggregate_vector_scores`: per-metric scores."""

import math

import pytest
from opto import trace
from opto.trainers import Guide, aggregate_vector_scores, evaluate_vector


class TwoMetrics(Guide):
    def get_feedback(self, query, response, reference=None, **kwargs):
        return float(response == reference), ""

    def get_score_dict(self, query, response, reference=None, **kwargs):
        return {"accuracy": float(response == reference), "length": float(len(str(response)))}


class Scalar(Guide):
    def get_feedback(self, query, response, reference=None, **kwargs):
        return float(response == reference), ""


@trace.model
class Echo:
    def __init__(self):
        self.p = trace.node("", trainable=True)

    def forward(self, x):
        return self.p + x


@trace.bundle()
def explode(x):
    raise ValueError("no")


@trace.model
class Broken:
    def __init__(self):
        self.p = trace.node(0, trainable=True)

    def forward(self, x):
        return explode(self.p)


def test_evaluate_vector_values_and_keys():
    scores = evaluate_vector(Echo(), TwoMetrics(), ["a", "bb"], ["a", "x"], num_threads=2)
    assert scores == [{"accuracy": 1.0, "length": 1.0}, {"accuracy": 0.0, "length": 2.0}]


def test_scalar_guides_fall_back_to_a_score_key_and_empty_input():
    assert evaluate_vector(Echo(), Scalar(), ["a"], ["a"]) == [{"score": 1.0}]
    assert evaluate_vector(Echo(), Scalar(), [], []) == []
    with pytest.raises(ValueError, match="one info per input"):
        evaluate_vector(Echo(), Scalar(), ["a"], [])


def test_execution_errors_use_min_score_forms():
    agent, guide = Broken(), Scalar()
    assert evaluate_vector(agent, guide, [1], [1]) == [{"score": -math.inf}]
    assert evaluate_vector(agent, guide, [1], [1], min_score=0) == [{"score": 0}]
    assert evaluate_vector(agent, guide, [1], [1], min_score={"a": -1.0}) == [{"a": -1.0}]


def test_aggregate_vector_scores():
    assert aggregate_vector_scores([]) == {}
    assert aggregate_vector_scores([{"a": 1.0}]) == {"a": 1.0}
    assert aggregate_vector_scores([{"a": 1.0, "b": 2.0}, {"a": 3.0}, None]) == {"a": 2.0, "b": 2.0}
