"""opto.trace — trace Python code into a graph and propagate feedback through it.

Only nodes, tracing state and ``bundle`` are imported eagerly; everything else (operators,
propagators, projections, visualization...) loads on first attribute access, so
``import opto.trace`` stays fast and pulls in no optional dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import opto.utils  # noqa: F401  (warns when trace-opt is installed beside opto)
from opto.trace._state import stop_tracing

# Eager on purpose: importing the submodule ``opto.trace.bundle`` binds the package attribute
# ``bundle`` to the module; rebinding it here keeps ``opto.trace.bundle`` the decorator.
from opto.trace.bundle import bundle
from opto.trace.errors import ExecutionError
from opto.trace.nodes import GRAPH, Node, node
from opto.utils.lazy import init_package

if TYPE_CHECKING:
    from opto.trace import broadcast as broadcast
    from opto.trace import containers as containers
    from opto.trace import errors as errors
    from opto.trace import iterators as iterators
    from opto.trace import modules as modules
    from opto.trace import nodes as nodes
    from opto.trace import operators, projections, propagators, utils
    from opto.trace.broadcast import apply_op
    from opto.trace.containers import NodeContainer
    from opto.trace.modules import Model, Module, model

__version__ = "0.1.1"

__all__ = [
    "GRAPH",
    "ExecutionError",
    "Model",
    "Module",
    "Node",
    "NodeContainer",
    "__version__",
    "apply_op",
    "bundle",
    "model",
    "node",
    "operators",
    "projections",
    "propagators",
    "stop_tracing",
    "utils",
]

# public name -> (module, attribute or None for the module itself)
_LAZY = {
    "Module": ("opto.trace.modules", "Module"),
    "model": ("opto.trace.modules", "model"),
    "Model": ("opto.trace.modules", "Model"),
    "NodeContainer": ("opto.trace.containers", "NodeContainer"),
    "apply_op": ("opto.trace.broadcast", "apply_op"),
    "operators": ("opto.trace.operators", None),
    "propagators": ("opto.trace.propagators", None),
    "projections": ("opto.trace.projections", None),
    "utils": ("opto.trace.utils", None),
    "nodes": ("opto.trace.nodes", None),
    "modules": ("opto.trace.modules", None),
    "containers": ("opto.trace.containers", None),
    "broadcast": ("opto.trace.broadcast", None),
    "errors": ("opto.trace.errors", None),
    "iterators": ("opto.trace.iterators", None),
}


__getattr__, __dir__ = init_package(__name__, _LAZY)
