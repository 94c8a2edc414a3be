"""`opto.trainer.algorithms.basic_algorithms`: the minibatch family
(implemented in `opto.trainers.algorithms.minibatch`)."""

from opto.trainers.algorithms.minibatch import (
    BasicSearchAlgorithm,
    Minibatch,
    MinibatchAlgorithm,
    standard_optimization_step,
)
from opto.trainers.evaluation import evaluate
from opto.trainers.utils import batchify

__all__ = [
    "BasicSearchAlgorithm",
    "Minibatch",
    "MinibatchAlgorithm",
    "batchify",
    "evaluate",
    "standard_optimization_step",
]
