"""SQLite response cache for LLM calls.

Keys are SHA-256 digests of the normalized request — model, messages, options and a
`rollout_id` — so asking for N samples of one prompt under N rollout ids is not answered by
one cached reply. Credentials and endpoints (`api_key`, `api_base`, `base_url`, headers…)
never enter the key. The file is safe to share between threads (one connection per thread)
and processes (WAL journal, busy timeout). A corrupt or foreign file is reported — logged
once and bypassed, or raised as `CacheError` with `on_error="raise"` — never crashed on.

Enable per LLM (`cache=True` or a path) or for every LLM with the environment variable
`OPTO_LLM_CACHE` (`1` for the default location, or a file path).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from opto.utils.errors import OptoError
from opto.utils.jsonable import jsonable

__all__ = [
    "CACHE_ENV",
    "CacheError",
    "ResponseCache",
    "default_cache_path",
    "request_key",
    "resolve_cache",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "OPTO_LLM_CACHE"
FORMAT = "opto-llm-cache"
VERSION = 1

# Options that never change the reply: credentials, endpoints, transport settings.
_EXCLUDED = frozenset(
    {
        "api_key",
        "api_base",
        "base_url",
        "api_version",
        "organization",
        "headers",
        "extra_headers",
        "timeout",
        "num_retries",
        "max_retries",
        "metadata",
        "client",
        "azure_ad_token",
        "azure_ad_token_provider",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    }
)
_SECRET_SUFFIXES = ("_key", "_token", "_secret", "_password")


class CacheError(OptoError):
    """The cache file cannot be used (corrupt, not an opto cache, newer format, unwritable).

    Delete or move the file, or point the cache elsewhere.
    """


def request_key(
    model: str,
    messages: Sequence[Mapping[str, Any]] | Any,
    options: Mapping[str, Any] | None = None,
    rollout_id: Any = None,
) -> str:
    """Cache key of a request: SHA-256 of its canonical JSON, credentials and endpoints left
    out and options with value None dropped."""
    kept = {
        name: value
        for name, value in (options or {}).items()
        if value is not None and name not in _EXCLUDED and not name.endswith(_SECRET_SUFFIXES)
    }
    payload = {"model": model, "messages": messages, "options": kept, "rollout_id": rollout_id}
    text = json.dumps(jsonable(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_path() -> Path:
    """`$XDG_CACHE_HOME/opto/llm_cache.sqlite3` (or `~/.cache/...`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "opto" / "llm_cache.sqlite3"


class ResponseCache:
    """A key → JSON-object store in one SQLite file.

    `on_error="warn"` (default) logs a problem once and then behaves as an empty cache that
    stores nothing; `on_error="raise"` raises `CacheError` instead.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, on_error: Literal["warn", "raise"] = "warn"
    ) -> None:
        self.path = Path(path).expanduser()
        self.on_error = on_error
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ready = False
        self._broken: str | None = None

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "on_error": self.on_error}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], on_error=state["on_error"])  # type: ignore[misc]

    @property
    def usable(self) -> bool:
        """False once a problem made the cache bypass itself."""
        return self._connection() is not None

    def _fail(self, problem: str, exc: BaseException | None = None) -> None:
        message = f"LLM response cache {self.path} is unusable: {problem}"
        if self.on_error == "raise":
            raise CacheError(message) from exc
        if self._broken is None:
            logger.warning("%s; continuing without the cache", message)
        self._broken = problem

    def _connection(self) -> sqlite3.Connection | None:
        if self._broken is not None:
            return None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            with self._lock:
                if not self._ready:
                    self._prepare(conn)
                    self._ready = True
        except CacheError:
            raise
        except (sqlite3.Error, OSError) as exc:
            self._fail(f"{type(exc).__name__}: {exc}", exc)
            return None
        if self._broken is not None:
            conn.close()
            return None
        self._local.conn = conn
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create the schema in a new file, or check that an existing file is ours."""
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if tables and "opto_cache_meta" not in tables:
            self._fail(f"not an opto LLM cache (it holds tables {sorted(tables)})")
            return
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            logger.debug("WAL journal unavailable for %s; using the default journal", self.path)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS opto_cache_meta (name TEXT PRIMARY KEY, value TEXT)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, "
                "created REAL, response TEXT NOT NULL)"
            )
            conn.execute(
                "INSERT OR IGNORE INTO opto_cache_meta VALUES ('format', ?), ('version', ?)",
                (FORMAT, str(VERSION)),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        meta = dict(conn.execute("SELECT name, value FROM opto_cache_meta").fetchall())
        if meta.get("format") != FORMAT:
            self._fail(f"unknown format {meta.get('format')!r}")
        elif meta.get("version") != str(VERSION):
            self._fail(f"format version {meta.get('version')} (this opto reads {VERSION})")

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored object for `key`, or None (also when the cache is unusable)."""
        conn = self._connection()
        if conn is None:
            return None
        try:
            row = conn.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            self._fail(f"read failed: {exc}", exc)
            return None
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except ValueError:
            logger.warning("ignoring an unreadable entry %s in %s", key[:12], self.path)
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: Mapping[str, Any], *, model: str = "") -> None:
        """Store `value` (a JSON-able mapping) under `key`, replacing any previous entry."""
        conn = self._connection()
        if conn is None:
            return
        try:
            conn.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                (key, model, time.time(), json.dumps(value, ensure_ascii=False)),
            )
        except sqlite3.Error as exc:
            self._fail(f"write failed: {exc}", exc)

    def __len__(self) -> int:
        conn = self._connection()
        if conn is None:
            return 0
        return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def clear(self) -> None:
        """Delete every stored response."""
        conn = self._connection()
        if conn is not None:
            conn.execute("DELETE FROM responses")

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they exit)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


_SHARED: dict[tuple[str, str], ResponseCache] = {}
_SHARED_LOCK = threading.Lock()


def _shared(path: str | os.PathLike[str]) -> ResponseCache:
    resolved = str(Path(path).expanduser().resolve())
    with _SHARED_LOCK:
        cache = _SHARED.get((resolved, "warn"))
        if cache is None:
            cache = _SHARED[(resolved, "warn")] = ResponseCache(resolved)
        return cache


def resolve_cache(
    spec: bool | str | os.PathLike[str] | ResponseCache | None,
) -> ResponseCache | None:
    """Turn an LLM's `cache=` argument into a cache (or None for no caching).

    None follows `OPTO_LLM_CACHE` (unset, empty, `0`, `false`, `no`, `off` → no cache;
    `1`, `true`, `yes`, `on` → the default file; anything else → that path). True → the
    default file; False → no cache; a path or `ResponseCache` → that cache.
    """
    if isinstance(spec, ResponseCache):
        return spec
    if spec is None:
        env = os.environ.get(CACHE_ENV, "").strip()
        if env.lower() in ("", "0", "false", "no", "off"):
            return None
        return _shared(default_cache_path() if env.lower() in ("1", "true", "yes", "on") else env)
    if spec is True:
        return _shared(default_cache_path())
    if spec is False:
        return None
    return _shared(spec)
