"""`opto.trainer.sampler`: rollouts over a loader (implemented in `opto.trainers.sampler`)."""

from opto.trainers.sampler import (
    BatchRollout,
    Rollout,
    RolloutConfig,
    Sampler,
    sample_rollouts,
    standard_forward,
)

__all__ = [
    "BatchRollout",
    "Rollout",
    "RolloutConfig",
    "Sampler",
    "sample_rollouts",
    "standard_forward",
]
