"""`opto.trainer.algorithms.beamsearch_algorithm`: beam search
(implemented in `opto.trainers.algorithms.beamsearch`)."""

from opto.trainers.algorithms.beamsearch import (
    BeamSearch,
    BeamsearchAlgorithm,
    BeamSearchHistory,
    BeamsearchHistoryAlgorithm,
)

__all__ = ["BeamSearch", "BeamSearchHistory", "BeamsearchAlgorithm", "BeamsearchHistoryAlgorithm"]
