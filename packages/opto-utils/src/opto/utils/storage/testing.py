"""A throwaway PostgreSQL server for tests of code that uses the run storage.

`PostgresServer` runs `initdb` into a temporary directory and starts `postgres` on
127.0.0.1 on a free port (trust authentication, no Unix socket, fsync off: for tests
only), then removes everything on `stop()`. When the current user is root it runs the
server as the `postgres` system user, since PostgreSQL refuses to run as root. It needs
the PostgreSQL server binaries (Debian: `apt-get install postgresql`), found by
`find_postgres_bindir()`; psycopg is only needed to connect, not to start the server::

    with PostgresServer() as server:
        storage = open_storage(server.create_database())
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

from .errors import StorageError

__all__ = ["PostgresServer", "PostgresServerError", "find_postgres_bindir"]

logger = logging.getLogger(__name__)

_SERVER_SETTINGS = """
# Added by opto.utils.storage.testing: a disposable test server on loopback only.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
"""
_START_ATTEMPTS = 5


class PostgresServerError(StorageError):
    """The test PostgreSQL server could not be found, initialized, started or used."""


def find_postgres_bindir() -> Path | None:
    """Folder holding `initdb`, `pg_ctl` and `postgres`, or None if not installed.

    Looks at `OPTO_POSTGRES_BINDIR`, then `pg_config --bindir`, then the usual Debian,
    source-build and Homebrew locations, then `PATH`.
    """
    candidates: list[str] = []
    if os.environ.get("OPTO_POSTGRES_BINDIR"):
        candidates.append(os.environ["OPTO_POSTGRES_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if result.returncode == 0:
            candidates.append(result.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates += ["/usr/local/pgsql/bin", *sorted(glob.glob("/opt/homebrew/opt/postgresql*/bin"))]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for candidate in candidates:
        folder = Path(candidate)
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """The environment without PG* variables, which would redirect our client tools."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


class PostgresServer:
    """A private PostgreSQL server for one test session; use as a context manager."""

    def __init__(self, bindir: str | os.PathLike[str] | None = None) -> None:
        """Prepare a server from the binaries in `bindir` (default: `find_postgres_bindir()`)."""
        found = Path(bindir) if bindir is not None else find_postgres_bindir()
        if found is None:
            raise PostgresServerError(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install "
                "them (Debian/Ubuntu: apt-get install postgresql) or set OPTO_POSTGRES_BINDIR"
            )
        self.bindir = found
        self.port: int | None = None
        self._root: Path | None = None

    @property
    def running(self) -> bool:
        """Whether `start()` succeeded and `stop()` has not been called."""
        return self.port is not None

    @property
    def url(self) -> str:
        """URL of the server's default `postgres` database (psycopg 3 driver)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """URL of database `name` on this server."""
        if self.port is None:
            raise PostgresServerError("the PostgreSQL test server is not running; call start()")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        """Create a cluster in a temporary directory and start the server on a free port."""
        if self.running:
            return
        self._root = Path(tempfile.mkdtemp(prefix="opto-postgres-"))
        try:
            self._hand_over(self._root)
            data = self._root / "data"
            self._run_as_server_user(
                [
                    str(self.bindir / "initdb"),
                    "-D", str(data),
                    "-U", "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                "initdb",
            )  # fmt: skip
            with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write(_SERVER_SETTINGS)
            self._start_on_free_port(data)
        except BaseException:
            self._remove_files()
            raise
        logger.info(
            "started PostgreSQL test server from %s on 127.0.0.1:%d", self.bindir, self.port
        )

    def _start_on_free_port(self, data: Path) -> None:
        assert self._root is not None
        log = self._root / "server.log"
        for _attempt in range(_START_ATTEMPTS):
            port = _free_port()
            command = [
                str(self.bindir / "pg_ctl"),
                "-D", str(data),
                "-l", str(log),
                "-w", "-t", "120",
                "-o", f"-p {port}",
                "start",
            ]  # fmt: skip
            result = self._run_as_server_user(command, "pg_ctl start", check=False)
            if result.returncode == 0:
                self.port = port
                return
            server_log = log.read_text(errors="replace") if log.exists() else ""
            if "could not bind" not in server_log and "in use" not in server_log:
                raise PostgresServerError(
                    f"PostgreSQL failed to start:\n{result.stdout}{result.stderr}\n{server_log}"
                )
            logger.info("port %d was taken, trying another one", port)
        raise PostgresServerError(f"no free port found after {_START_ATTEMPTS} attempts")

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (default: a unique name) and return its URL."""
        name = name or f"opto_test_{uuid.uuid4().hex[:12]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database names must match [a-z_][a-z0-9_]*, not {name!r}")
        url = self.database_url(name)
        command = [
            str(self.bindir / "createdb"),
            "-h", "127.0.0.1",
            "-p", str(self.port),
            "-U", "postgres",
            name,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, env=_clean_env())
        if result.returncode != 0:
            raise PostgresServerError(f"createdb {name} failed: {result.stderr.strip()}")
        return url

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its files."""
        if self._root is None:
            return
        if self.port is not None:
            command = [str(self.bindir / "pg_ctl"), "-D", str(self._root / "data"), "-m", "fast"]
            result = self._run_as_server_user([*command, "-w", "stop"], "pg_ctl stop", check=False)
            if result.returncode != 0:
                logger.warning("pg_ctl stop failed: %s", (result.stdout + result.stderr).strip())
            self.port = None
        self._remove_files()

    def _remove_files(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- running as the postgres user ----------------------------------------------------------

    @staticmethod
    def _as_root() -> bool:
        return hasattr(os, "geteuid") and os.geteuid() == 0

    def _hand_over(self, folder: Path) -> None:
        """Give `folder` to the `postgres` user when we are root (PostgreSQL refuses root)."""
        if not self._as_root():
            return
        import pwd

        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresServerError(
                "running as root, and there is no 'postgres' user to run the server as; "
                "create one (useradd --system postgres) or run the tests as another user"
            ) from None
        os.chown(folder, account.pw_uid, account.pw_gid)

    def _run_as_server_user(
        self, command: list[str], what: str, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if self._as_root():
            if shutil.which("runuser"):
                command = ["runuser", "-u", "postgres", "--", *command]
            else:
                command = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(command)]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=_clean_env(),
            cwd=self._root,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise PostgresServerError(f"{what} failed:\n{result.stdout}{result.stderr}")
        return result
