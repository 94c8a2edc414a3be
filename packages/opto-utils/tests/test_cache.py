"""SQLite response cache: keys, hits and misses, rollout ids, threads, processes, bad files."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opto.utils import track_usage
from opto.utils.cache import CacheError, ResponseCache, request_key, resolve_cache
from opto.utils.testing import ScriptedLLM

USER = [{"role": "user", "content": "question"}]


def test_key_ignores_credentials_endpoints_and_none_options():
    base = request_key("m", USER, {"temperature": 0})
    assert base == request_key(
        "m", USER, {"temperature": 0, "api_key": "sk-1", "api_base": "http://a", "base_url": "b",
                    "timeout": 3, "extra_headers": {"x": 1}, "vertex_token": "t", "seed": None},
    )  # fmt: skip
    assert "sk-1" not in json.dumps(base)


def test_key_depends_on_model_messages_options_and_rollout():
    base = request_key("m", USER, {"temperature": 0})
    assert base == request_key("m", list(USER), {"temperature": 0}, None)
    assert base != request_key("m2", USER, {"temperature": 0})
    assert base != request_key("m", [{"role": "user", "content": "other"}], {"temperature": 0})
    assert base != request_key("m", USER, {"temperature": 1})
    assert base != request_key("m", USER, {"temperature": 0}, rollout_id=1)
    assert request_key("m", USER, {"a": 1, "b": 2}) == request_key("m", USER, {"b": 2, "a": 1})


def test_hit_is_free_and_marked(tmp_path: Path):
    llm = ScriptedLLM(["first", "second"], cache=tmp_path / "c.db", cost_per_call=0.01)
    with track_usage() as u:
        a = llm(messages=USER)
        b = llm(messages=USER)
    assert a.content == b.content == "first" and llm.calls == 1
    assert not a.cached and b.cached and b.usage.cost_usd == 0.0
    assert u.calls == 2 and u.cached_calls == 1 and u.cost_usd == pytest.approx(0.01)
    assert u.total_tokens == a.usage.total_tokens


def test_hits_pass_a_spent_budget(tmp_path: Path):
    llm = ScriptedLLM(["only"], cache=tmp_path / "c.db")
    llm(messages=USER)
    with track_usage(max_calls=0) as u:
        assert llm(messages=USER).content == "only"
    assert u.cached_calls == 1


def test_rollout_ids_get_distinct_samples(tmp_path: Path):
    llm = ScriptedLLM(["s0", "s1", "s2"], cache=tmp_path / "c.db")
    samples = [llm(messages=USER, rollout_id=i).content for i in range(3)]
    assert samples == ["s0", "s1", "s2"]
    assert llm(messages=USER, rollout_id=1).content == "s1" and llm.calls == 3


def test_per_call_opt_out(tmp_path: Path):
    llm = ScriptedLLM(["a", "b"], cache=tmp_path / "c.db")
    llm(messages=USER)
    assert llm(messages=USER, cache=False).content == "b"


def test_errors_are_not_cached(tmp_path: Path):
    from opto.utils.llm import AuthenticationError

    llm = ScriptedLLM([AuthenticationError("no"), "ok"], cache=tmp_path / "c.db")
    with pytest.raises(AuthenticationError):
        llm(messages=USER)
    assert llm(messages=USER).content == "ok"


def test_env_var_enables_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "env.db"
    monkeypatch.setenv("OPTO_LLM_CACHE", str(path))
    llm = ScriptedLLM(["a", "b"])
    assert llm(messages=USER).content == llm(messages=USER).content == "a"
    assert path.exists()
    monkeypatch.setenv("OPTO_LLM_CACHE", "0")
    assert resolve_cache(None) is None
    assert ScriptedLLM(["x"], cache=False).cache is None


def test_env_var_true_uses_the_default_location(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("OPTO_LLM_CACHE", "1")
    cache = resolve_cache(None)
    assert cache is not None and cache.path == (tmp_path / "opto" / "llm_cache.sqlite3").resolve()


def test_threads_share_one_file(tmp_path: Path):
    cache = ResponseCache(tmp_path / "t.db")

    def work(i: int) -> None:
        cache.put(f"k{i}", {"v": i})
        assert cache.get(f"k{i}") == {"v": i}

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(200)))
    assert len(cache) == 200


CHILD = textwrap.dedent(
    """
    import sys
    from opto.utils.testing import ScriptedLLM
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "write":
        llm = ScriptedLLM([f"sample-{i}" for i in range(3)], cache=path)
        print([llm(messages=[{"role": "user", "content": "q"}], rollout_id=i).content
               for i in range(3)])
    elif mode == "read":
        llm = ScriptedLLM(["fresh"], cache=path)
        out = [llm(messages=[{"role": "user", "content": "q"}], rollout_id=i).content
               for i in (0, 1, 2, 3)]
        print(out, llm.calls)
    else:
        from opto.utils.cache import ResponseCache
        cache = ResponseCache(path, on_error="raise")
        for i in range(100):
            cache.put(f"{mode}-{i}", {"i": i})
        print(len(cache))
    """
)


def _child(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_cache_across_two_processes(tmp_path: Path):
    path = str(tmp_path / "shared.db")
    assert _child(path, "write") == "['sample-0', 'sample-1', 'sample-2']"
    assert _child(path, "read") == "['sample-0', 'sample-1', 'sample-2', 'fresh'] 1"


def test_concurrent_writer_processes(tmp_path: Path):
    path = str(tmp_path / "busy.db")
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, path, tag], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert len(ResponseCache(path)) == 200


def test_corrupt_file_is_logged_and_bypassed(tmp_path: Path, caplog):
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database" * 100)
    llm = ScriptedLLM(["a", "b"], cache=ResponseCache(path))
    with caplog.at_level(logging.WARNING, logger="opto.utils.cache"):
        assert llm(messages=USER).content == "a"
        assert llm(messages=USER).content == "b"  # no cache: both calls reach the model
    warnings = [r for r in caplog.records if "unusable" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()
    assert not llm.cache.usable


def test_corrupt_file_raises_typed_error_when_asked(tmp_path: Path):
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"\x00garbage" * 300)
    with pytest.raises(CacheError, match="unusable"):
        ResponseCache(path, on_error="raise").get("k")


def test_foreign_database_is_not_touched(tmp_path: Path, caplog):
    path = tmp_path / "foreign.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    cache = ResponseCache(path)
    with caplog.at_level(logging.WARNING, logger="opto.utils.cache"):
        cache.put("k", {"v": 1})
        assert cache.get("k") is None
    assert "not an opto LLM cache" in caplog.text
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"users"}
    with pytest.raises(CacheError, match="not an opto LLM cache"):
        ResponseCache(path, on_error="raise").get("k")


def test_newer_format_version_is_reported(tmp_path: Path):
    path = tmp_path / "future.db"
    ResponseCache(path).put("k", {"v": 1})
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE opto_cache_meta SET value = '99' WHERE name = 'version'")
    with pytest.raises(CacheError, match="version 99"):
        ResponseCache(path, on_error="raise").get("k")


def test_unreadable_entry_is_a_miss(tmp_path: Path):
    path = tmp_path / "c.db"
    cache = ResponseCache(path)
    cache.put("k", {"v": 1})
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE responses SET response = '{broken' WHERE key = 'k'")
    assert cache.get("k") is None


def test_cache_pickles_by_path(tmp_path: Path):
    import pickle

    cache = ResponseCache(tmp_path / "p.db")
    cache.put("k", {"v": 2})
    assert pickle.loads(pickle.dumps(cache)).get("k") == {"v": 2}
