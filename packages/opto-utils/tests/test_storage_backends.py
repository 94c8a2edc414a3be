"""Run storage behaviour, run identically on SQLite files and on a real PostgreSQL server.

The PostgreSQL half starts a private server (initdb into a temp dir, loopback, free port)
once per session. It is skipped when the server binaries or psycopg are missing, unless
OPTO_REQUIRE_POSTGRES=1 (CI), which turns that into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import attrs
import pytest

REQUIRE_POSTGRES = os.environ.get("OPTO_REQUIRE_POSTGRES") == "1"
if not REQUIRE_POSTGRES:
    pytest.importorskip("sqlalchemy", reason="needs the storage extra: opto-utils[storage]")

import sqlalchemy as sa  # noqa: E402
from opto.utils.storage import (  # noqa: E402
    InvalidScoreError,
    NotJSONableError,
    RunExistsError,
    RunNotFoundError,
    RunRecord,
    RunStatus,
    SchemaVersionError,
    StepExistsError,
    StepNotFoundError,
    StorageNotFoundError,
    StorageReadOnlyError,
    open_storage,
)
from opto.utils.storage._schema import SCHEMA_VERSION  # noqa: E402
from opto.utils.storage.testing import PostgresServer, find_postgres_bindir  # noqa: E402


def _unavailable(reason: str) -> None:
    if REQUIRE_POSTGRES:
        pytest.fail(f"{reason} (OPTO_REQUIRE_POSTGRES=1 makes the PostgreSQL tests mandatory)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server():
    if importlib.util.find_spec("psycopg") is None:
        _unavailable("psycopg is not installed: pip install 'opto-utils[postgres]'")
    if find_postgres_bindir() is None:
        _unavailable("PostgreSQL server binaries not found: apt-get install postgresql")
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def storage(url):
    with open_storage(url) as opened:
        yield opened


# -- runs ----------------------------------------------------------------------------------


def test_create_and_get_run_by_record_name_and_id(storage):
    run = storage.create_run("exp", config={"lr": 0.1, "layers": [1, 2]}, seed=2**40)
    assert run.name == "exp" and run.status is RunStatus.RUNNING
    assert run.config == {"lr": 0.1, "layers": [1, 2]} and run.seed == 2**40
    assert run.finished_at is None and run.created_at.tzinfo is not None
    assert storage.get_run("exp") == storage.get_run(run.id) == storage.get_run(run) == run


def test_run_names_are_unique_unless_loading(storage):
    first = storage.create_run("exp", config={"a": 1})
    with pytest.raises(RunExistsError, match="load_if_exists=True"):
        storage.create_run("exp")
    again = storage.create_run("exp", config={"a": 2}, load_if_exists=True)
    assert again == first  # returned unchanged, config included
    generated = {storage.create_run().name for _ in range(3)}
    assert len(generated) == 3 and all(name.startswith("run-") for name in generated)


def test_list_runs_in_creation_order_and_by_status(storage):
    for name in ("a", "b", "c"):
        storage.create_run(name)
    storage.set_status("b", RunStatus.FAILED)
    assert [r.name for r in storage.list_runs()] == ["a", "b", "c"]
    assert [r.name for r in storage.list_runs(status="failed")] == ["b"]
    assert [r.name for r in storage.list_runs(status=RunStatus.RUNNING)] == ["a", "c"]


def test_status_sets_and_clears_finished_at(storage):
    run = storage.create_run("exp")
    done = storage.set_status(run, "completed")
    assert done.status is RunStatus.COMPLETED and done.finished_at is not None
    assert storage.get_run(run) == done
    resumed = storage.set_status(run, RunStatus.RUNNING)
    assert resumed.finished_at is None and resumed.updated_at >= done.updated_at
    with pytest.raises(ValueError, match="'running', 'completed'"):
        storage.set_status(run, "paused")


def test_unknown_runs_raise_a_clear_error(storage):
    with pytest.raises(RunNotFoundError, match=r"no run 'ghost'.*list_runs\(\)"):
        storage.get_run("ghost")
    with pytest.raises(RunNotFoundError):
        storage.append_step(12345, scores=1.0)
    with pytest.raises(TypeError, match="RunRecord, name or id"):
        storage.get_run(1.5)


def test_delete_run_removes_everything_of_that_run_only(storage):
    keep, drop = storage.create_run("keep"), storage.create_run("drop")
    for run in (keep, drop):
        storage.append_step(run, scores=1.0)
        storage.save_checkpoint(run, {"x": 1})
        storage.log_event(run, "started")
    storage.delete_run(drop)
    with pytest.raises(RunNotFoundError):
        storage.get_run("drop")
    with storage.engine.connect() as connection:
        for table in ("opto_steps", "opto_step_scores", "opto_checkpoints", "opto_events"):
            run_ids = connection.execute(sa.text(f"SELECT DISTINCT run_id FROM {table}"))
            assert [row[0] for row in run_ids] == [keep.id]
    assert len(storage.list_steps(keep)) == 1


# -- steps ---------------------------------------------------------------------------------


@attrs.frozen
class Usage:
    prompt_tokens: int
    cost: float | None


def test_step_values_round_trip(storage):
    run = storage.create_run("exp")
    step = storage.append_step(
        run,
        parameters={"prompt": "Say hi\u2014nicely \x00", "code": "def f(x):\n    return x"},
        scores={"accuracy": 0.75, "count": 3, "missing": None, "nan": math.nan, "inf": -math.inf},
        feedback={"prompt": ["too long", ("a", 1)]},
        usage=Usage(prompt_tokens=12, cost=None),
        info={"candidates": 4},
    )
    (stored,) = storage.list_steps(run)
    assert stored.iteration == 0 and stored.run_id == run.id
    assert stored.parameters == {
        "prompt": "Say hi\u2014nicely \x00",
        "code": "def f(x):\n    return x",
    }
    assert stored.scores["accuracy"] == 0.75 and stored.scores["count"] == 3
    assert stored.scores["missing"] is None and math.isnan(stored.scores["nan"])
    assert stored.scores["inf"] == -math.inf
    assert stored.feedback == {"prompt": ["too long", ["a", 1]]}  # tuples come back as lists
    assert stored.usage == {"prompt_tokens": 12, "cost": None}
    assert stored.info == {"candidates": 4}
    assert step.parameters == stored.parameters and step.iteration == stored.iteration


def test_iterations_are_appended_or_explicit(storage):
    run = storage.create_run("exp")
    assert [storage.append_step(run, scores=i).iteration for i in range(3)] == [0, 1, 2]
    assert storage.append_step(run, iteration=10, scores=10).iteration == 10
    assert storage.append_step(run, scores=11).iteration == 11
    assert [s.iteration for s in storage.list_steps(run)] == [0, 1, 2, 10, 11]
    assert [s.iteration for s in storage.list_steps(run, after=1, limit=2)] == [2, 10]
    assert storage.get_step(run, 10).scores == {"score": 10}
    with pytest.raises(StepNotFoundError, match="has no step 5"):
        storage.get_step(run, 5)
    with pytest.raises(ValueError, match="non-negative int"):
        storage.append_step(run, iteration=-1)


def test_existing_iteration_needs_replace(storage):
    run = storage.create_run("exp")
    storage.append_step(run, iteration=0, parameters={"p": "old"}, scores={"acc": 0.9})
    storage.append_step(run, iteration=1, scores={"acc": 0.5})
    with pytest.raises(StepExistsError, match="replace=True"):
        storage.append_step(run, iteration=0, scores={"acc": 0.1})
    assert storage.get_step(run, 0).parameters == {"p": "old"}
    storage.append_step(
        run, iteration=0, parameters={"p": "new"}, scores={"acc": 0.1}, replace=True
    )
    assert storage.get_step(run, 0).parameters == {"p": "new"}
    # The score index follows the replacement: the old 0.9 is gone.
    assert storage.best_step(run, "acc").iteration == 1


def test_best_step_max_min_ties_and_missing_values(storage):
    run = storage.create_run("exp")
    storage.append_step(run, scores={"acc": 0.5, "loss": 3.0})
    storage.append_step(run, scores={"acc": 0.9, "loss": None})
    storage.append_step(run, scores={"acc": math.nan, "loss": 1.0})
    storage.append_step(run, scores={"acc": 0.9, "loss": 2.0})
    storage.append_step(run, scores={"other": 100.0})
    assert storage.best_step(run, "acc").iteration == 1  # tie with 3: earliest wins
    assert storage.best_step(run, "acc", mode="min").iteration == 0
    assert storage.best_step(run, "loss", mode="min").iteration == 2
    assert storage.best_step(run, "loss").iteration == 0
    assert storage.best_step(run, "absent") is None
    assert storage.best_step(storage.create_run("empty")) is None
    with pytest.raises(ValueError, match="'max' or 'min'"):
        storage.best_step(run, "acc", mode="best")


def test_best_step_compares_numbers_not_text(storage):
    run = storage.create_run("exp")
    for value in (9, 10, -2, 100.5, -math.inf):
        storage.append_step(run, scores=value)
    assert storage.best_step(run).scores == {"score": 100.5}
    assert storage.best_step(run, mode="min").scores == {"score": -math.inf}


# -- bad values ----------------------------------------------------------------------------


def test_non_jsonable_values_name_the_field_and_write_nothing(storage):
    run = storage.create_run("exp")
    with pytest.raises(NotJSONableError, match=r"parameters\['model'\]") as info:
        storage.append_step(run, parameters={"model": object()})
    assert info.value.field == "parameters['model']"
    with pytest.raises(NotJSONableError, match=r"state\['memory'\]\[1\]\['when'\]"):
        storage.save_checkpoint(run, {"memory": [{}, {"when": {1, 2}}]})
    with pytest.raises(NotJSONableError, match="keys must be strings"):
        storage.append_step(run, feedback={1: "a"})
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(NotJSONableError, match="contains itself"):
        storage.log_event(run, "loop", cyclic)
    with pytest.raises(NotJSONableError, match="config"):
        storage.create_run("bad", config={"fn": print})
    with pytest.raises(InvalidScoreError, match=r"scores\['acc'\]") as score_info:
        storage.append_step(run, scores={"acc": "high"})
    assert score_info.value.field == "scores['acc']"
    with pytest.raises(InvalidScoreError):
        storage.append_step(run, scores=True)
    with pytest.raises(InvalidScoreError, match="1 to 255 characters"):
        storage.append_step(run, scores={"k" * 256: 1.0})
    assert storage.list_steps(run) == [] and storage.load_checkpoint(run) is None
    assert storage.list_events(run) == [] and [r.name for r in storage.list_runs()] == ["exp"]


# -- checkpoints and events ----------------------------------------------------------------


def test_latest_checkpoint_and_pruning(storage):
    run = storage.create_run("exp")
    assert storage.load_checkpoint(run) is None
    for i in range(4):
        storage.save_checkpoint(run, {"iteration": i, "rng": [1, 2, i]}, iteration=i)
    latest = storage.load_checkpoint(run)
    assert latest.state == {"iteration": 3, "rng": [1, 2, 3]} and latest.iteration == 3
    assert [c.iteration for c in storage.list_checkpoints(run)] == [0, 1, 2, 3]
    storage.save_checkpoint(run, {"iteration": 4}, iteration=4, keep_last=2)
    assert [c.iteration for c in storage.list_checkpoints(run)] == [3, 4]
    assert storage.load_checkpoint(run).state == {"iteration": 4}
    with pytest.raises(ValueError, match="keep_last"):
        storage.save_checkpoint(run, {}, keep_last=0)


def test_events_in_order_and_by_kind(storage):
    run = storage.create_run("exp")
    storage.log_event(run, "started", {"pid": 1})
    storage.log_event(run, "warning", "slow LLM", iteration=3)
    storage.log_event(run, "started", {"pid": 2})
    assert [(e.kind, e.payload) for e in storage.list_events(run)] == [
        ("started", {"pid": 1}),
        ("warning", "slow LLM"),
        ("started", {"pid": 2}),
    ]
    assert [e.payload["pid"] for e in storage.list_events(run, kind="started")] == [1, 2]
    assert storage.list_events(run, kind="warning")[0].iteration == 3
    with pytest.raises(ValueError, match="event kind"):
        storage.log_event(run, "")


def test_export_is_json_and_complete(storage):
    run = storage.create_run("exp", config={"k": "v"}, seed=7)
    storage.append_step(run, parameters={"p": "x"}, scores={"acc": 0.5}, feedback="good")
    storage.save_checkpoint(run, {"n": 1}, iteration=0)
    storage.save_checkpoint(run, {"n": 2}, iteration=0)
    storage.log_event(run, "done")
    storage.set_status(run, "completed")
    exported = storage.export_run("exp")
    assert json.loads(json.dumps(exported)) == exported
    assert exported["format"] == "opto-run" and exported["schema_version"] == SCHEMA_VERSION
    assert exported["run"]["name"] == "exp" and exported["run"]["status"] == "completed"
    assert exported["run"]["seed"] == 7 and exported["run"]["config"] == {"k": "v"}
    assert exported["steps"] == [storage.get_step(run, 0).to_dict()]
    assert exported["steps"][0]["feedback"] == "good"
    assert [c["state"] for c in exported["checkpoints"]] == [{"n": 2}]
    assert [e["kind"] for e in exported["events"]] == ["done"]
    assert len(storage.export_run(run, checkpoints="all")["checkpoints"]) == 2
    assert storage.export_run(run, checkpoints="none")["checkpoints"] == []


# -- schema --------------------------------------------------------------------------------


def test_reopening_keeps_data_and_newer_schema_is_refused(url):
    with open_storage(url) as storage:
        storage.create_run("exp")
    with open_storage(url) as storage:
        assert [r.name for r in storage.list_runs()] == ["exp"]
        with storage.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO opto_schema_version (version, applied_at) "
                    "VALUES (99, CURRENT_TIMESTAMP)"
                )
            )
    with pytest.raises(SchemaVersionError, match=r"version 99.*upgrade opto-utils"):
        open_storage(url)


# -- concurrency ---------------------------------------------------------------------------


def _python(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_WRITER = """
    import sys
    from opto.utils.storage import open_storage

    url, run, worker, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with open_storage(url) as storage:
        for i in range(count):
            storage.append_step(run, parameters={"worker": worker, "i": i}, scores=float(i))
            storage.save_checkpoint(run, {"worker": worker, "i": i}, keep_last=3)
            if i % 5 == 0:
                storage.log_event(run, "progress", {"worker": worker, "i": i})
