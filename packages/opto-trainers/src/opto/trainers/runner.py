"""Running one example: the names of `opto.trainers.evaluation` that run a single example.

`opto.trainers.evaluation` holds running one example (`run_example`), many at once
(`run_rollouts`, `evaluate`) and the batch backward; this module keeps the per-example
names importable from here.
"""

from __future__ import annotations

from .evaluation import (
    ErrorBudget,
    Rollout,
    TooManyErrorsError,
    call_agent,
    guarded,
    is_failure,
    judge,
    resolve,
    rollout,
    run_example,
)

__all__ = [
    "ErrorBudget",
    "Rollout",
    "TooManyErrorsError",
    "call_agent",
    "guarded",
    "is_failure",
    "judge",
    "resolve",
    "rollout",
    "run_example",
]
