"""`opto.trainer.evaluators`: scoring (implemented in `opto.trainers.evaluators`)."""

from opto.trainers.evaluators import aggregate_vector_scores, evaluate, evaluate_vector

__all__ = ["aggregate_vector_scores", "evaluate", "evaluate_vector"]
