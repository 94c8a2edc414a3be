"""`opto.trainer.algorithms.basic_algorithm`: trace-opt's older name of `basic_algorithms`."""

from opto.trainer.algorithms.basic_algorithms import (
    BasicSearchAlgorithm,
    Minibatch,
    MinibatchAlgorithm,
    batchify,
    evaluate,
    standard_optimization_step,
)

__all__ = [
    "BasicSearchAlgorithm",
    "Minibatch",
    "MinibatchAlgorithm",
    "batchify",
    "evaluate",
    "standard_optimization_step",
]
