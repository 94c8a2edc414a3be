"""Fixtures shared by the opto-optimizers tests (the reusable code lives in opto.trace.testing)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from opto.trace.testing import fresh_graph  # noqa: F401  (a pytest fixture)

# The CI machine is shared and may be heavily loaded: a property's examples must not fail on
# wall-clock time (Hypothesis's per-example deadline and its "too slow" health check).
settings.register_profile("opto", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("opto")