"""


def test_processes_writing_one_run_never_collide(storage, url):
    run = storage.create_run("shared")
    workers, count = 4, 15
    procs = [_python(_WRITER, url, "shared", f"w{n}", str(count)) for n in range(workers)]
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err
    steps = storage.list_steps(run)
    assert [s.iteration for s in steps] == list(range(workers * count))  # no gap, no duplicate
    for n in range(workers):
        mine = [s.parameters["i"] for s in steps if s.parameters["worker"] == f"w{n}"]
        assert mine == list(range(count))  # each writer's steps in its own order
    assert len(storage.list_checkpoints(run)) == 3
    assert storage.load_checkpoint(run).state["i"] == count - 1
    assert len(storage.list_events(run, kind="progress")) == workers * 3


_OPENER = """
    import sys
    from opto.utils.storage import open_storage

    url, worker = sys.argv[1], sys.argv[2]
    with open_storage(url) as storage:
        storage.create_run("common", load_if_exists=True)
        storage.create_run(f"own-{worker}")
        storage.append_step("common", scores=1.0)
"""


def test_processes_opening_a_fresh_storage_at_once(url):
    procs = [_python(_OPENER, url, str(n)) for n in range(4)]
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err
    with open_storage(url) as storage:
        assert sorted(r.name for r in storage.list_runs()) == [
            "common",
            "own-0",
            "own-1",
            "own-2",
            "own-3",
        ]
        assert [s.iteration for s in storage.list_steps("common")] == [0, 1, 2, 3]


def test_threads_share_one_storage(storage):
    run = storage.create_run("threads")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(10):
                storage.append_step(run, parameters={"w": worker, "i": i}, scores=i)
                storage.best_step(run)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [s.iteration for s in storage.list_steps(run)] == list(range(60))


_PAUSED_WRITER = """
    import sys, time
    from sqlalchemy import event
    from opto.utils.storage import open_storage

    url, run, marker = sys.argv[1], sys.argv[2], sys.argv[3]
    storage = open_storage(url)

    @event.listens_for(storage.engine, "after_cursor_execute")
    def pause(connection, cursor, statement, parameters, context, executemany):
        # The step row is written; its scores are being written; nothing is committed.
        if statement.lstrip().startswith("INSERT INTO opto_step_scores"):
            open(marker, "w").close()
            time.sleep(600)

    storage.append_step(run, parameters={"p": "half"}, scores={"score": 99.0})
