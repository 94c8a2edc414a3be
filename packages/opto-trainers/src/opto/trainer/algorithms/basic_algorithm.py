"""`opto.trainer.algorithms.basic_algorithm`: trace-opt's older name of `basic_algorithms`."""

from opto.trainer.algorithms.basic_algorithms import BasicSearchAlgorithm as BasicSearchAlgorithm
from opto.trainer.algorithms.basic_algorithms import Minibatch as Minibatch
from opto.trainer.algorithms.basic_algorithms import MinibatchAlgorithm as MinibatchAlgorithm
from opto.trainer.algorithms.basic_algorithms import batchify as batchify
from opto.trainer.algorithms.basic_algorithms import evaluate as evaluate
from opto.trainer.algorithms.basic_algorithms import (
    standard_optimization_step as standard_optimization_step,
)
