"""`opto.trainer.sampler`: rollouts over a loader (implemented in `opto.trainers.sampler`)."""

from opto.trainers.sampler import BatchRollout as BatchRollout
from opto.trainers.sampler import Rollout as Rollout
from opto.trainers.sampler import RolloutConfig as RolloutConfig
from opto.trainers.sampler import Sampler as Sampler
from opto.trainers.sampler import sample_rollouts as sample_rollouts
from opto.trainers.sampler import standard_forward as standard_forward
