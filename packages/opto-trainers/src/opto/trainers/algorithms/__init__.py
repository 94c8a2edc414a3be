"""Training algorithms: the `Trainer` base, the minibatch family and the search algorithms.

`BeamSearch`, `UCBSearch` and `PrioritySearch` are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    AlgorithmBase,
    Proposal,
    Trainer,
    TrainOptions,
    TrainResult,
    TrainSession,
    train,
)
from .minibatch import (
    BasicSearchAlgorithm,
    Minibatch,
    MinibatchAlgorithm,
    standard_optimization_step,
)

__all__ = [
    "AlgorithmBase",
    "BasicSearchAlgorithm",
    "BeamSearch",
    "BeamSearchHistory",
    "BeamsearchAlgorithm",
    "BeamsearchHistoryAlgorithm",
    "Minibatch",
    "MinibatchAlgorithm",
    "PrioritySearch",
    "Proposal",
    "TrainOptions",
    "TrainResult",
    "TrainSession",
    "Trainer",
    "UCBSearch",
    "UCBSearchAlgorithm",
    "standard_optimization_step",
    "train",
]

_LAZY = {
    "BeamSearch": ".beamsearch",
    "BeamSearchHistory": ".beamsearch",
    "BeamsearchAlgorithm": ".beamsearch",
    "BeamsearchHistoryAlgorithm": ".beamsearch",
    "UCBSearch": ".ucb",
    "UCBSearchAlgorithm": ".ucb",
    "PrioritySearch": ".priority_search",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
