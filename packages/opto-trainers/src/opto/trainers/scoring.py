"""Scores in trainers: numbers or score dicts, compared under an optional `ObjectiveConfig`.

Every trainer accepts `objective_config=`. Without one, scores are numbers and the
highest real number wins (`opto.trainers.ranking`: None and NaN never win). With one,
candidates are scored with the guide's score dicts (`Guide.get_score_dict`), averaged per
metric, and chosen by `objectives.select_best` / `select_top_k`; a single number is still
derived for logs, patience and the step record (`scalar`). Step records and loggers keep
every metric: a score dict `name -> {metric: value}` is recorded as `name/metric`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .objectives import (
    ObjectiveConfig,
    aggregate_score_dicts,
    apply_minimize,
    score_dict_to_scalar,
    select_best,
    select_top_k,
    weighted_scalarize,
)
from .utils import safe_mean

__all__ = [
    "as_objective_config",
    "best_of",
    "log_metrics",
    "mean_score",
    "objective_of",
    "reward",
    "scalar",
    "split_scores",
    "strict_score",
    "top_k_of",
]


def as_objective_config(value: Any) -> ObjectiveConfig | None:
    """`value` as an `ObjectiveConfig`: None, a config, or a dict of its fields."""
    if value is None or isinstance(value, ObjectiveConfig):
        return value
    if isinstance(value, Mapping):
        return ObjectiveConfig.from_dict(value)
    raise TypeError(
        "objective_config must be an opto.trainers.objectives.ObjectiveConfig (or a dict of "
        f"its fields), not {type(value).__name__}"
    )


def objective_of(trainer: Any) -> ObjectiveConfig | None:
    """The `objective_config` of the trainer's current `train` call (None outside one)."""
    options = getattr(trainer, "options", None)
    return None if options is None else options.objective_config


def mean_score(scores: Sequence[Any], config: ObjectiveConfig | None) -> Any:
    """The mean of one candidate's scores: per metric (a dict) with a config, else the
    mean of the numbers. None when nothing scored."""
    if config is None:
        return safe_mean(scores)
    dicts = [s if isinstance(s, Mapping) else None if s is None else {"score": s} for s in scores]
    return aggregate_score_dicts(dicts) or None


def reward(record: Any, config: ObjectiveConfig | None) -> float | None:
    """A rollout's scalar score (a `Rollout` or its `to_dict()`): its score, or under
    `config` its score dict reduced by `scalar` (None when it has neither)."""
    get = record.get if isinstance(record, Mapping) else lambda k: getattr(record, k, None)
    if config is not None and get("score_dict") is not None:
        return scalar(get("score_dict"), config)
    score = get("score")
    return None if score is None else scalar(score, config)


def strict_score(scores: Sequence[Any], config: ObjectiveConfig) -> dict[str, float] | None:
    """The per-metric mean of one candidate's score dicts for ranking; None (never wins)
    when any rollout has no score, so a failure counts against the candidate."""
    if not scores or any(s is None for s in scores):
        return None
    return mean_score(scores, config)


def scalar(score: Any, config: ObjectiveConfig | None) -> float | None:
    """One number for `score` (None stays None): a dict is reduced by `config` in its
    mode ("scalar": `scalarize_dict`; "weighted" and "pareto": the weighted sum)."""
    if score is None:
        return None
    if not isinstance(score, Mapping):
        return float(score)
    if config is None:
        raise ValueError(
            f"the guide scored with a dict of metrics ({sorted(score)}); pass "
            "objective_config=ObjectiveConfig(...) to say how to compare them"
        )
    if config.mode == "scalar":
        return score_dict_to_scalar(score, config)
    signed = apply_minimize(score, config.minimize)
    weights = config.weights or dict.fromkeys(signed, 1.0)
    return weighted_scalarize(signed, weights, config.missing_value)


def best_of(scores: Sequence[Any], config: ObjectiveConfig | None) -> int | None:
    """Index of the best score (`objectives.select_best`; ties: the earliest); None if
    no score is real."""
    if not scores:
        return None
    index = select_best([(s, i) for i, s in enumerate(scores)], config)
    return index if _real(scores[index]) else None


def top_k_of(scores: Sequence[Any], config: ObjectiveConfig | None, k: int) -> list[int]:
    """Indices of the `k` best scores, best first (`objectives.select_top_k`); scores that
    are None or NaN come last."""
    return select_top_k([(s, i) for i, s in enumerate(scores)], config, k)


def _real(score: Any) -> bool:
    if score is None:
        return False
    if isinstance(score, Mapping):
        return True
    return not math.isnan(float(score))


def split_scores(
    scores: Mapping[str, Any], config: ObjectiveConfig | None = None
) -> dict[str, Any]:
    """Named scores for a step record: numbers as they are; a score dict `name -> {m: v}`
    becomes `name/m` entries, plus `name` itself reduced by `config` when one is given."""
    out: dict[str, Any] = {}
    for name, value in scores.items():
        if isinstance(value, Mapping):
            if config is not None:
                out[name] = scalar(value, config)
            for metric, number in value.items():
                out[f"{name}/{metric}"] = number
        else:
            out[name] = value
    return out


def log_metrics(logger: Any, scores: Mapping[str, Any], step: int) -> None:
    """Log every metric of the score dicts among `scores` as `name/metric` at `step`."""
    for name, value in scores.items():
        if isinstance(value, Mapping):
            for metric, number in value.items():
                logger.log(f"{name}/{metric}", number, step)
