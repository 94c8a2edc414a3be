"""`opto.trainer.algorithms.polca`: POLCA (implemented in `opto.trainers.search.polca`)."""

from opto.trainers.search.polca import POLCA, POLCAOptions
from opto.trainers.search.summarizer import Summarizer

__all__ = ["POLCA", "POLCAOptions", "Summarizer"]
