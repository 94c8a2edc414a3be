"""Loads the shared test support (`support.py`) as the module `opto_trainers_test_support`.

Loading by path keeps it importable under `--import-mode=importlib` (the tests directory is
not on `sys.path`) and when the tests run against an installed wheel. A unique module name
keeps it from clashing with other packages' test helpers in one pytest run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from opto.trace.testing import fresh_graph  # noqa: F401  (a pytest fixture)

NAME = "opto_trainers_test_support"

if NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(NAME, Path(__file__).with_name("support.py"))
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[NAME] = _module
    _spec.loader.exec_module(_module)
