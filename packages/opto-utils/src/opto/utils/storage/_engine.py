"""Turn a storage URL into a configured SQLAlchemy engine (SQLite or PostgreSQL).

SQLite gets WAL journaling (readers never block the writer), a busy timeout, foreign keys,
and explicit `BEGIN IMMEDIATE` for write transactions so concurrent writers queue on the
lock instead of failing when a read transaction tries to upgrade. A SQLite file is opened
read-only (SQLite's `mode=ro`) when asked, or when the file or its folder is not writable;
in a read-only folder without a write-ahead log it is opened `immutable` (nothing can be
writing it). PostgreSQL goes through psycopg 3. Pooled connections are never reused across
`fork()`.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

import sqlalchemy as sa
from opto.utils.imports import install_hint
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import StaticPool

from ._redact import redact_url
from .errors import MissingDependencyError, StorageNotFoundError, StorageURLError

__all__ = [
    "BEGIN_MODE",
    "Access",
    "create_engine",
    "decide_access",
    "is_memory",
    "parse_url",
    "sqlite_path",
    "use_wal",
]

#: Connection execution option read by the SQLite "begin" hook: "IMMEDIATE" or "DEFERRED".
BEGIN_MODE = "opto_sqlite_begin"

_EXAMPLES = "'sqlite:///runs.db' or 'postgresql://user:password@host:5432/dbname'"
_POSTGRES_HINT = f"PostgreSQL storage needs the psycopg driver: {install_hint('postgres')}"
# SQLite URI options opto interprets itself (SQLAlchemy would pass them on only with uri=true).
_SQLITE_MODES = ("ro", "rw", "rwc")
_TRUE = ("1", "true", "yes", "on")


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
            f"{redact_url(url)!r} is not a storage URL; use {_EXAMPLES} (a SQLite file path "
            f"needs the 'sqlite:///' prefix, e.g. 'sqlite:///{redact_url(url)}')"
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql":
        return parsed.set(drivername=f"postgresql+{driver or 'psycopg'}")
    if backend == "sqlite":
        return _expand_home(_sqlite_options(parsed))
    raise StorageURLError(
        f"unsupported storage backend {backend!r} in {redact_url(url)!r}; use {_EXAMPLES}"
    )


def _sqlite_options(url: URL) -> URL:
    """Accept SQLite URI form (`sqlite:///file:runs.db?mode=ro&uri=true`) as a plain path
    plus the `mode`/`immutable` options, which opto applies itself."""
    query = dict(url.query)
    uri = str(query.pop("uri", "")).lower() in _TRUE
    database = url.database or ""
    if uri and database.startswith("file:"):
        rest = database[len("file:") :]
        if rest.startswith("//"):
            authority, _, rest = rest[2:].partition("/")
            if authority not in ("", "localhost"):
                raise StorageURLError(
                    f"the SQLite URI {database!r} names the host {authority!r}; SQLite opens "
                    "local files only: use 'sqlite:///path/to/runs.db'"
                )
            rest = "/" + rest
        database = unquote(rest)
    mode = query.get("mode")
    if mode is not None and mode not in _SQLITE_MODES:
        raise StorageURLError(
            f"unsupported SQLite mode {mode!r}; use mode=ro to open the file read-only"
        )
    return url.set(database=database, query=query)


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL; None for PostgreSQL and in-memory databases."""
    if url.get_backend_name() != "sqlite" or is_memory(url):
        return None
    return Path(str(url.database))


class Access(NamedTuple):
    """How a storage opens its database: `reason` says why it is read-only (None if not)."""

    read_only: bool
    reason: str | None
    immutable: bool = False


