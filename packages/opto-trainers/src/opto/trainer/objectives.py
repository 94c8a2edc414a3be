"""`opto.trainer.objectives`: multi-objective scores (implemented in `opto.trainers.objectives`)."""

from opto.trainers.objectives import (
    ObjectiveConfig,
    aggregate_score_dicts,
    apply_minimize,
    dominates,
    normalize_score,
    pareto_rank,
    score_dict_to_scalar,
    select_best,
    select_top_k,
    to_scalar_score,
    to_score_dict,
    weighted_scalarize,
)

__all__ = [
    "ObjectiveConfig",
    "aggregate_score_dicts",
    "apply_minimize",
    "dominates",
    "normalize_score",
    "pareto_rank",
    "score_dict_to_scalar",
    "select_best",
    "select_top_k",
    "to_scalar_score",
    "to_score_dict",
    "weighted_scalarize",
]
