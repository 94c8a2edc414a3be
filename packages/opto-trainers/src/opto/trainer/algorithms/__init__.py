"""`opto.trainer.algorithms`: the training algorithms (implemented in
`opto.trainers.algorithms`), including the trace-opt submodules `algorithm`,
`basic_algorithm(s)`, `beamsearch_algorithm`, `UCBsearch` and `priority_search`."""

from __future__ import annotations

import importlib
from typing import Any

import opto.trainer  # noqa: F401  (the deprecation warning)


def __getattr__(name: str) -> Any:
    algorithms = importlib.import_module("opto.trainers.algorithms")
    try:
        value = getattr(algorithms, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    algorithms = importlib.import_module("opto.trainers.algorithms")
    return sorted(set(globals()) | set(algorithms.__all__))
