"""Turn a storage URL into a configured SQLAlchemy engine (SQLite or PostgreSQL).

SQLite gets WAL journaling (readers never block the writer), a busy timeout, foreign keys,
and explicit `BEGIN IMMEDIATE` for write transactions so concurrent writers queue on the
lock instead of failing when a read transaction tries to upgrade. PostgreSQL goes through
psycopg 3. Pooled connections are never reused across `fork()`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from opto.utils.imports import install_hint
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import StaticPool

from .errors import MissingDependencyError, StorageURLError

__all__ = ["BEGIN_MODE", "create_engine", "is_memory", "parse_url"]

#: Connection execution option read by the SQLite "begin" hook: "IMMEDIATE" or "DEFERRED".
BEGIN_MODE = "opto_sqlite_begin"

_EXAMPLES = "'sqlite:///runs.db' or 'postgresql://user:password@host:5432/dbname'"
_POSTGRES_HINT = f"PostgreSQL storage needs the psycopg driver: {install_hint('postgres')}"


def parse_url(url: str | os.PathLike[str]) -> URL:
    """Parse and normalize a storage URL; a filesystem path means a SQLite file.

    A SQLite path starting with `~` is expanded to the user's home folder.
    """
    if isinstance(url, os.PathLike):
        return _expand_home(sa.engine.make_url(f"sqlite:///{os.fspath(url)}"))
    if not isinstance(url, str) or not url:
        raise StorageURLError(f"a storage URL must be a non-empty string, such as {_EXAMPLES}")
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StorageURLError(
            f"{url!r} is not a storage URL; use {_EXAMPLES} (a SQLite file path needs "
            f"the 'sqlite:///' prefix, e.g. 'sqlite:///{url}')"
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql":
        return parsed.set(drivername=f"postgresql+{driver or 'psycopg'}")
    if backend == "sqlite":
        return _expand_home(parsed)
    raise StorageURLError(
        f"unsupported storage backend {backend!r} in "
        f"{parsed.render_as_string(hide_password=True)!r}; use {_EXAMPLES}"
    )


def _expand_home(url: URL) -> URL:
    """`sqlite:///~/runs.db` → the file in the home folder (SQLite itself does not expand)."""
    if url.database and url.database.startswith("~"):
        return url.set(database=os.path.expanduser(url.database))
    return url


def is_memory(url: URL) -> bool:
    """Whether `url` is an in-memory SQLite database (one per storage object)."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine(url: URL, *, timeout: float) -> Engine:
    """Create the engine for `url`; `timeout` is how long a SQLite writer waits for the lock."""
    if url.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, timeout)
    else:
        try:
            engine = sa.create_engine(url, pool_pre_ping=True)
        except ImportError as exc:
            raise MissingDependencyError(
                _POSTGRES_HINT, module="psycopg", extra="postgres", package="opto-utils"
            ) from exc
    _never_share_across_fork(engine)
    return engine


def _sqlite_engine(url: URL, timeout: float) -> Engine:
    memory = is_memory(url)
    options: dict[str, Any] = {"connect_args": {"timeout": timeout, "check_same_thread": False}}
    if memory:
        options["poolclass"] = StaticPool
    else:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the sqlite3 module (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get(BEGIN_MODE, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _never_share_across_fork(engine: Engine) -> None:
    """Make a forked child open its own connections instead of sharing the parent's sockets."""

    @event.listens_for(engine, "connect")
    def _remember_pid(_dbapi_connection: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _check_pid(_dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise sa.exc.DisconnectionError("connection was opened by another process")
