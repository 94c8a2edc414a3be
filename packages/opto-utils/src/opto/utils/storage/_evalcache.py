"""The evaluation cache of a run storage: JSON values under `(scope, key)`, shared by runs.

A search that scores the same parameters on the same example with the same judge pays
once: the result is stored under a key the caller derives from those three (see
`opto.trainers.evalcache`), and a resumed or repeated run reads it back. Entries belong
to the storage, not to a run (deleting a run keeps them); the first value stored under a
key wins, so concurrent writers of one evaluation never conflict.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import _json
from ._schema import eval_cache, has_eval_cache

if TYPE_CHECKING:
    import contextlib

__all__ = ["EvalCacheMixin"]

# Keys per statement: stays below every backend's limit on bound parameters.
_CHUNK = 500


def _check_scope(scope: Any) -> str:
    if not isinstance(scope, str) or not 0 < len(scope) <= 255:
        raise ValueError(
            f"an evaluation cache scope must be a string of 1 to 255 characters, not {scope!r:.80}"
        )
    return scope


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= 128:
        raise ValueError(
            f"an evaluation cache key must be a string of 1 to 128 characters (e.g. a SHA-256 "
            f"hex digest), not {key!r:.80}"
        )
    return key


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _insert(connection: sa.Connection) -> Any:
    """An INSERT that skips rows whose (scope, key) is already stored."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(eval_cache).on_conflict_do_nothing(index_elements=["scope", "key"])


class EvalCacheMixin:
    """`Storage` methods of the evaluation cache (see the module docstring)."""

    if TYPE_CHECKING:

        def _transaction(
            self, *, write: bool
        ) -> contextlib.AbstractContextManager[sa.Connection]: ...

    def get_cached_evaluations(self, scope: str, keys: Iterable[str]) -> dict[str, Any]:
        """The stored values of those `keys` that are in the cache under `scope`."""
        scope = _check_scope(scope)
        wanted = sorted({_check_key(k) for k in keys})
        found: dict[str, Any] = {}
        if not wanted:
            return found
        with self._transaction(write=False) as connection:
            if not has_eval_cache(connection):  # a read-only storage of schema version 1
                return found
            for chunk in _chunks(wanted):
                rows = connection.execute(
                    sa.select(eval_cache.c.key, eval_cache.c.value).where(
                        eval_cache.c.scope == scope, eval_cache.c.key.in_(chunk)
                    )
                )
                for key, text in rows:
                    found[key] = _json.loads(text, f"cached evaluation {key}")
        return found

    def put_cached_evaluations(self, scope: str, values: Mapping[str, Any]) -> None:
        """Store JSON-able `values` by key under `scope`, in one transaction (a key already
        stored keeps its first value)."""
        scope = _check_scope(scope)
        rows = [
            {"key": _check_key(key), "value": _json.dumps(value, f"cached evaluation {key}")}
            for key, value in values.items()
        ]
        if not rows:
            return
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with self._transaction(write=True) as connection:
            statement = _insert(connection)
            for start in range(0, len(rows), _CHUNK):
                chunk = [
                    {"scope": scope, "created_at": now, **r} for r in rows[start : start + _CHUNK]
                ]
                connection.execute(statement, chunk)

    def count_cached_evaluations(self, scope: str | None = None) -> int:
        """How many evaluations are cached (under `scope`, or in all scopes)."""
        query = sa.select(sa.func.count()).select_from(eval_cache)
        if scope is not None:
            query = query.where(eval_cache.c.scope == _check_scope(scope))
        with self._transaction(write=False) as connection:
            if not has_eval_cache(connection):
                return 0
            return int(connection.execute(query).scalar() or 0)

    def clear_cached_evaluations(self, scope: str | None = None) -> int:
        """Delete the cached evaluations (of `scope`, or all); returns how many."""
        statement = eval_cache.delete()
        if scope is not None:
            statement = statement.where(eval_cache.c.scope == _check_scope(scope))
        with self._transaction(write=True) as connection:
            return max(connection.execute(statement).rowcount, 0)
