"""Typed errors of the run storage: each names the problem and how to fix it."""

from __future__ import annotations

from opto.utils.errors import MissingExtraError, OptoError

__all__ = [
    "InvalidScoreError",
    "MissingDependencyError",
    "NotJSONableError",
    "RunExistsError",
    "RunNotFoundError",
    "SchemaVersionError",
    "StepExistsError",
    "StepNotFoundError",
    "StorageBackendError",
    "StorageClosedError",
    "StorageCorruptError",
    "StorageError",
    "StorageNotFoundError",
    "StorageReadOnlyError",
    "StorageURLError",
]


class StorageError(OptoError):
    """Base class of every error raised by `opto.utils.storage`."""


class MissingDependencyError(StorageError, MissingExtraError):
    """An optional dependency of the storage (SQLAlchemy, psycopg) is not installed."""


class StorageURLError(StorageError, ValueError):
    """The storage URL cannot be parsed or names an unsupported backend."""


class StorageClosedError(StorageError):
    """The storage was used after `close()`."""


class StorageBackendError(StorageError):
    """The database failed (locked too long, unreachable, not a database...).

    The driver's exception is kept as `__cause__`.
    """


class StorageNotFoundError(StorageError, LookupError):
    """The database holds no opto run storage, and creating one was not asked for.

    Raised for a missing SQLite file or a database without opto's tables when opened with
    `create=False` or read-only, and for a database holding only other applications'
    tables unless `create=True`.
    """


class StorageReadOnlyError(StorageError):
    """A write was attempted on a storage opened read-only (explicitly or because the
    database file or its folder is not writable)."""


class StorageCorruptError(StorageError):
    """A stored value cannot be decoded: the database was edited outside opto."""


class SchemaVersionError(StorageError):
    """The database uses a schema version this opto-utils cannot read."""


class RunNotFoundError(StorageError, LookupError):
    """No run with the given name or id exists in the storage."""


class RunExistsError(StorageError):
    """A run with this name already exists (pass `load_if_exists=True` to reuse it)."""


class StepNotFoundError(StorageError, LookupError):
    """The run has no step with the given iteration."""


class StepExistsError(StorageError):
    """The run already has a step with this iteration (pass `replace=True` to overwrite)."""


class NotJSONableError(StorageError, TypeError):
    """A value to store is not JSON-able; `field` names where it was found."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidScoreError(StorageError, TypeError):
    """A score is not a real number or None; `field` names which one."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
