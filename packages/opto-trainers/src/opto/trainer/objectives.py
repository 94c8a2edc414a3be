"""`opto.trainer.objectives`: multi-objective scores (implemented in `opto.trainers.objectives`)."""

from opto.trainers import objectives as _objectives
from opto.trainers.objectives import *  # noqa: F403 - re-exports exactly `_objectives.__all__`

__all__ = list(_objectives.__all__)
