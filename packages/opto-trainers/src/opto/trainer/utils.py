"""`opto.trainer.utils`: trainer helpers (implemented in `opto.trainers.utils` and
`opto.trainers.batching`)."""

from opto.trainers.batching import async_run, batch_run
from opto.trainers.utils import (
    batchify,
    create_module_from_update_dict,
    deepcopy_module,
    get_original_name,
    is_module_copy,
    is_node_copy,
    remap_update_dict,
    safe_mean,
    set_module_parameters,
)

__all__ = [
    "async_run",
    "batch_run",
    "batchify",
    "create_module_from_update_dict",
    "deepcopy_module",
    "get_original_name",
    "is_module_copy",
    "is_node_copy",
    "remap_update_dict",
    "safe_mean",
    "set_module_parameters",
]
