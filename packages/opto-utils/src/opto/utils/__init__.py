"""opto.utils — the layer every opto package talks to the world through.

Submodules: `opto.utils.llm` (LLM protocol and backends), `opto.utils.usage` (usage ledger
and budgets), `opto.utils.cache` (response cache), `opto.utils.testing` (test doubles),
`opto.utils.storage` (run storage). The names below are imported on first access, so
`import opto.utils` costs nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from opto.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from opto.utils.usage import Budget, BudgetExceeded, track_usage

__version__ = "0.1.1"

# A library never prints: without this, warnings (e.g. a retried LLM call) reach stderr through
# Python's last-resort handler when the application configured no logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())

# trace-opt installed beside opto corrupts both; say so, with the fix (one directory listing).
from opto.utils.coinstall import warn_if_trace_opt_installed  # noqa: E402

warn_if_trace_opt_installed()

_EXPORTS = {
    "Budget": "opto.utils.usage",
    "BudgetExceeded": "opto.utils.usage",
    "track_usage": "opto.utils.usage",
}

__all__ = ["Budget", "BudgetExceeded", "__version__", "track_usage"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
