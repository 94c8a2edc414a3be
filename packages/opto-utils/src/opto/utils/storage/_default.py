"""The default run storage, shared by trainers, `opto-runs` and `open_storage()`."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_FILE", "STORAGE_ENV", "default_storage_url", "storage_url_of"]

#: Environment variable naming the run storage (a URL, or a SQLite file path).
STORAGE_ENV = "OPTO_STORAGE_URL"

#: SQLite file, in the working directory, used when `OPTO_STORAGE_URL` is unset.
DEFAULT_FILE = "opto-runs.db"


def storage_url_of(value: str | os.PathLike[str]) -> str:
    """A storage URL as given; a plain path becomes the absolute SQLite URL of that file."""
    text = os.fspath(value)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def default_storage_url() -> str:
    """`OPTO_STORAGE_URL` (a URL or a SQLite file path), else the SQLite file
    `opto-runs.db` in the working directory, as an absolute URL.

    Trainers write there unless given `storage=`, and `opto-runs` reads there unless given
    `--storage`, so runs are found without naming the storage.
    """
    configured = os.environ.get(STORAGE_ENV, "").strip()
    return storage_url_of(configured or DEFAULT_FILE)
