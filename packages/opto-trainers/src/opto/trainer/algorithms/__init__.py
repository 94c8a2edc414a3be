"""`opto.trainer.algorithms`: the training algorithms (implemented in
`opto.trainers.algorithms`), including the trace-opt submodules `algorithm`,
`basic_algorithm(s)`, `beamsearch_algorithm`, `UCBsearch`, `priority_search` and `polca`."""

from __future__ import annotations

import importlib

import opto.trainer  # noqa: F401  (the deprecation warning)
from opto.utils.lazy import lazy_exports

# Every public name of opto.trainers.algorithms, imported from there on first access.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        name: "opto.trainers.algorithms"
        for name in importlib.import_module("opto.trainers.algorithms").__all__
    },
)