"""


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    """Wait until the child creates `path` (a child that exits first is a test failure)."""
    deadline = time.monotonic() + 120
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"writer exited early: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("writer never reached the middle of its transaction")
        time.sleep(0.05)


def test_killed_writer_leaves_no_half_step(storage, url, tmp_path):
    run = storage.create_run("exp")
    storage.append_step(run, parameters={"p": "done"}, scores={"score": 1.0})
    marker = tmp_path / "paused"
    proc = _python(_PAUSED_WRITER, url, "exp", str(marker))
    try:
        _wait_for(marker, proc)
        # Mid-transaction: readers see only the complete step.
        assert [s.parameters["p"] for s in storage.list_steps(run)] == ["done"]
        assert storage.best_step(run).iteration == 0
    finally:
        proc.kill()
        proc.communicate()
    assert [s.parameters["p"] for s in storage.list_steps(run)] == ["done"]
    assert storage.best_step(run).scores == {"score": 1.0}
    with storage.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT COUNT(*) FROM opto_step_scores")).scalar()
    assert rows == 1
    # The lock died with the writer: the next step takes the free iteration.
    assert storage.append_step(run, parameters={"p": "next"}, scores=2.0).iteration == 1


def test_closed_storage_and_record_types(storage):
    run = storage.create_run("exp")
    assert isinstance(run, RunRecord)
    storage.close()
    from opto.utils.storage import StorageClosedError

    with pytest.raises(StorageClosedError, match="closed"):
        storage.list_runs()


# -- opening other databases (PostgreSQL) ----------------------------------------------------


def test_postgres_database_of_another_application_gets_no_opto_tables_unless_asked(
    postgres_server,
):
    url = postgres_server.create_database()
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with pytest.raises(StorageNotFoundError, match="has no opto tables"):
            open_storage(url, create=False)  # what `opto-runs` does
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE invoices (id integer)")
        with pytest.raises(StorageNotFoundError, match=r"invoices.*create=True"):
            open_storage(url)
        assert sa.inspect(engine).get_table_names() == ["invoices"]
        with open_storage(url, create=True) as storage:
            storage.create_run("beside")
        with open_storage(f"{url}?password=secret", read_only=True) as storage:
            assert "secret" not in storage.url and "password=***" in storage.url
            assert "secret" not in repr(storage)
            assert [r.name for r in storage.list_runs()] == ["beside"]
            with pytest.raises(StorageReadOnlyError):
                storage.create_run("another")
    finally:
        engine.dispose()


# -- evaluation cache ----------------------------------------------------------------------


def test_cached_evaluations_round_trip_by_scope_and_keep_the_first_value(storage):
    assert storage.get_cached_evaluations("agent", ["k1"]) == {}
    storage.put_cached_evaluations("agent", {"k1": {"score": 0.5, "out": [1, "x"]}, "k2": 1})
    storage.put_cached_evaluations("agent", {"k1": {"score": 0.9}, "k3": float("nan")})
    storage.put_cached_evaluations("other", {"k1": "elsewhere"})
    found = storage.get_cached_evaluations("agent", ["k1", "k2", "k3", "missing"])
    assert found["k1"] == {"score": 0.5, "out": [1, "x"]} and found["k2"] == 1
    assert math.isnan(found["k3"]) and "missing" not in found
    assert storage.get_cached_evaluations("other", ["k1", "k2"]) == {"k1": "elsewhere"}
    assert storage.count_cached_evaluations() == 4
    assert storage.count_cached_evaluations("agent") == 3
    assert storage.clear_cached_evaluations("agent") == 3
    assert storage.count_cached_evaluations() == 1


def test_cached_evaluations_outlive_runs_and_need_many_statements_for_many_keys(storage):
    run = storage.create_run("exp")
    values = {f"key-{i}": {"score": i} for i in range(1234)}
    storage.put_cached_evaluations("agent", values)
    storage.delete_run(run)
    found = storage.get_cached_evaluations("agent", [*values, "absent"])
    assert found == values


def test_cached_evaluations_refuse_bad_scopes_keys_and_values(storage):
    with pytest.raises(ValueError, match="scope"):
        storage.get_cached_evaluations("", ["k"])
    with pytest.raises(ValueError, match="key"):
        storage.put_cached_evaluations("agent", {"k" * 129: 1})
    with pytest.raises(NotJSONableError, match="cached evaluation k"):
        storage.put_cached_evaluations("agent", {"k": object()})
    assert storage.count_cached_evaluations() == 0


def test_concurrent_writers_of_one_evaluation_never_conflict(url):
    with open_storage(url) as storage:
        errors = []

        def put(value):
            try:
                for i in range(20):
                    storage.put_cached_evaluations("agent", {f"k{i}": value, "shared": value})
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=put, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert storage.count_cached_evaluations("agent") == 21


def _downgrade_to_version_1(url):
    """Make `url` look like a storage written by schema version 1 (no evaluation cache)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE opto_eval_cache"))
        connection.execute(sa.text("UPDATE opto_schema_version SET version = 1"))
    engine.dispose()


def test_a_version_1_storage_is_migrated_when_opened(url):
    with open_storage(url) as storage:
        storage.create_run("old")
    _downgrade_to_version_1(url)
    with open_storage(url) as storage:
        assert [r.name for r in storage.list_runs()] == ["old"]
        storage.put_cached_evaluations("agent", {"k": 1})
        assert storage.get_cached_evaluations("agent", ["k"]) == {"k": 1}
        with storage.engine.connect() as connection:
            versions = connection.execute(
                sa.text("SELECT version FROM opto_schema_version ORDER BY version")
            ).scalars()
            assert list(versions) == [1, SCHEMA_VERSION]
