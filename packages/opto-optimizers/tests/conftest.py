"""Fixtures shared by the opto-optimizers tests (the reusable code lives in opto.trace.testing)."""

from __future__ import annotations

from opto.trace.testing import fresh_graph  # noqa: F401  (a pytest fixture)
