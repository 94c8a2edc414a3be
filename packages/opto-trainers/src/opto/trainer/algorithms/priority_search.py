"""`opto.trainer.algorithms.priority_search`: PrioritySearch (implemented in
`opto.trainers.algorithms.priority_search`)."""

from opto.trainers.algorithms.priority_search import ModuleCandidate, PrioritySearch

__all__ = ["ModuleCandidate", "PrioritySearch"]
