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

Needs SQLAlchemy (`pip install 'opto-utils[storage]'`) and, for PostgreSQL, psycopg
(`pip install 'opto-utils[postgres]'`); both are imported only when a storage is opened.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from opto.utils.imports import require

from .errors import (
    InvalidScoreError,
    MissingDependencyError,
    NotJSONableError,
    RunExistsError,
    RunNotFoundError,
    SchemaVersionError,
    StepExistsError,
    StepNotFoundError,
    StorageBackendError,
    StorageClosedError,
    StorageCorruptError,
    StorageError,
    StorageURLError,
)
from .records import CheckpointRecord, EventRecord, RunRecord, RunStatus, StepRecord

if TYPE_CHECKING:
    from ._storage import Storage

__all__ = [
    "CheckpointRecord",
    "EventRecord",
    "InvalidScoreError",
    "MissingDependencyError",
    "NotJSONableError",
    "RunExistsError",
    "RunNotFoundError",
    "RunRecord",
    "RunStatus",
    "SchemaVersionError",
    "StepExistsError",
    "StepNotFoundError",
    "StepRecord",
    "Storage",
    "StorageBackendError",
    "StorageClosedError",
    "StorageCorruptError",
    "StorageError",
    "StorageURLError",
    "open_storage",
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


def open_storage(url: str | os.PathLike[str] | None = None, *, timeout: float = 60.0) -> Storage:
    """Open (creating if needed) the run storage at `url`; see `Storage`."""
    return _storage_module().Storage(url, timeout=timeout)


def __getattr__(name: str) -> Any:
    if name == "Storage":
        return _storage_module().Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
