"""`opto.trainer.utils`: trainer helpers (implemented in `opto.trainers.utils` and
`opto.trainers.batching`)."""

from opto.trainers.batching import async_run, batch_run
from opto.trainers.utils import (
    batchify,
    deepcopy_module,
    get_original_name,
    is_module_copy,
    is_node_copy,
    safe_mean,
)

__all__ = [
    "async_run",
    "batch_run",
    "batchify",
    "deepcopy_module",
    "get_original_name",
    "is_module_copy",
    "is_node_copy",
    "safe_mean",
]
