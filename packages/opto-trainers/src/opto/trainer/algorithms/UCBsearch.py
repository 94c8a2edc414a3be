"""`opto.trainer.algorithms.UCBsearch`: UCB search (implemented in
`opto.trainers.algorithms.ucb`)."""

from opto.trainers.algorithms.ucb import UCBSearch, UCBSearchAlgorithm

__all__ = ["UCBSearch", "UCBSearchAlgorithm"]
