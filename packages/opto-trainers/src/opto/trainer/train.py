"""`opto.trainer.train`: the one-call training entry point (see `opto.trainers.train`)."""

from opto.trainers.algorithms import train

__all__ = ["train"]
