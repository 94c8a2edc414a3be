"""`opto.trainer.algorithms.classical_algorithms`: the classical searches built on
PrioritySearch (implemented in `opto.trainers.search.classical`)."""

from opto.trainers.search.classical import ParetobasedPS, SequentialSearch, SequentialUpdate

__all__ = ["ParetobasedPS", "SequentialSearch", "SequentialUpdate"]
