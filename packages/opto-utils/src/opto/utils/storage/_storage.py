"""`Storage`: runs, steps, checkpoints and events kept in SQLite or PostgreSQL.

Every public method is one database transaction. Writes lock the run's row first
(`SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so several processes
writing to one run are serialized and iteration numbers are handed out without races.
A step (its row and its score index rows) is written in a single transaction, so a writer
killed half-way leaves nothing behind and readers only ever see complete steps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Literal, Union

import sqlalchemy as sa

from . import _json
from ._default import default_storage_url
from ._engine import BEGIN_MODE, create_engine, decide_access, is_memory, parse_url, use_wal
from ._evalcache import EvalCacheMixin
from ._redact import redact_url
from ._rows import (
    check_iteration,
    check_name,
    check_seed,
    check_status,
    checkpoint_record,
    event_record,
    run_record,
    step_record,
)
from ._schema import (
    SCHEMA_VERSION,
    check_schema,
    checkpoints,
    ensure_schema,
    events,
    runs,
    step_scores,
    steps,
)
from .errors import (
    RunExistsError,
    RunNotFoundError,
    StepExistsError,
    StepNotFoundError,
    StorageBackendError,
    StorageClosedError,
    StorageReadOnlyError,
)
from .records import CheckpointRecord, EventRecord, RunRecord, RunStatus, StepRecord

__all__ = ["DEFAULT_URL", "EXPORT_FORMAT", "RunRef", "Storage"]

logger = logging.getLogger(__name__)

#: Storage used when no URL is given and `OPTO_STORAGE_URL` is unset.
DEFAULT_URL = "sqlite:///opto-runs.db"
#: Value of the "format" key in `Storage.export_run` output.
EXPORT_FORMAT = "opto-run"

#: A run given by its record, its name or its numeric id.
RunRef = Union[RunRecord, str, int]


def _now() -> datetime:
    """Current UTC time, naive, as stored in the database."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Storage(EvalCacheMixin):
    """Run storage addressed by URL: `sqlite:///path.db` (default) or `postgresql://...`.

    Besides runs it holds an evaluation cache shared by all runs
    (`get_cached_evaluations`, `put_cached_evaluations`; see `opto.trainers.evalcache`).

    Thread-safe; each process (or forked child) uses its own connections. Pickling a
    storage pickles its URL, so it can be handed to worker processes.
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 60.0,
        create: bool | None = None,
        read_only: bool = False,
    ):
        """Open the storage at `url`, creating its tables where allowed.

        `url` defaults to `default_storage_url()`: the `OPTO_STORAGE_URL` environment
        variable, else `opto-runs.db` in the working directory.
        `timeout` is how many seconds a SQLite writer waits for another writer's lock.
        `create` says whether opto's tables may be added: None (default) only to a new or
        empty database, True also to one holding other applications' tables, False never
        (a missing or table-less database raises `StorageNotFoundError`). `read_only=True`
        never writes; a SQLite file is also opened read-only when the URL says `mode=ro` or
        `immutable=1`, or when the file or its folder is not writable. A read-only storage
        reads as usual and raises `StorageReadOnlyError` on any write.
        """
        if url is None:
            url = default_storage_url()
        self._url = parse_url(url)
        self._timeout = timeout
        self._create = create
        self._read_only_asked = read_only
        self._where = redact_url(self._url.render_as_string(hide_password=True))
        self._access = decide_access(
            self._url, read_only=read_only, create=create, where=self._where
        )
        if self._access.reason is not None and not read_only:
            logger.info("opening run storage %s read-only: %s", self._where, self._access.reason)
        self._sqlite = self._url.get_backend_name() == "sqlite"
        # An in-memory SQLite database is one shared connection: take turns on it.
        self._turns: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if is_memory(self._url) else contextlib.nullcontext()
        )
        self._closed = False
        self._engine = create_engine(self._url, timeout=timeout, access=self._access)
        try:
            if self._access.read_only:
                with self._transaction(write=False) as connection:
                    check_schema(connection, self._where, required=True)
            else:
                with self._transaction(write=True) as connection:
                    ensure_schema(connection, self._where, create=create)
                if self._sqlite and not is_memory(self._url):
                    with self._turns, self._backend_errors():
                        use_wal(self._engine, timeout)
        except BaseException:
            self._engine.dispose()
            raise
        logger.debug("opened run storage %s (schema version %d)", self._where, SCHEMA_VERSION)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The storage URL with any password (in its userinfo or query string) hidden."""
        return self._where

    @property
    def read_only(self) -> bool:
        """Whether this storage only reads (writes raise `StorageReadOnlyError`)."""
        return self._access.read_only

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine, for read-only SQL of your own on the `opto_*` tables."""
        return self._engine

    def close(self) -> None:
        """Release all connections; the storage cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Storage({self._where!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        if is_memory(self._url):
            raise TypeError(
                "an in-memory storage cannot be pickled: another process would get an empty "
                "database; use a file, e.g. open_storage('sqlite:///runs.db')"
            )
        return (
            _reopen,
            (
                self._url.render_as_string(hide_password=False),
                self._timeout,
                self._create,
                self._read_only_asked,
            ),
        )

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sa.Connection]:
        """One transaction; reads see one consistent snapshot, writes are serialized."""
        if self._closed:
            raise StorageClosedError(f"storage {self._where} is closed; open it again")
        if write and self._access.read_only:
            raise StorageReadOnlyError(
                f"storage {self._where} is read-only ({self._access.reason}); this call "
                "writes to it. Open a writable storage (fix the file's and folder's "
                "permissions, or work on a copy) to record runs"
            )
        with self._turns, self._backend_errors():
            with self._engine.connect() as connection:
                if self._sqlite:
                    connection.execution_options(
                        **{BEGIN_MODE: "IMMEDIATE" if write else "DEFERRED"}
                    )
                elif not write:
                    connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    yield connection

    @contextlib.contextmanager
    def _backend_errors(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DBAPIError as exc:
            raise StorageBackendError(
                f"storage {self._where} failed: {exc.orig}. Check that the database is "
                "reachable and is an opto storage; if SQLite reports 'database is locked', "
                "another process held the write lock longer than the timeout"
            ) from exc

    # -- runs --------------------------------------------------------------------------------

    def create_run(
        self,
        name: str | None = None,
        *,
        config: Any = None,
        seed: int | None = None,
        load_if_exists: bool = False,
    ) -> RunRecord:
        """Create a RUNNING run; `name` defaults to a unique generated one.

        With `load_if_exists=True` an existing run of that name is returned unchanged
        (the way to resume); otherwise an existing name raises `RunExistsError`.
        """
        name = check_name(name if name is not None else f"run-{uuid.uuid4().hex[:12]}")
        config_text = _json.dumps({} if config is None else config, "config")
        seed = check_seed(seed)
        try:
            with self._transaction(write=True) as connection:
                row = connection.execute(sa.select(runs).where(runs.c.name == name)).first()
                if row is None:
                    now = _now()
                    values = {
                        "name": name,
                        "config": config_text,
                        "seed": seed,
                        "status": RunStatus.RUNNING.value,
                        "created_at": now,
                        "updated_at": now,
                        "finished_at": None,
                    }
                    run_id = connection.execute(
                        runs.insert().values(**values)
                    ).inserted_primary_key[0]
                    logger.info("created run %r (id %d) in %s", name, run_id, self._where)
                    return run_record({"id": run_id, **values})
        except sa.exc.IntegrityError as exc:
            # Another process created the same name between our check and our insert.
            if not load_if_exists:
                raise self._run_exists(name) from exc
            return self.get_run(name)
        if not load_if_exists:
            raise self._run_exists(name)
        return run_record(row._mapping)

    def _run_exists(self, name: str) -> RunExistsError:
        return RunExistsError(
            f"a run named {name!r} already exists in {self._where}; pass load_if_exists=True "
            "to continue it, or choose another name"
        )

    def get_run(self, run: RunRef) -> RunRecord:
        """Return the current record of `run` (by record, name or id)."""
        with self._transaction(write=False) as connection:
            return run_record(self._find_run(connection, run))

    def list_runs(self, *, status: RunStatus | str | None = None) -> list[RunRecord]:
        """All runs, oldest first, optionally only those in `status`."""
        query = sa.select(runs).order_by(runs.c.id)
        if status is not None:
            query = query.where(runs.c.status == check_status(status).value)
        with self._transaction(write=False) as connection:
            return [run_record(row._mapping) for row in connection.execute(query)]

    def set_status(self, run: RunRef, status: RunStatus | str) -> RunRecord:
        """Mark `run` RUNNING (clears `finished_at`) or finished (sets `finished_at`)."""
        status = check_status(status)
        with self._transaction(write=True) as connection:
            row = self._find_run(connection, run, lock=True)
            now = _now()
            values = {
                "status": status.value,
                "updated_at": now,
                "finished_at": now if status.finished else None,
            }
            connection.execute(runs.update().where(runs.c.id == row["id"]).values(**values))
            return run_record({**row, **values})

    def delete_run(self, run: RunRef) -> None:
        """Delete `run` with all its steps, checkpoints and events."""
        with self._transaction(write=True) as connection:
            run_id = self._find_run(connection, run, lock=True)["id"]
            for table in (step_scores, steps, checkpoints, events):
                connection.execute(table.delete().where(table.c.run_id == run_id))
            connection.execute(runs.delete().where(runs.c.id == run_id))

    def _find_run(
        self, connection: sa.Connection, run: RunRef, *, lock: bool = False
    ) -> Mapping[str, Any]:
        """The run's row; with `lock`, row-locked until the transaction ends."""
        if isinstance(run, RunRecord):
            condition = runs.c.id == run.id
        elif isinstance(run, str):
            condition = runs.c.name == run
        elif isinstance(run, int) and not isinstance(run, bool):
            condition = runs.c.id == run
        else:
            raise TypeError(f"a run is given by its RunRecord, name or id, not {run!r}")
        query = sa.select(runs).where(condition)
        row = connection.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise RunNotFoundError(
                f"no run {run.name if isinstance(run, RunRecord) else run!r} in "
                f"{self._where}; list_runs() shows the runs it holds"
            )
        return row._mapping

    def _touch(self, connection: sa.Connection, run_id: int) -> None:
        connection.execute(runs.update().where(runs.c.id == run_id).values(updated_at=_now()))

    # -- steps -------------------------------------------------------------------------------

    def append_step(
        self,
        run: RunRef,
        *,
        iteration: int | None = None,
        parameters: Mapping[str, Any] | None = None,
        scores: Mapping[str, float | None] | float | None = None,
        feedback: Any = None,
        usage: Any = None,
        info: Mapping[str, Any] | None = None,
        replace: bool = False,
    ) -> StepRecord:
        """Record one complete step of `run`, atomically.

        `iteration` defaults to one past the run's last step (0 for the first). `scores`
        maps score names to numbers or None; a bare number means `{"score": number}`.
        An existing iteration raises `StepExistsError` unless `replace=True` (used when a
        resumed run redoes steps after its last checkpoint).
        """
        if iteration is not None:
            iteration = check_iteration(iteration)
        score_map = _json.normalize_scores(scores)
        texts = {
            "parameters": _json.dumps({} if parameters is None else parameters, "parameters"),
            "scores": _json.dumps(score_map, "scores"),
            "feedback": _json.dumps(feedback, "feedback"),
            "usage": _json.dumps(usage, "usage"),
            "info": _json.dumps({} if info is None else info, "info"),
        }
        with self._transaction(write=True) as connection:
            row = self._find_run(connection, run, lock=True)
            run_id = row["id"]
            if iteration is None:
                last = connection.execute(
                    sa.select(sa.func.max(steps.c.iteration)).where(steps.c.run_id == run_id)
                ).scalar()
                iteration = 0 if last is None else last + 1
            elif self._step_row(connection, run_id, iteration) is not None:
                if not replace:
                    raise StepExistsError(
                        f"run {row['name']!r} already has step {iteration} in {self._where}; pass "
                        "replace=True to overwrite it, or omit iteration to append"
                    )
                _delete_step(connection, run_id, iteration)
            now = _now()
            connection.execute(
                steps.insert().values(run_id=run_id, iteration=iteration, created_at=now, **texts)
            )
            _insert_scores(connection, run_id, iteration, score_map)
            self._touch(connection, run_id)
        return step_record({"run_id": run_id, "iteration": iteration, "created_at": now, **texts})

    def get_step(self, run: RunRef, iteration: int) -> StepRecord:
        """The step of `run` at `iteration`; `StepNotFoundError` if there is none."""
        with self._transaction(write=False) as connection:
            run_row = self._find_run(connection, run)
            row = self._step_row(connection, run_row["id"], iteration)
        if row is None:
            raise StepNotFoundError(
                f"run {run_row['name']!r} has no step {iteration} in {self._where}; list_steps() "
                "shows the recorded iterations"
            )
        return step_record(row)

    def list_steps(
        self, run: RunRef, *, after: int | None = None, limit: int | None = None
    ) -> list[StepRecord]:
        """Steps of `run` by iteration; `after` skips iterations <= it, `limit` caps the count."""
        with self._transaction(write=False) as connection:
            run_id = self._find_run(connection, run)["id"]
            query = sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.iteration)
            if after is not None:
                query = query.where(steps.c.iteration > after)
            if limit is not None:
                query = query.limit(limit)
            return [step_record(row._mapping) for row in connection.execute(query)]

    def best_step(
        self, run: RunRef, key: str = "score", *, mode: Literal["max", "min"] = "max"
    ) -> StepRecord | None:
        """The step with the highest (`mode="max"`) or lowest score `key`, or None.

        Steps without that score, or where it is None or NaN, are ignored (NaN never
        wins); -inf and +inf rank as numbers. Ties go to the earliest iteration.
        """
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        value = step_scores.c.value
        with self._transaction(write=False) as connection:
            run_id = self._find_run(connection, run)["id"]
            iteration = connection.execute(
                sa.select(step_scores.c.iteration)
                .where(
                    step_scores.c.run_id == run_id,
                    step_scores.c.key == key,
                    value.is_not(None),
                )
                .order_by(value.desc() if mode == "max" else value.asc(), step_scores.c.iteration)
                .limit(1)
            ).scalar()
            if iteration is None:
                return None
            return step_record(self._step_row(connection, run_id, iteration))

    @staticmethod
    def _step_row(connection: sa.Connection, run_id: int, iteration: int) -> Any:
        return (
            connection.execute(
                sa.select(steps).where(steps.c.run_id == run_id, steps.c.iteration == iteration)
            )
            .mappings()
            .first()
        )

    # -- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(
        self,
        run: RunRef,
        state: Any,
        *,
        iteration: int | None = None,
        keep_last: int | None = None,
    ) -> CheckpointRecord:
        """Store a JSON-able `state` as the run's latest checkpoint, atomically.

        `iteration` records which step the state follows. With `keep_last=n`, older
        checkpoints beyond the newest n are deleted in the same transaction.
        """
        if iteration is not None:
            iteration = check_iteration(iteration)
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be at least 1 (or None to keep all), not {keep_last}")
        text = _json.dumps(state, "state")
        with self._transaction(write=True) as connection:
            run_id = self._find_run(connection, run, lock=True)["id"]
            values = {"run_id": run_id, "iteration": iteration, "state": text, "created_at": _now()}
            checkpoint_id = connection.execute(
                checkpoints.insert().values(**values)
            ).inserted_primary_key[0]
            if keep_last is not None:
                stale = (
                    sa.select(checkpoints.c.id)
                    .where(checkpoints.c.run_id == run_id)
                    .order_by(checkpoints.c.id.desc())
                    .offset(keep_last)
                )
                stale_ids = list(connection.execute(stale).scalars())
                if stale_ids:
                    connection.execute(checkpoints.delete().where(checkpoints.c.id.in_(stale_ids)))
            self._touch(connection, run_id)
        return checkpoint_record({"id": checkpoint_id, **values})

    def load_checkpoint(self, run: RunRef) -> CheckpointRecord | None:
        """The latest checkpoint of `run`, or None if it has none yet."""
        with self._transaction(write=False) as connection:
            run_id = self._find_run(connection, run)["id"]
            row = connection.execute(
                sa.select(checkpoints)
                .where(checkpoints.c.run_id == run_id)
                .order_by(checkpoints.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else checkpoint_record(row._mapping)

    def list_checkpoints(self, run: RunRef) -> list[CheckpointRecord]:
        """All kept checkpoints of `run`, oldest first."""
        with self._transaction(write=False) as connection:
            return self._checkpoints(connection, self._find_run(connection, run)["id"])

    @staticmethod
    def _checkpoints(connection: sa.Connection, run_id: int) -> list[CheckpointRecord]:
        query = (
            sa.select(checkpoints).where(checkpoints.c.run_id == run_id).order_by(checkpoints.c.id)
        )
        return [checkpoint_record(row._mapping) for row in connection.execute(query)]

    # -- events ------------------------------------------------------------------------------

    def log_event(
        self, run: RunRef, kind: str, payload: Any = None, *, iteration: int | None = None
    ) -> EventRecord:
        """Append an event of `kind` (e.g. "resumed", "budget_exceeded") to `run`."""
        if not isinstance(kind, str) or not 0 < len(kind) <= 64:
            raise ValueError(f"an event kind must be a string of 1 to 64 characters, not {kind!r}")
        if iteration is not None:
            iteration = check_iteration(iteration)
        text = _json.dumps(payload, "payload")
        with self._transaction(write=True) as connection:
            run_id = self._find_run(connection, run, lock=True)["id"]
            values = {
                "run_id": run_id,
                "kind": kind,
                "payload": text,
                "iteration": iteration,
                "created_at": _now(),
            }
            event_id = connection.execute(events.insert().values(**values)).inserted_primary_key[0]
            self._touch(connection, run_id)
        return event_record({"id": event_id, **values})

    def list_events(self, run: RunRef, *, kind: str | None = None) -> list[EventRecord]:
        """Events of `run` in the order they were logged, optionally only those of `kind`."""
        with self._transaction(write=False) as connection:
            return self._events(connection, self._find_run(connection, run)["id"], kind)

    @staticmethod
    def _events(connection: sa.Connection, run_id: int, kind: str | None) -> list[EventRecord]:
        query = sa.select(events).where(events.c.run_id == run_id).order_by(events.c.id)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        return [event_record(row._mapping) for row in connection.execute(query)]

    # -- export ------------------------------------------------------------------------------

    def export_run(
        self, run: RunRef, *, checkpoints: Literal["latest", "all", "none"] = "latest"
    ) -> dict[str, Any]:
        """A standard-JSON snapshot of `run`: its record, steps, events and checkpoints.

        Read in one transaction, so the parts are consistent with each other. NaN and
        infinite numbers are exported as None (`null`), so `json.dumps(exported,
        allow_nan=False)` succeeds and any JSON reader accepts the text.
        """
        if checkpoints not in ("latest", "all", "none"):
            raise ValueError(f"checkpoints must be 'latest', 'all' or 'none', not {checkpoints!r}")
        with self._transaction(write=False) as connection:
            row = self._find_run(connection, run)
            run_id = row["id"]
            step_rows = (
                connection.execute(
                    sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.iteration)
                )
                .mappings()
                .all()
            )
            kept = [] if checkpoints == "none" else self._checkpoints(connection, run_id)
            exported = {
                "format": EXPORT_FORMAT,
                "schema_version": SCHEMA_VERSION,
                "run": run_record(row).to_dict(),
                "steps": [step_record(step).to_dict() for step in step_rows],
                "checkpoints": [
                    c.to_dict() for c in (kept[-1:] if checkpoints == "latest" else kept)
                ],
                "events": [e.to_dict() for e in self._events(connection, run_id, None)],
            }
        return _json.standard_json(exported)


def _reopen(url: str, timeout: float, create: bool | None, read_only: bool) -> Storage:
    """Unpickle a storage by opening its URL again."""
    return Storage(url, timeout=timeout, create=create, read_only=read_only)


def _delete_step(connection: sa.Connection, run_id: int, iteration: int) -> None:
    for table in (step_scores, steps):
        connection.execute(
            table.delete().where(table.c.run_id == run_id, table.c.iteration == iteration)
        )


def _insert_scores(
    connection: sa.Connection, run_id: int, iteration: int, scores: Mapping[str, Any]
) -> None:
    if scores:
        connection.execute(
            step_scores.insert(),
            [
                {"run_id": run_id, "iteration": iteration, "key": key, "value": _json.sortable(v)}
                for key, v in scores.items()
            ],
        )
