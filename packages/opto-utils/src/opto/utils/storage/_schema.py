"""Tables of the run storage and the schema-version check done when a storage opens.

All tables carry the `opto_` prefix so a storage can share a database with other
applications. JSON values are stored as text (see `_json`), which keeps SQLite and
PostgreSQL on one code path and lets NaN/infinite floats round-trip.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import sqlalchemy as sa

from .errors import SchemaVersionError, StorageNotFoundError

__all__ = [
    "SCHEMA_VERSION",
    "check_schema",
    "checkpoints",
    "ensure_schema",
    "eval_cache",
    "events",
    "has_eval_cache",
    "metadata",
    "runs",
    "step_scores",
    "steps",
]

logger = logging.getLogger(__name__)

#: Version of the table layout written by this opto-utils. Version 2 added
#: `opto_eval_cache`; a version-1 storage gets it (is migrated) when opened writable.
SCHEMA_VERSION = 2

# Key of the PostgreSQL advisory lock that serializes schema creation between processes.
_SCHEMA_LOCK_KEY = 0x6F70746F  # "opto"

metadata = sa.MetaData()

schema_version = sa.Table(
    "opto_schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)

runs = sa.Table(
    "opto_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime, nullable=True),
)


def _run_id() -> sa.Column[int]:
    return sa.Column(
        "run_id", sa.Integer, sa.ForeignKey("opto_runs.id", ondelete="CASCADE"), nullable=False
    )


steps = sa.Table(
    "opto_steps",
    metadata,
    _run_id(),
    sa.Column("iteration", sa.Integer, nullable=False),
    sa.Column("parameters", sa.Text, nullable=False),
    sa.Column("scores", sa.Text, nullable=False),
    sa.Column("feedback", sa.Text, nullable=False),
    sa.Column("usage", sa.Text, nullable=False),
    sa.Column("info", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.PrimaryKeyConstraint("run_id", "iteration"),
)

# One row per (step, score name): lets the database find the best step without decoding JSON.
step_scores = sa.Table(
    "opto_step_scores",
    metadata,
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("iteration", sa.Integer, nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("value", sa.Float(precision=53), nullable=True),
    sa.PrimaryKeyConstraint("run_id", "iteration", "key"),
    sa.ForeignKeyConstraint(
        ["run_id", "iteration"],
        ["opto_steps.run_id", "opto_steps.iteration"],
        ondelete="CASCADE",
    ),
    sa.Index("ix_opto_step_scores_rank", "run_id", "key", "value"),
)


def _run_log(name: str, *columns: sa.Column[object]) -> sa.Table:
    """A table of records a run appends (checkpoints, events): an auto-increment `id`,
    the owning `run_id`, `columns`, `created_at`, and an index listing a run's rows in
    order."""
    return sa.Table(
        f"opto_{name}",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        _run_id(),
        *columns,
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Index(f"ix_opto_{name}_run", "run_id", "id"),
    )


checkpoints = _run_log(
    "checkpoints",
    sa.Column("iteration", sa.Integer, nullable=True),
    sa.Column("state", sa.Text, nullable=False),
)

events = _run_log(
    "events",
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("iteration", sa.Integer, nullable=True),
)


# Evaluation results shared by every run of a storage, keyed by (scope, key); see
# `Storage.get_cached_evaluations`. Not tied to a run: deleting a run keeps them.
eval_cache = sa.Table(
    "opto_eval_cache",
    metadata,
    sa.Column("scope", sa.String(255), nullable=False),
    sa.Column("key", sa.String(128), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.PrimaryKeyConstraint("scope", "key"),
)


def _add_eval_cache(connection: sa.Connection) -> None:
    """Migration 1 -> 2: the evaluation cache table."""
    eval_cache.create(connection, checkfirst=True)


# Version -> the migration that brings a storage of that version to the next one.
_MIGRATIONS = {1: _add_eval_cache}


def ensure_schema(connection: sa.Connection, where: str, *, create: bool | None) -> None:
    """Create the tables if allowed, or check that the existing ones are readable.

    `create=None` creates them only in a database holding no tables at all; `True` also
    beside other applications' tables; `False` never. Runs inside the caller's write
    transaction; on PostgreSQL an advisory lock makes processes opening a fresh database at
    once create it exactly once.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
    if check_schema(connection, where, required=create is False, migrate=True):
        return
    others = sorted(
        n for n in sa.inspect(connection).get_table_names() if not n.startswith("opto_")
    )
    if others and create is not True:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise StorageNotFoundError(
            f"{where} is not an opto run storage: it holds other tables ({shown}) and no "
            "opto tables. Point at the database your runs are in, or pass create=True to add "
            "opto's tables (all named opto_*) beside the others"
        )
    metadata.create_all(connection)
    connection.execute(
        schema_version.insert().values(
            version=SCHEMA_VERSION, applied_at=datetime.now(timezone.utc).replace(tzinfo=None)
        )
    )


def check_schema(
    connection: sa.Connection, where: str, *, required: bool, migrate: bool = False
) -> bool:
    """Whether the opto tables exist, checking their version; without them, `required`
    raises `StorageNotFoundError` instead of returning False.

    A storage of an older known version is readable as it is; with `migrate` (inside a
    write transaction) it is brought to `SCHEMA_VERSION` first.
    """
    if not sa.inspect(connection).has_table(schema_version.name):
        if required:
            raise StorageNotFoundError(
                f"{where} is not an opto run storage (it has no opto tables), and this "
                "storage may not create one (opened read-only or with create=False); point at "
                "the database your runs were written to"
            )
        return False
    found = connection.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
    if found == SCHEMA_VERSION:
        return True
    if found in _MIGRATIONS:
        if migrate:
            _migrate(connection, found, where)
        return True
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"storage {where} uses schema version {found}, newer than version "
            f"{SCHEMA_VERSION} that this opto-utils understands; upgrade opto-utils "
            "(pip install -U opto-utils) to open it"
        )
    raise SchemaVersionError(
        f"storage {where} has an unknown schema version ({found}); it was not written by "
        f"this opto-utils (schema version {SCHEMA_VERSION}) — use another database"
    )


def _migrate(connection: sa.Connection, found: int, where: str) -> None:
    """Apply the migrations from version `found` up to `SCHEMA_VERSION` (one transaction)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for version in range(found, SCHEMA_VERSION):
        _MIGRATIONS[version](connection)
        connection.execute(schema_version.insert().values(version=version + 1, applied_at=now))
    logger.info(
        "migrated run storage %s from schema version %d to %d", where, found, SCHEMA_VERSION
    )


def has_eval_cache(connection: sa.Connection) -> bool:
    """Whether the storage has the evaluation cache table (a read-only version-1 storage
    does not)."""
    return sa.inspect(connection).has_table(eval_cache.name)
