"""Storage errors that need no database: missing extras, records, the test-server helper."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest
from opto.utils.storage import MissingDependencyError, RunRecord, RunStatus, StorageError
from opto.utils.storage.testing import PostgresServer, PostgresServerError, find_postgres_bindir


def _run_blocking(module: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where importing `module` fails."""
    script = f"import sys\nsys.modules[{module!r}] = None\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


def test_without_sqlalchemy_the_package_imports_and_explains_the_extra():
    result = _run_blocking(
        "sqlalchemy",
        """
        import opto.utils.storage as storage
        from opto.utils.storage import MissingDependencyError, RunStatus
        for attempt in (lambda: storage.open_storage("sqlite://"), lambda: storage.Storage):
            try:
                attempt()
            except MissingDependencyError as exc:
                assert isinstance(exc, ImportError)
                print(exc)
            else:
                raise SystemExit("no error")
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("pip install 'opto-utils[storage]'") == 2


def test_without_psycopg_postgres_urls_explain_the_extra():
    pytest.importorskip("sqlalchemy", reason="needs the storage extra: opto-utils[storage]")
    result = _run_blocking(
        "psycopg",
        """
        from opto.utils.storage import MissingDependencyError, open_storage
        try:
            open_storage("postgresql://user:secret@127.0.0.1:9/db")
        except MissingDependencyError as exc:
            print(exc)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'opto-utils[postgres]'" in result.stdout


def test_unreachable_postgres_is_reported_without_the_password():
    pytest.importorskip("sqlalchemy", reason="needs the storage extra: opto-utils[storage]")
    pytest.importorskip("psycopg", reason="needs the postgres extra: opto-utils[postgres]")
    from opto.utils.storage import StorageBackendError, open_storage

    with pytest.raises(StorageBackendError) as info:
        open_storage("postgresql://user:secret@127.0.0.1:9/db")
    assert "secret" not in str(info.value) and "127.0.0.1:9" in str(info.value)


def test_missing_dependency_error_is_a_storage_and_import_error():
    assert issubclass(MissingDependencyError, StorageError)
    assert issubclass(MissingDependencyError, ImportError)


def test_records_export_iso_timestamps_and_status_values():
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    run = RunRecord(
        id=1,
        name="exp",
        config={"a": [1]},
        seed=None,
        status=RunStatus.FAILED,
        created_at=moment,
        updated_at=moment,
        finished_at=None,
    )
    assert run.to_dict() == {
        "id": 1,
        "name": "exp",
        "config": {"a": [1]},
        "seed": None,
        "status": "failed",
        "created_at": "2026-01-02T03:04:05+00:00",
        "updated_at": "2026-01-02T03:04:05+00:00",
        "finished_at": None,
    }
    assert RunStatus.FAILED.finished and not RunStatus.RUNNING.finished


def test_postgres_server_explains_missing_binaries(tmp_path, monkeypatch):
    monkeypatch.setattr("opto.utils.storage.testing.find_postgres_bindir", lambda: None)
    with pytest.raises(PostgresServerError, match="apt-get install postgresql"):
        PostgresServer()
    server = PostgresServer(tmp_path)  # an explicit folder is taken as given
    with pytest.raises(PostgresServerError, match="not running"):
        server.url


def test_find_postgres_bindir_honours_the_environment(tmp_path, monkeypatch):
    for tool in ("initdb", "pg_ctl", "postgres"):
        (tmp_path / tool).write_text("")
    monkeypatch.setenv("OPTO_POSTGRES_BINDIR", str(tmp_path))
    assert find_postgres_bindir() == tmp_path


def test_importing_the_package_loads_no_database_library():
    code = (
        "import sys, opto.utils.storage, opto.utils.storage.testing\n"
        "print(sorted(m for m in ('sqlalchemy', 'psycopg') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
