"""opto.utils — the layer every opto package talks to the world through.

Submodules: `opto.utils.llm` (LLM protocol and backends), `opto.utils.usage` (usage ledger
and budgets), `opto.utils.cache` (response cache), `opto.utils.testing` (test doubles),
`opto.utils.storage` (run storage). The names below are imported on first access, so
`import opto.utils` costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opto.utils.coinstall import warn_if_trace_opt_installed
from opto.utils.lazy import init_package

if TYPE_CHECKING:
    from opto.utils.usage import Budget, BudgetExceeded, track_usage

__version__ = "0.1.1"

# trace-opt installed beside opto corrupts both; say so, with the fix (one directory listing).
warn_if_trace_opt_installed()

_EXPORTS = {
    "Budget": "opto.utils.usage",
    "BudgetExceeded": "opto.utils.usage",
    "track_usage": "opto.utils.usage",
}

__all__ = ["Budget", "BudgetExceeded", "__version__", "track_usage"]


__getattr__, __dir__ = init_package(__name__, _EXPORTS)
