"""opto.trainer — the trainer package of trace-opt under its old name (deprecated).

Every name and module path that trace-opt / OpenTrace code imports from `opto.trainer`
(`opto.trainer.loader`, `.guide`, `.utils`, `.algorithms`, `.evaluators`, `.objectives`,
`.sampler`, `.loggers`, `.train`) re-exports the implementation in `opto.trainers`, so such code runs
unchanged. Importing it warns once with a `DeprecationWarning`: new code imports
`opto.trainers`.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

warnings.warn(
    "opto.trainer is the trace-opt name of the trainer package and is deprecated; import "
    "from opto.trainers instead (e.g. `from opto.trainers import DataLoader, train`)",
    DeprecationWarning,
    stacklevel=2,  # the importing code (warnings skips the import machinery's frames)
)

# Bound eagerly so that the `opto.trainer.train` submodule cannot shadow the function.
from opto.trainer.train import train  # noqa: E402


def __getattr__(name: str) -> Any:
    trainers = importlib.import_module("opto.trainers")
    try:
        value = getattr(trainers, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    trainers = importlib.import_module("opto.trainers")
    return sorted(set(globals()) | set(trainers.__all__))


__all__ = ["train"]
