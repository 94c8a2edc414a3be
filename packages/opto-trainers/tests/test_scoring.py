"""opto.trainers.scoring: how trainers reduce, rank, record and log score dicts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import opto_trainers_test_support as S
import pytest
from opto.trainers.objectives import ObjectiveConfig
from opto.trainers.runner import Rollout
from opto.trainers.scoring import (
    as_objective_config,
    best_of,
    log_metrics,
    mean_score,
    objective_of,
    reward,
    scalar,
    split_scores,
    strict_score,
    top_k_of,
)

WEIGHTED = ObjectiveConfig(mode="weighted", weights={"a": 2.0}, minimize={"c"})


def test_as_objective_config():
    assert as_objective_config(None) is None
    assert as_objective_config(WEIGHTED) is WEIGHTED
    assert as_objective_config({"mode": "pareto"}) == ObjectiveConfig(mode="pareto")
    with pytest.raises(TypeError, match="objective_config must be"):
        as_objective_config(["pareto"])


def test_scalar_follows_the_mode():
    sd = {"a": 1.0, "c": 3.0, "score": 0.5}
    assert scalar(None, WEIGHTED) is None
    assert scalar(0.25, None) == 0.25
    assert scalar(sd, ObjectiveConfig()) == 0.5  # scalar mode: the score key
    assert scalar(sd, WEIGHTED) == 2.0  # only weighted metrics count
    unweighted = ObjectiveConfig(mode="pareto", minimize={"c"})
    assert scalar(sd, unweighted) == 1.0 - 3.0 + 0.5  # weight 1 per metric, c negated
    with pytest.raises(ValueError, match="pass objective_config"):
        scalar(sd, None)


def test_mean_score_and_strict_score():
    assert mean_score([1.0, None, 3.0], None) == 2.0
    assert mean_score([{"a": 1.0}, None, {"a": 3.0, "c": 1.0}], WEIGHTED) == {"a": 2.0, "c": 1.0}
    assert mean_score([0.5], WEIGHTED) == {"score": 0.5}
    assert mean_score([None], WEIGHTED) is None
    assert strict_score([{"a": 1.0}, None], WEIGHTED) is None  # a failure counts against
    assert strict_score([], WEIGHTED) is None
    assert strict_score([{"a": 1.0}, {"a": 2.0}], WEIGHTED) == {"a": 1.5}


def test_reward_of_records_and_rollouts():
    record = {"score": 0.1, "score_dict": {"a": 1.0}}
    assert reward(record, None) == 0.1
    assert reward(record, WEIGHTED) == 2.0
    assert reward({"score": 0.1}, WEIGHTED) == 0.1
    assert reward({"score": None}, WEIGHTED) is None
    assert reward(Rollout(x=1, info=2, score=None, score_dict={"a": 0.5}), WEIGHTED) == 1.0


def test_best_of_and_top_k_of_never_pick_missing_scores():
    assert best_of([], None) is None
    assert best_of([None, math.nan], None) is None
    assert best_of([None, 0.1, 0.3, 0.3], None) == 2
    assert best_of([None, {"a": 0.1}], WEIGHTED) == 1
    assert top_k_of([None, 0.1, math.nan, 0.3], None, 3) == [3, 1, 0]


def test_split_scores_and_log_metrics():
    scores = {"validation": {"a": 1.0, "c": 2.0}, "best": 0.5, "none": None}
    assert split_scores(scores) == {
        "validation/a": 1.0,
        "validation/c": 2.0,
        "best": 0.5,
        "none": None,
    }
    assert split_scores(scores, WEIGHTED)["validation"] == 2.0
    logger = S.RecordingLogger()
    log_metrics(logger, scores, 7)
    assert logger.records == [("validation/a", 1.0, 7), ("validation/c", 2.0, 7)]


def test_objective_of():
    assert objective_of(object()) is None
    options = SimpleNamespace(objective_config=WEIGHTED)
    assert objective_of(SimpleNamespace(options=options)) is WEIGHTED
