"""`opto.trainer.algorithms.algorithm`: the trainer base (`opto.trainers.Trainer`)."""

from opto.trainers.algorithms.base import AlgorithmBase, Trainer

#: The abstract base of trace-opt; every opto trainer derives from `Trainer`.
AbstractAlgorithm = Trainer

__all__ = ["AbstractAlgorithm", "AlgorithmBase", "Trainer"]
