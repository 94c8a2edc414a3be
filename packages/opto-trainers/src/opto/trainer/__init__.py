"""opto.trainer — the trainer package of trace-opt under its old name (deprecated).

Every name and module path that trace-opt / OpenTrace code imports from `opto.trainer`
(`opto.trainer.loader`, `.guide`, `.utils`, `.algorithms`, `.evaluators`, `.objectives`,
`.sampler`, `.summarizer`, `.loggers`, `.train`) re-exports the implementation in `opto.trainers`, so such code runs
unchanged. Importing it warns once with a `DeprecationWarning`: new code imports
`opto.trainers`.
"""

from __future__ import annotations

import importlib
import warnings

from opto.utils.lazy import lazy_exports

warnings.warn(
    "opto.trainer is the trace-opt name of the trainer package and is deprecated; import "
    "from opto.trainers instead (e.g. `from opto.trainers import DataLoader, train`)",
    DeprecationWarning,
    stacklevel=2,  # the importing code (warnings skips the import machinery's frames)
)

# Bound eagerly so that the `opto.trainer.train` submodule cannot shadow the function.
from opto.trainer.train import train  # noqa: E402

# Every public name of opto.trainers, imported from there on first access.
__getattr__, __dir__ = lazy_exports(
    __name__, {name: "opto.trainers" for name in importlib.import_module("opto.trainers").__all__}
)


__all__ = ["train"]
