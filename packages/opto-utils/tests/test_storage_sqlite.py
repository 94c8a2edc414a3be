"""SQLite specifics of the run storage: URLs, WAL, in-memory use, fork and pickling."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import pickle
import threading

import pytest

pytest.importorskip("sqlalchemy", reason="needs the storage extra: opto-utils[storage]")

import sqlalchemy as sa
from opto.utils.storage import (
    SchemaVersionError,
    Storage,
    StorageBackendError,
    StorageURLError,
    open_storage,
)


def test_file_storage_uses_wal_and_creates_parent_folders(tmp_path):
    path = tmp_path / "deep" / "er" / "runs.db"
    with open_storage(f"sqlite:///{path}") as storage:
        with storage.engine.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
        assert mode == "wal" and foreign_keys == 1
        assert storage.url == f"sqlite:///{path}"
    assert path.is_file()


def test_path_objects_and_the_environment_choose_a_sqlite_file(tmp_path, monkeypatch):
    with open_storage(tmp_path / "a.db") as storage:
        storage.create_run("from-path")
    assert (tmp_path / "a.db").is_file()
    monkeypatch.setenv("OPTO_STORAGE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    with open_storage() as storage:
        assert isinstance(storage, Storage) and storage.url.endswith("env.db")
    assert (tmp_path / "env.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("runs.db", r"'sqlite:///runs\.db'"),
        ("mysql://user@host/db", "unsupported storage backend 'mysql'"),
        ("", "non-empty string"),
    ],
)
def test_bad_urls_say_what_to_write(url, message):
    with pytest.raises(StorageURLError, match=message):
        open_storage(url)


def test_a_file_that_is_not_a_database_is_reported(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database" * 100)
    with pytest.raises(StorageBackendError, match="not a database"):
        open_storage(f"sqlite:///{path}")


def test_an_unknown_schema_version_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    open_storage(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM opto_schema_version")
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="unknown schema version"):
        open_storage(url)


def test_in_memory_storage_is_shared_by_threads():
    with open_storage("sqlite://") as storage:
        run = storage.create_run("mem")
        threads = [
            threading.Thread(target=lambda: [storage.append_step(run, scores=1) for _ in range(5)])
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [s.iteration for s in storage.list_steps(run)] == list(range(20))
        with pytest.raises(TypeError, match="in-memory storage cannot be pickled"):
            pickle.dumps(storage)
    with open_storage("sqlite:///:memory:") as other:
        assert other.list_runs() == []  # each in-memory storage is its own database


def test_pickled_storage_reopens_the_same_database(tmp_path):
    with open_storage(f"sqlite:///{tmp_path / 'runs.db'}") as storage:
        storage.create_run("exp")
        copy = pickle.loads(pickle.dumps(storage))
        try:
            assert copy is not storage and [r.name for r in copy.list_runs()] == ["exp"]
        finally:
            copy.close()


def _append_in_child(storage: Storage) -> None:
    storage.append_step("exp", parameters={"by": "child"}, scores=2.0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_opens_its_own_connections(tmp_path):
    with open_storage(f"sqlite:///{tmp_path / 'runs.db'}") as storage:
        storage.create_run("exp")
        storage.append_step("exp", parameters={"by": "parent"}, scores=1.0)  # pools a connection
        child = multiprocessing.get_context("fork").Process(
            target=_append_in_child, args=(storage,)
        )
        child.start()
        child.join()
        assert child.exitcode == 0
        storage.append_step("exp", parameters={"by": "parent"}, scores=3.0)
        assert [s.parameters["by"] for s in storage.list_steps("exp")] == [
            "parent",
            "child",
            "parent",
        ]


def test_a_home_relative_sqlite_path_opens_the_file_in_home(tmp_path, monkeypatch):
    # The parent folder was created under the expanded home but SQLite was handed the
    # literal '~/...' path, so opening failed with "unable to open database file".
    monkeypatch.setenv("HOME", str(tmp_path))
    with open_storage("sqlite:///~/runs/home.db") as storage:
        storage.create_run("in-home")
    with open_storage(pathlib.Path("~/runs/home.db")) as storage:
        assert [run.name for run in storage.list_runs()] == ["in-home"]
    assert (tmp_path / "runs" / "home.db").is_file()


def test_a_version_1_file_opened_read_only_is_read_as_it_is(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with open_storage(url) as storage:
        storage.create_run("old")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE opto_eval_cache")
        connection.exec_driver_sql("UPDATE opto_schema_version SET version = 1")
    engine.dispose()
    with open_storage(url, read_only=True) as storage:
        assert [r.name for r in storage.list_runs()] == ["old"]
        assert storage.get_cached_evaluations("agent", ["k"]) == {}
        assert storage.count_cached_evaluations() == 0
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert not sa.inspect(connection).has_table("opto_eval_cache")
    engine.dispose()