def decide_access(url: URL, *, read_only: bool, create: bool | None, where: str) -> Access:
    """Whether to open `url` read-only, and why; refuses a missing file it may not create."""
    if read_only and create:
        raise ValueError("create=True asks to write the database; it cannot be read_only too")
    reason = "opened with read_only=True" if read_only else None
    if url.get_backend_name() != "sqlite":
        return Access(read_only, reason)
    query = url.query
    if str(query.get("immutable", "")).lower() in _TRUE:
        reason = "the URL sets immutable=1"
    elif query.get("mode") == "ro":
        reason = "the URL sets mode=ro"
    path = sqlite_path(url)
    if path is None:
        if reason is not None:
            raise ValueError(
                "an in-memory storage starts empty, so it cannot be read-only; open a file"
            )
        return Access(False, None)
    if not path.exists():
        if reason is not None or create is False:
            raise StorageNotFoundError(
                f"no run storage at {where}: {path} does not exist (and this storage may not "
                "create it); point at the file your runs were written to"
            )
        return Access(False, None)
    folder = path.absolute().parent
    folder_writable = os.access(folder, os.W_OK | os.X_OK)
    if reason is None and not os.access(path, os.W_OK):
        reason = f"{path} is not writable by this user"
    elif reason is None and not folder_writable:
        reason = (
            f"its folder {folder} is not writable by this user (SQLite keeps its journal "
            "files there)"
        )
    if reason is None:
        return Access(False, None)
    wal = path.with_name(path.name + "-wal")
    immutable = "immutable" in reason or (
        not folder_writable and (not wal.exists() or wal.stat().st_size == 0)
    )
    return Access(True, reason, immutable)


def _expand_home(url: URL) -> URL:
    """`sqlite:///~/runs.db` → the file in the home folder (SQLite itself does not expand)."""
    if url.database and url.database.startswith("~"):
        return url.set(database=os.path.expanduser(url.database))
    return url


def is_memory(url: URL) -> bool:
    """Whether `url` is an in-memory SQLite database (one per storage object)."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine(url: URL, *, timeout: float, access: Access) -> Engine:
    """Create the engine for `url`; `timeout` is how long a SQLite writer waits for the lock."""
    if url.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, timeout, access)
    else:
        try:
            engine = sa.create_engine(url, pool_pre_ping=True)
        except ImportError as exc:
            raise MissingDependencyError(
                _POSTGRES_HINT, module="psycopg", extra="postgres", package="opto-utils"
            ) from exc
    _never_share_across_fork(engine)
    return engine


def _sqlite_engine(url: URL, timeout: float, access: Access) -> Engine:
    memory = is_memory(url)
    options: dict[str, Any] = {"connect_args": {"timeout": timeout, "check_same_thread": False}}
    query = {k: v for k, v in url.query.items() if k not in ("mode", "immutable")}
    path = sqlite_path(url)
    if memory:
        options["poolclass"] = StaticPool
    elif access.read_only and path is not None:
        # SQLite URI: percent-encode the path; the options make every connection read-only.
        query.update(mode="ro", uri="true", **({"immutable": "1"} if access.immutable else {}))
        url = url.set(database=f"file:{quote(str(path.absolute()), safe='/')}")
    elif path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url.set(query=query), **options)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the sqlite3 module (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get(BEGIN_MODE, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def use_wal(engine: Engine, timeout: float) -> None:
    """Switch a SQLite file to WAL journaling (persistent in the file; readers never block
    the writer). Done once the file is known to be an opto storage, so another
    application's database is never changed.

    The switch needs the file to itself, and SQLite may refuse it at once (without waiting
    on its busy timeout) while other processes open the same fresh file; it is retried with
    short pauses for up to `timeout` seconds."""
    statement = "PRAGMA journal_mode=WAL"
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(statement)
                return
            finally:
                cursor.close()
        except engine.dialect.loaded_dbapi.Error as exc:
            locked = "locked" in str(exc) or "busy" in str(exc)
            if not locked or time.monotonic() + pause > deadline:
                raise sa.exc.OperationalError(statement, None, exc) from exc
        finally:
            connection.close()
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 0.2)


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
