"""Ranking candidates by score, where NaN never wins.

A score ranks when it is a real number: any int or float, including -inf and +inf. None
(no score) and NaN (an undefined score, e.g. 0/0 in a metric) never rank: they sort below
every number, even -inf, so a candidate without a real score is chosen only when no
candidate has one. Ties keep the earlier candidate. Every trainer's best-candidate
selection goes through these helpers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["best_index", "is_score", "rank_value", "score_key"]


def is_score(value: Any) -> bool:
    """Whether `value` is a real number that can rank (not None, NaN or a bool)."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and not math.isnan(float(value))
    )


def score_key(value: Any) -> tuple[int, float]:
    """Sort key, larger is better: real numbers by value, then None/NaN below them all."""
    return (1, float(value)) if is_score(value) else (0, 0.0)


def rank_value(value: Any) -> float:
    """`value` as a float where None/NaN become -inf (for orders that need one number)."""
    return float(value) if is_score(value) else -math.inf


def best_index(scores: Sequence[Any]) -> int | None:
    """Index of the highest real score (the earliest on ties); None if none is real."""
    best: int | None = None
    for index, value in enumerate(scores):
        if is_score(value) and (best is None or float(value) > float(scores[best])):
            best = index
    return best
