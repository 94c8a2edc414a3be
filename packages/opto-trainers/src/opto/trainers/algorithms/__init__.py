"""Training algorithms: the `Trainer` base, the minibatch family and the search algorithms.

`BeamSearch`, `UCBSearch` and `PrioritySearch` are imported on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opto.utils.lazy import lazy_exports

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

if TYPE_CHECKING:
    from ..search.gepa import GEPAAlgorithmBase
    from ..search.gepa_variants import GEPABeamPareto, GEPAUCBSearch
    from .beamsearch import (
        BeamSearch,
        BeamsearchAlgorithm,
        BeamSearchHistory,
        BeamsearchHistoryAlgorithm,
    )
    from .priority_search import PrioritySearch
    from .ucb import UCBSearch, UCBSearchAlgorithm

__all__ = [
    "AlgorithmBase",
    "BasicSearchAlgorithm",
    "BeamSearch",
    "BeamSearchHistory",
    "BeamsearchAlgorithm",
    "BeamsearchHistoryAlgorithm",
    "GEPAAlgorithmBase",
    "GEPABeamPareto",
    "GEPAUCBSearch",
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
    "GEPAAlgorithmBase": "..search.gepa",
    "GEPABeamPareto": "..search.gepa_variants",
    "GEPAUCBSearch": "..search.gepa_variants",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
