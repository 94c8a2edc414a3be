"""`opto.trainer.algorithms.basic_algorithms`: the minibatch family
(implemented in `opto.trainers.algorithms.minibatch`)."""

from opto.trainers.algorithms.minibatch import BasicSearchAlgorithm as BasicSearchAlgorithm
from opto.trainers.algorithms.minibatch import Minibatch as Minibatch
from opto.trainers.algorithms.minibatch import MinibatchAlgorithm as MinibatchAlgorithm
from opto.trainers.algorithms.minibatch import (
    standard_optimization_step as standard_optimization_step,
)
from opto.trainers.evaluation import evaluate as evaluate
from opto.trainers.utils import batchify as batchify
