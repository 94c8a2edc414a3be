"""Opening storages safely: read-only files, other applications' databases, hidden
passwords and standard-JSON exports, on real SQLite files."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="needs the storage extra: opto-utils[storage]")

from opto.utils.storage import (
    StorageNotFoundError,
    StorageReadOnlyError,
    StorageURLError,
    open_storage,
    redact_url,
    standard_json,
)

NOBODY = 65534


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        return sorted(name for (name,) in rows)


def _make_storage(path: Path) -> None:
    with open_storage(f"sqlite:///{path}") as storage:
        run = storage.create_run("exp")
        storage.append_step(run, parameters={"p": "x"}, scores={"acc": 0.5})
        storage.append_step(run, parameters={"p": "y"}, scores={"acc": 0.75})


# -- read-only databases -----------------------------------------------------------------


def _assert_reads_but_never_writes(storage) -> None:
    assert storage.read_only
    assert [r.name for r in storage.list_runs()] == ["exp"]
    assert storage.best_step("exp", "acc").parameters == {"p": "y"}
    assert storage.export_run("exp")["steps"][1]["scores"] == {"acc": 0.75}
    with pytest.raises(StorageReadOnlyError, match="read-only"):
        storage.append_step("exp", scores={"acc": 1.0})
    with pytest.raises(StorageReadOnlyError):
        storage.create_run("another")
    with pytest.raises(StorageReadOnlyError):
        storage.set_status("exp", "completed")


def test_read_only_mode_reads_and_refuses_writes_without_touching_the_file(tmp_path):
    path = tmp_path / "runs.db"
    _make_storage(path)
    before = path.read_bytes()
    with open_storage(f"sqlite:///{path}", read_only=True) as storage:
        _assert_reads_but_never_writes(storage)
        assert "read_only=True" in str(_write_error(storage))
    assert path.read_bytes() == before
    assert len(open_storage(f"sqlite:///{path}").list_steps("exp")) == 2


def _write_error(storage) -> StorageReadOnlyError:
    with pytest.raises(StorageReadOnlyError) as info:
        storage.log_event("exp", "x")
    return info.value


@pytest.mark.parametrize(
    "suffix",
    ["?mode=ro", "?immutable=1"],
)
def test_the_url_can_ask_for_read_only(tmp_path, suffix):
    path = tmp_path / "runs.db"
    _make_storage(path)
    with open_storage(f"sqlite:///{path}{suffix}") as storage:
        _assert_reads_but_never_writes(storage)
    with open_storage(f"sqlite:///file:{path}?mode=ro&uri=true") as storage:
        _assert_reads_but_never_writes(storage)
    assert not (tmp_path / "file:").exists()


def test_read_only_storage_never_creates_a_file_or_tables(tmp_path):
    missing = tmp_path / "nowhere" / "runs.db"
    with pytest.raises(StorageNotFoundError, match="does not exist"):
        open_storage(f"sqlite:///{missing}", read_only=True)
    assert not missing.parent.exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(StorageNotFoundError, match="has no opto tables"):
        open_storage(f"sqlite:///{empty}", read_only=True)
    assert _tables(empty) == []
    with pytest.raises(ValueError, match="read_only"):
        open_storage(f"sqlite:///{empty}", read_only=True, create=True)
    with pytest.raises(ValueError, match="in-memory"):
        open_storage("sqlite://", read_only=True)
    with pytest.raises(StorageURLError, match="mode=ro"):
        open_storage(f"sqlite:///{empty}?mode=memory")


def _in_child_as(uid: int | None, check) -> None:
    """Run `check()` in a forked child (as `uid` when given); fail with its error."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read)
        message = b""
        try:
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            check()
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}".encode() or b"failed"
        os.write(write, message)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    assert not message, message.decode()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork() to drop privileges")
@pytest.mark.parametrize("wal_left", [False, True])
def test_a_read_only_file_in_a_read_only_folder_opens_to_read(wal_left):
    """chmod 0444 file in a 0555 folder: reads work, a write is a clear error.

    Root ignores file permissions, so as root the check runs in a child that dropped to
    the `nobody` user (modules are imported before the fork, so it needs no file access).
    """
    uid = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        uid = NOBODY
    folder = Path(tempfile.mkdtemp(prefix="opto-ro-"))
    try:
        path = folder / "runs.db"
        _make_storage(path)
        keep = None
        if wal_left:  # a writer still has the database open: its -wal and -shm files exist
            keep = sqlite3.connect(path)
            keep.execute("PRAGMA journal_mode=WAL")
            keep.execute("SELECT count(*) FROM opto_runs").fetchall()
        for item in folder.iterdir():
            item.chmod(0o444)
        folder.chmod(0o555)
        _warm_up(Path(tempfile.mkdtemp(prefix="opto-warm-")))

        def check() -> None:
            with open_storage(f"sqlite:///{path}") as storage:
                _assert_reads_but_never_writes(storage)
                assert "not writable" in str(_write_error(storage))

        if uid is not None:
            try:
                _in_child_as(uid, check)
            except AssertionError as exc:
                if "PermissionError" in str(exc) and "setuid" in str(exc):
                    pytest.skip("running as root without the right to drop privileges")
                raise
        else:
            _in_child_as(None, check)
        if keep is not None:
            keep.close()
    finally:
        folder.chmod(stat.S_IRWXU)
        shutil.rmtree(folder, ignore_errors=True)


