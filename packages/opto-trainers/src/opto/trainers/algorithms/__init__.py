"""Training algorithms: the `Trainer` base, the minibatch family and the search algorithms.

`BeamSearch`, `UCBSearch`, `PrioritySearch` and `POLCA` (with its `Summarizer`) are imported on
first access.
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
    from ..search.classical import ParetobasedPS, SequentialSearch, SequentialUpdate
    from ..search.gepa import GEPAAlgorithmBase
    from ..search.gepa_variants import GEPABeamPareto, GEPAUCBSearch
    from ..search.polca import POLCA, POLCAOptions
    from ..search.streaming import StreamingPrioritySearch
    from ..search.summarizer import Summarizer
    from .beamsearch import (
        BeamSearch,
        BeamsearchAlgorithm,
        BeamSearchHistory,
        BeamsearchHistoryAlgorithm,
    )
    from .priority_search import PrioritySearch
    from .ucb import UCBSearch, UCBSearchAlgorithm

__all__ = [
    "POLCA",
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
    "POLCAOptions",
    "ParetobasedPS",
    "PrioritySearch",
    "Proposal",
    "SequentialSearch",
    "SequentialUpdate",
    "StreamingPrioritySearch",
    "Summarizer",
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
    "POLCA": "..search.polca",
    "POLCAOptions": "..search.polca",
    "Summarizer": "..search.summarizer",
    "ParetobasedPS": "..search.classical",
    "SequentialSearch": "..search.classical",
    "SequentialUpdate": "..search.classical",
    "StreamingPrioritySearch": "..search.streaming",
    "GEPAAlgorithmBase": "..search.gepa",
    "GEPABeamPareto": "..search.gepa_variants",
    "GEPAUCBSearch": "..search.gepa_variants",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
