"""The small shared helpers: errors, require, lazy_exports/init_package, atomic_write, jsonable."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import types
from fractions import Fraction
from pathlib import Path

import attrs
import pytest
from opto.utils import files
from opto.utils.errors import MissingExtraError, OptoError
from opto.utils.files import atomic_write
from opto.utils.imports import install_hint, require
from opto.utils.jsonable import dumps, jsonable

# -- errors / require ---------------------------------------------------------------------


def test_require_returns_an_installed_module():
    assert require("json", "never-needed") is json


def test_missing_extra_is_an_import_error_and_an_opto_error_with_both_hints():
    with pytest.raises(ImportError) as caught:
        require("opto_no_such_module_xyz", "litellm", package="utils", purpose="LiteLLM")
    error = caught.value
    assert isinstance(error, MissingExtraError) and isinstance(error, OptoError)
    message = str(error)
    assert "pip install 'opto-utils[litellm]'" in message
    assert "uv sync --all-packages --extra litellm" in message
    assert "LiteLLM needs 'opto_no_such_module_xyz'" in message
    assert (error.module, error.extra, error.package, error.name) == (
        "opto_no_such_module_xyz",
        "litellm",
        "opto-utils",
        "opto_no_such_module_xyz",
    )
    assert isinstance(error.__cause__, ModuleNotFoundError)


def test_missing_extra_error_survives_pickling():
    # errors cross process boundaries (worker pools, Ray): the details must come back
    error = MissingExtraError("msg", module="m", extra="x", package="opto-utils")
    back = pickle.loads(pickle.dumps(error))
    assert (str(back), back.module, back.extra, back.package, back.name) == (
        "msg",
        "m",
        "x",
        "opto-utils",
        "m",
    )


def test_install_hint_accepts_short_and_full_distribution_names():
    assert install_hint("ray", "trainers") == install_hint("ray", "opto-trainers")
    assert "pip install 'opto-trainers[ray]'" in install_hint("ray", "trainers")


def test_every_opto_utils_exception_derives_from_opto_error():
    from opto.utils import cache, testing, usage
    from opto.utils.llm import errors as llm_errors
    from opto.utils.storage import errors as storage_errors

    classes = [
        value
        for module in (cache, testing, usage, llm_errors, storage_errors)
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
    ]
    assert len(classes) > 20
    assert [c for c in classes if not issubclass(c, OptoError)] == []
    assert issubclass(storage_errors.StorageURLError, ValueError)  # other bases are kept


# -- lazy_exports -------------------------------------------------------------------------


@pytest.fixture
def lazy_package(tmp_path, monkeypatch):
    """A real package on disk whose __init__ uses lazy_exports."""
    root = tmp_path / "lazy_pkg_demo"
    root.mkdir()
    (root / "heavy.py").write_text("LOADED = True\nclass Heavy:\n    pass\n")
    (root / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from opto.utils.lazy import lazy_exports\n"
        "if TYPE_CHECKING:\n"
        "    from lazy_pkg_demo.heavy import Heavy\n"
        "_EXPORTS = {'Heavy': '.heavy', 'heavy_module': ('.heavy', None),\n"
        "            'Ghost': 'lazy_pkg_demo.ghost', 'Alias': ('.heavy', 'Heavy')}\n"
        "__all__ = ['Alias', 'Heavy', 'heavy_module']\n"
        "__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "lazy_pkg_demo"
    for name in [n for n in sys.modules if n.startswith("lazy_pkg_demo")]:
        del sys.modules[name]


def test_lazy_exports_import_on_first_access_and_cache(lazy_package):
    import importlib

    package = importlib.import_module(lazy_package)
    assert f"{lazy_package}.heavy" not in sys.modules
    heavy = package.Heavy
    assert f"{lazy_package}.heavy" in sys.modules
    assert heavy.__name__ == "Heavy" and package.Alias is heavy
    assert isinstance(package.heavy_module, types.ModuleType)
    assert vars(package)["Heavy"] is heavy  # cached in the namespace


def test_lazy_exports_dir_lists_every_name_before_import(lazy_package):
    import importlib

    package = importlib.import_module(lazy_package)
    listed = dir(package)
    assert {"Heavy", "Alias", "heavy_module", "Ghost", "__getattr__"} <= set(listed)
    assert listed == sorted(listed)


def test_lazy_exports_unknown_and_missing_names_are_attribute_errors(lazy_package):
    import importlib

    package = importlib.import_module(lazy_package)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = package.Nope
    with pytest.raises(AttributeError, match=r"lazy_pkg_demo\.ghost. is missing"):
        _ = package.Ghost
    assert not hasattr(package, "Nope")


def test_init_package_keeps_the_package_logger_off_stderr_and_exports_lazily(lazy_package):
    # pytest installs logging handlers, so run a plain interpreter: with no logging configured,
    # the package's records must not reach Python's last-resort handler; others still do.
    script = (
        "import logging\n"
        "from opto.utils.lazy import init_package\n"
        f"getattr_, dir_ = init_package({lazy_package!r}, {{'Heavy': '.heavy'}})\n"
        f"logging.getLogger({lazy_package!r} + '.sub').warning('stays inside logging')\n"
        "logging.getLogger('elsewhere').warning('reaches stderr')\n"
        f"import {lazy_package}\n"
        "assert 'Heavy' in dir_() and getattr_('Heavy').__name__ == 'Heavy'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == "reaches stderr\n"


# -- atomic_write -------------------------------------------------------------------------


def test_atomic_write_text_and_bytes_and_creates_folders(tmp_path):
    target = tmp_path / "a" / "b" / "state.json"
    assert atomic_write(target, "héllo") == target
    assert target.read_text(encoding="utf-8") == "héllo"
    atomic_write(str(target), b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_atomic_write_keeps_the_old_file_when_the_write_fails_midway(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old content")
    real_fsync = os.fsync

    def failing_fsync(fd):
        # the new content is already in the temp file: fail before the rename
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "new content that never lands")
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    assert target.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # temp file removed


def test_atomic_write_of_a_value_that_cannot_be_written_keeps_the_old_file(tmp_path):
    target = tmp_path / "state.txt"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write(target, "ok so far \ud800 lone surrogate")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.txt"]


# -- jsonable -----------------------------------------------------------------------------


def test_jsonable_nan_rule_gives_standard_json():
    data = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "ok": 1.5}
    out = jsonable(data)
    assert out == {"nan": "NaN", "inf": "Infinity", "ninf": "-Infinity", "ok": 1.5}
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert math.isnan(float(out["nan"])) and float(out["ninf"]) == -math.inf
    assert dumps([math.nan]) == '["NaN"]'


def test_jsonable_null_rule_for_exports_and_logs_reaches_nested_values():
    @attrs.define
    class Point:
        y: float

    data = {"a": (math.nan, [math.inf]), "b": Point(-math.inf), "c": {2.5, math.nan}, "d": "NaN"}
    out = jsonable(data, nonfinite="null")
    assert out == {"a": [None, [None]], "b": {"y": None}, "c": [2.5, None], "d": "NaN"}
    assert dumps({"x": math.inf}, nonfinite="null") == '{"x": null}'
    with pytest.raises(ValueError, match="nonfinite must be 'text' or 'null'"):
        jsonable(1.0, nonfinite="none")  # type: ignore[arg-type]


def test_storage_standard_json_is_the_null_rule():
    from opto.utils.storage import standard_json

    value = {"s": {1: (math.nan, object)}, "t": -math.inf}
    assert standard_json(value) == jsonable(value, nonfinite="null")
    assert standard_json(value) == {"s": {"1": [None, repr(object)]}, "t": None}


def test_jsonable_numbers_containers_and_keys():
    assert jsonable({1: (2, Fraction(1, 2)), None: True}) == {"1": [2, 0.5], "None": True}
    assert jsonable({3, 1, 2}) == [1, 2, 3]
    assert jsonable(frozenset({"b", "a"})) == ["a", "b"]
    assert type(jsonable(True)) is bool


def test_jsonable_objects_attrs_to_dict_and_repr():
    @attrs.define
    class Point:
        x: int
        y: float

    class WithToDict:
        def to_dict(self):
            return {"k": (1, math.inf)}

    class Broken:
        def to_dict(self):
            raise RuntimeError("no")

        def __repr__(self):
            return "<Broken>"

    assert jsonable(Point(1, math.nan)) == {"x": 1, "y": "NaN"}
    assert jsonable(WithToDict()) == {"k": [1, "Infinity"]}
    assert jsonable(Broken()) == "<Broken>"
    assert jsonable(object) == repr(object)
    assert jsonable(Path("a")) == repr(Path("a"))


def test_jsonable_cycles_become_repr_instead_of_recursing():
    loop: list = [1]
    loop.append(loop)
    assert jsonable(loop) == [1, "[1, [...]]"]
    shared = [1]
    assert jsonable([shared, shared]) == [[1], [1]]  # repeated, not cyclic


# -- get_or_create --------------------------------------------------------------------------


def test_get_or_create_runs_create_once_for_concurrent_callers():
    import threading

    from opto.utils.once import get_or_create

    cache: dict[str, object] = {}
    lock = threading.Lock()
    calls = []
    inside = threading.Event()
    release = threading.Event()

    def create() -> object:
        calls.append(1)
        inside.set()
        release.wait(60)  # hold the lock while the other threads arrive
        return object()

    results: list[object] = []
    first = threading.Thread(target=lambda: results.append(get_or_create(cache, "k", lock, create)))
    first.start()
    inside.wait(60)
    others = [
        threading.Thread(target=lambda: results.append(get_or_create(cache, "k", lock, create)))
        for _ in range(4)
    ]
    for t in others:
        t.start()
    release.set()
    for t in [first, *others]:
        t.join(60)  # generous: the machine may be loaded
    assert len(calls) == 1
    assert len(results) == 5 and all(r is cache["k"] for r in results)


def test_get_or_create_hits_without_the_lock_and_recreates_a_stored_none():
    import threading

    from opto.utils.once import get_or_create

    lock = threading.Lock()
    cache: dict[str, object | None] = {"hit": "value", "none": None}
    with lock:  # a hit never takes the lock (this would deadlock otherwise)
        assert get_or_create(cache, "hit", lock, lambda: "other") == "value"
    assert get_or_create(cache, "none", lock, lambda: "made") == "made"
    assert cache["none"] == "made"
