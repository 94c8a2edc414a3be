"""Run storage: keep optimization runs as experiments, the way Optuna keeps trials.

Open a storage by URL — `sqlite:///runs.db` (embedded, zero set-up) or
`postgresql://user:password@host/db` (shared by many machines) — and record runs, their
steps (parameters, scores, feedback, usage), checkpoints and events::

    from opto.utils.storage import open_storage

    with open_storage("sqlite:///runs.db") as storage:
        run = storage.create_run("prompt-tuning", config={"lr": 1}, seed=0, load_if_exists=True)
        storage.append_step(run, parameters={"prompt": "..."}, scores={"accuracy": 0.7})
        storage.save_checkpoint(run, {"iteration": 0}, iteration=0)
        best = storage.best_step(run, "accuracy")

Opening never adds opto's tables to a database that holds other applications' tables
unless `create=True`, and a database that is read-only (or opened with `read_only=True`)
can be read. `Storage.url` and every message hide passwords (see `redact_url`);
`export_run` returns standard JSON (`standard_json`: NaN and infinities become null).

Needs SQLAlchemy (`pip install 'opto-utils[storage]'`) and, for PostgreSQL, psycopg
(`pip install 'opto-utils[postgres]'`); both are imported only when a storage is opened.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from opto.utils.imports import require

from . import errors as _errors
from ._default import STORAGE_ENV, default_storage_url, storage_url_of
from ._json import standard_json
from ._redact import redact_url
from .errors import *  # noqa: F403 - re-exports exactly `_errors.__all__`
from .errors import MissingDependencyError
from .records import CheckpointRecord, EventRecord, RunRecord, RunStatus, StepRecord

if TYPE_CHECKING:
    from ._storage import Storage

__all__ = [
    "STORAGE_ENV",
    "CheckpointRecord",
    "EventRecord",
    "RunRecord",
    "RunStatus",
    "StepRecord",
    "Storage",
    "default_storage_url",
    "open_storage",
    "redact_url",
    "standard_json",
    "storage_url_of",
    *_errors.__all__,
]


def _storage_module() -> Any:
    """Import the SQLAlchemy-backed implementation, or explain how to install it."""
    require(
        "sqlalchemy",
        "storage",
        purpose="opto.utils.storage (use the 'postgres' extra for PostgreSQL)",
        error=MissingDependencyError,
    )
    return importlib.import_module("._storage", __name__)


def open_storage(
    url: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 60.0,
    create: bool | None = None,
    read_only: bool = False,
) -> Storage:
    """Open the run storage at `url`; see `Storage` for `create` and `read_only`."""
    return _storage_module().Storage(url, timeout=timeout, create=create, read_only=read_only)


def __getattr__(name: str) -> Any:
    if name == "Storage":
        return _storage_module().Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