def _warm_up(folder: Path) -> None:
    """Import everything opening a read-only storage needs before a child drops privileges."""
    _make_storage(folder / "runs.db")
    with open_storage(f"sqlite:///{folder / 'runs.db'}", read_only=True) as storage:
        _assert_reads_but_never_writes(storage)
        _write_error(storage)
    shutil.rmtree(folder)


# -- other applications' databases -------------------------------------------------------


def _foreign_database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
        connection.execute("INSERT INTO moz_places (url) VALUES ('https://example.org')")
    connection.close()


def test_a_database_of_another_application_gets_no_opto_tables_unless_asked(tmp_path):
    path = tmp_path / "places.sqlite"
    _foreign_database(path)
    before = path.read_bytes()
    with pytest.raises(StorageNotFoundError, match=r"moz_places.*create=True"):
        open_storage(f"sqlite:///{path}")
    with pytest.raises(StorageNotFoundError, match="has no opto tables"):
        open_storage(f"sqlite:///{path}", create=False)
    assert _tables(path) == ["moz_places"] and path.read_bytes() == before
    with open_storage(f"sqlite:///{path}", create=True) as storage:
        storage.create_run("beside")
    assert "moz_places" in _tables(path) and "opto_runs" in _tables(path)
    with open_storage(f"sqlite:///{path}") as storage:  # now it is a storage
        assert [r.name for r in storage.list_runs()] == ["beside"]


def test_new_and_empty_databases_are_created_unless_create_is_false(tmp_path):
    with pytest.raises(StorageNotFoundError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'sub' / 'new.db'}", create=False)
    assert not (tmp_path / "sub").exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(StorageNotFoundError):
        open_storage(f"sqlite:///{empty}", create=False)
    assert _tables(empty) == []
    with open_storage(f"sqlite:///{empty}"):
        pass
    assert "opto_runs" in _tables(empty)
    _make_storage(tmp_path / "runs.db")
    with open_storage(f"sqlite:///{tmp_path / 'runs.db'}", create=False) as storage:
        assert not storage.read_only and storage.list_runs()[0].name == "exp"


# -- passwords ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://h/db?password=secret", "postgresql://h/db?password=***"),
        (
            "postgresql://u:se@cret@h:5/db?sslmode=require&PASSWORD=secret&sslpassword=secret",
            "postgresql://u:***@h:5/db?sslmode=require&PASSWORD=***&sslpassword=***",
        ),
        ("postgresql://h/db?api_key=secret#f", "postgresql://h/db?api_key=***#f"),
        ("sqlite:///a/b@c.db?mode=ro", "sqlite:///a/b@c.db?mode=ro"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_redact_url_hides_userinfo_and_query_passwords(url, shown):
    assert redact_url(url) == shown


def test_error_messages_never_show_a_query_string_password():
    with pytest.raises(StorageURLError) as info:
        open_storage("mysql://user@host/db?password=secret")
    assert "secret" not in str(info.value) and "password=***" in str(info.value)


def test_unreachable_postgres_hides_a_query_string_password():
    pytest.importorskip("psycopg", reason="needs the postgres extra: opto-utils[postgres]")
    from opto.utils.storage import StorageBackendError

    with pytest.raises(StorageBackendError) as info:
        open_storage("postgresql://127.0.0.1:9/db?password=secret&connect_timeout=5")
    assert "secret" not in str(info.value) and "password=***" in str(info.value)


# -- standard JSON -----------------------------------------------------------------------


def test_export_is_standard_json_with_non_finite_numbers_as_null(tmp_path):
    with open_storage(f"sqlite:///{tmp_path / 'runs.db'}") as storage:
        run = storage.create_run("exp", config={"limit": math.inf})
        storage.append_step(
            run,
            parameters={"w": [1.0, math.nan]},
            scores={"acc": math.nan, "loss": -math.inf, "f1": 0.5},
            feedback={"ratio": math.inf},
        )
        storage.save_checkpoint(run, {"best": math.nan})
        storage.log_event(run, "score", (math.nan, 1))
        assert storage.get_step(run, 0).scores["loss"] == -math.inf  # stored as given
        exported = storage.export_run(run)
    text = json.dumps(exported, allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text
    step = exported["steps"][0]
    assert step["scores"] == {"acc": None, "loss": None, "f1": 0.5}
    assert step["parameters"] == {"w": [1.0, None]} and step["feedback"] == {"ratio": None}
    assert exported["run"]["config"] == {"limit": None}
    assert exported["checkpoints"][0]["state"] == {"best": None}
    assert exported["events"][0]["payload"] == [None, 1]


def test_standard_json_keeps_finite_values_and_other_types():
    value = {"a": (1, 2.5, True, None, "NaN"), "b": [{"c": float("-inf")}]}
    assert standard_json(value) == {"a": [1, 2.5, True, None, "NaN"], "b": [{"c": None}]}
    assert json.loads(json.dumps(standard_json(value), allow_nan=False)) == standard_json(value)
