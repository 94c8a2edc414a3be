"""`opto-runs`: list, show, best and export runs of a real SQLite storage; errors and exit codes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

pytest.importorskip("sqlalchemy", reason="run storage needs opto-utils[storage]")

from opto.trainers import cli
from opto.utils.storage import open_storage

CODE_V1 = "def route(q):\n    return 'tech'\n"
CODE_V2 = "def route(q):\n    if 'invoice' in q:\n        return 'billing'\n    return 'tech'\n"


@pytest.fixture
def db(tmp_path):
    """A storage with a finished prompt-tuning run and an unscored run."""
    path = tmp_path / "runs.db"
    with open_storage(f"sqlite:///{path}") as storage:
        run = storage.create_run("tuning", config={"batch_size": 2}, seed=7)
        storage.append_step(
            run,
            parameters={"prompt": "Be brief.", "route": CODE_V1, "k": 1},
            scores={"train": 0.25, "test": 0.5},
            feedback="too terse",
            usage={"calls": 3, "total_tokens": 900, "cost_usd": 0.002},
        )
        storage.append_step(
            run,
            parameters={"prompt": "Be brief and polite.", "route": CODE_V2, "k": 1},
            scores={"train": 0.75, "test": 0.9},
            feedback="better",
            usage={"calls": 4, "total_tokens": 1100, "cost_usd": 0.003},
        )
        storage.append_step(
            run,
            parameters={"prompt": "Be polite.", "route": CODE_V2, "k": 2},
            scores={"train": 1.0, "test": 0.8},
            usage={"calls": 2, "total_tokens": 500, "cost_usd": 0.001},
        )
        storage.set_status(run, "completed")
        storage.create_run("empty")
    return path


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_shows_every_run_with_steps_best_score_and_usage(db, capsys):
    code, out, err = run_cli(capsys, "--storage", f"sqlite:///{db}", "list")
    assert code == cli.EXIT_OK, err
    lines = out.splitlines()
    tuning = next(line for line in lines if " tuning " in line)
    assert "completed" in tuning and "test=0.9" in tuning
    assert "calls=9" in tuning and "tokens=2500" in tuning and "USD=0.006" in tuning
    empty = next(line for line in lines if " empty " in line)
    assert "running" in empty


def test_list_json_and_status_filter(db, capsys):
    code, out, _ = run_cli(capsys, "list", "--storage", str(db), "--json", "--status", "completed")
    assert code == 0
    (summary,) = json.loads(out)
    assert summary["name"] == "tuning" and summary["steps"] == 3
    assert summary["best_key"] == "test" and summary["best_iteration"] == 1
    assert summary["usage"]["calls"] == 9


def test_show_prints_scores_usage_and_parameter_diffs(db, capsys):
    code, out, _ = run_cli(capsys, "--storage", str(db), "show", "tuning", "--feedback")
    assert code == 0
    assert "seed:    7" in out and '"batch_size": 2' in out
    step0, step1, step2 = out.split("\nstep ")[1:]
    assert step0.startswith("0: test=0.5 train=0.25") and "calls=3 tokens=900" in step0
    assert "prompt = Be brief." in step0 and "too terse" in step0
    # a short value changes as old -> new; code as a unified diff
    assert "~ prompt: Be brief. -> Be brief and polite." in step1
    assert "+    if 'invoice' in q:" in step1 and "-    return 'tech'" not in step1
    assert "~ k: 1 -> 2" in step2 and "route" not in step2


def test_show_by_id_and_as_json(db, capsys):
    code, out, _ = run_cli(capsys, "--storage", str(db), "show", "1", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["run"]["name"] == "tuning"
    assert [s["scores"]["test"] for s in data["steps"]] == [0.5, 0.9, 0.8]


def test_best_prints_the_best_parameters_by_key_and_mode(db, capsys):
    code, out, _ = run_cli(capsys, "--storage", str(db), "best", "tuning")
    assert code == 0
    assert "step 1, test=0.9" in out and "Be brief and polite." in out
    assert "        return 'billing'" in out  # code printed in full, indented
    code, out, _ = run_cli(capsys, "--storage", str(db), "best", "tuning", "--key", "train")
    assert "step 2, train=1" in out
    code, out, _ = run_cli(
        capsys, "--storage", str(db), "best", "tuning", "--key", "test", "--mode", "min", "--json"
    )
    best = json.loads(out)
    assert (best["iteration"], best["score"]) == (0, 0.5)
    assert best["parameters"]["route"] == CODE_V1


def test_best_without_such_score_exits_3_naming_the_keys(db, capsys):
    code, _, err = run_cli(capsys, "--storage", str(db), "best", "tuning", "--key", "loss")
    assert code == cli.EXIT_NOT_FOUND
    assert "no step with a score 'loss'" in err and "test, train" in err
    code, _, err = run_cli(capsys, "--storage", str(db), "best", "empty")
    assert code == cli.EXIT_NOT_FOUND and "no step with a score at all" in err


def test_export_writes_the_run_as_json(db, tmp_path, capsys):
    target = tmp_path / "out" / "run.json"
    target.parent.mkdir()
    code, out, _ = run_cli(capsys, "--storage", str(db), "export", "tuning", "-o", str(target))
    assert code == 0 and "3 steps" in out
    data = json.loads(target.read_text())
    assert data["format"] == "opto-run" and data["run"]["name"] == "tuning"
    assert data["steps"][1]["parameters"]["route"] == CODE_V2
    code, out, _ = run_cli(capsys, "--storage", str(db), "export", "empty", "-o", "-")
    assert json.loads(out)["steps"] == []


def test_export_into_a_missing_directory_is_a_usage_error(db, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "--storage", str(db), "export", "tuning", "-o", str(tmp_path / "no" / "x.json")
    )
    assert code == cli.EXIT_USAGE and "does not exist" in err


def test_unknown_run_exits_3_and_suggests_a_name(db, capsys):
    code, out, err = run_cli(capsys, "--storage", str(db), "show", "tunign")
    assert code == cli.EXIT_NOT_FOUND and out == ""
    assert "no run 'tunign'" in err and "Did you mean 'tuning'?" in err


def test_missing_database_file_is_not_created(tmp_path, capsys):
    missing = tmp_path / "nope.db"
    code, _, err = run_cli(capsys, "--storage", f"sqlite:///{missing}", "list")
    assert code == cli.EXIT_USAGE and "does not exist" in err and "--storage" in err
    assert not missing.exists()


def test_bad_url_and_foreign_files_are_clear_errors(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--storage", "mysql://host/db", "list")
    assert code == cli.EXIT_USAGE and "unsupported storage backend 'mysql'" in err
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE t (x)")
    code, _, err = run_cli(capsys, "--storage", str(foreign), "list")
    assert code == cli.EXIT_STORAGE and "not an opto run storage" in err
    with sqlite3.connect(foreign) as connection:  # the tool wrote nothing into it
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert tables == {"t"}
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    code, _, err = run_cli(capsys, "--storage", str(garbage), "list")
    assert code == cli.EXIT_STORAGE and "not a database" in err


def test_storage_comes_from_the_environment(db, capsys, monkeypatch):
    monkeypatch.setenv("OPTO_STORAGE_URL", f"sqlite:///{db}")
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "tuning" in out


def test_default_storage_is_opto_runs_db_in_the_working_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPTO_STORAGE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "list")
    assert code == cli.EXIT_USAGE and "opto-runs.db does not exist" in err


def test_missing_command_is_an_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2


def test_a_real_training_run_can_be_inspected(tmp_path, capsys, fresh_graph):
    from opto import trace
    from opto.optimizers import OptoPrime
    from opto.trainers import ExactMatchGuide, MinibatchAlgorithm
    from opto.utils.testing import ScriptedLLM

    @trace.model
    class Greeter:
        def __init__(self):
            self.greeting = trace.node("Hi", name="greeting", trainable=True)

        def forward(self, name):
            return self.greeting + ", " + name + "!"

    reply = {"reasoning": "Use Hello.", "answer": "", "suggestion": {"greeting0": "Hello"}}
    agent = Greeter()
    optimizer = OptoPrime(agent.parameters(), llm=ScriptedLLM(default=json.dumps(reply)))
    data = {"inputs": ["Ada", "Bob"], "infos": ["Hello, Ada!", "Hello, Bob!"]}
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    MinibatchAlgorithm(agent, optimizer, seed=0).train(
        ExactMatchGuide(), data, batch_size=2, test_dataset=data, storage=url, run_name="greeter"
    )
    code, out, _ = run_cli(capsys, "--storage", url, "show", "greeter")
    assert code == 0
    assert "status:  completed" in out and "step 1: test=1 train=0" in out
    assert "greeting = Hello" in out and "calls=1" in out
    code, out, _ = run_cli(capsys, "--storage", url, "best", "greeter", "--json")
    assert json.loads(out)["parameters"] == {"greeting": "Hello"}


def test_entry_point_and_light_import():
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "opto-runs"]
    assert script.value == "opto.trainers.cli:main"
    code = (
        "import sys, opto.trainers.cli\n"
        "heavy = ['sqlalchemy', 'rich', 'opto.trace', 'opto.optimizers', 'opto.utils.storage']\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_runs_as_a_module_with_exit_codes(db):
    result = subprocess.run(
        [sys.executable, "-m", "opto.trainers.cli", "--storage", str(db), "show", "missing"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == cli.EXIT_NOT_FOUND
    assert result.stderr.startswith("opto-runs: error: no run 'missing'")


# -- terminal safety, standard JSON, read-only files -----------------------------------------

EVIL = "\x1b]0;pwned\x07\x1b[2J\r\x9b31m\u202e"
RAW_CONTROL = "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"


@pytest.fixture
def evil_db(tmp_path):
    """A run whose name, parameters, score keys and feedback hold terminal escapes."""
    path = tmp_path / "evil.db"
    with open_storage(f"sqlite:///{path}") as storage:
        run = storage.create_run(f"run{EVIL}", config={"note": EVIL})
        storage.append_step(
            run,
            parameters={f"p{EVIL}": f"v{EVIL}", "code": f"line1\nline2{EVIL}\n"},
            scores={f"s{EVIL}": 0.5, "test": 0.25},
            feedback=f"bad{EVIL}\nworse",
            usage={f"u{EVIL}": 1},
        )
        storage.append_step(
            run,
            parameters={f"p{EVIL}": f"w{EVIL}", "code": f"line1\nline3{EVIL}\n"},
            scores={"test": 0.5},
            feedback={"detail": EVIL},
        )
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["show", f"run{EVIL}", "--feedback"],
        ["best", f"run{EVIL}"],
        ["best", f"run{EVIL}", "--key", "missing"],
        ["show", f"rn{EVIL}"],
        ["list", "--json"],
        ["show", f"run{EVIL}", "--json"],
        ["best", f"run{EVIL}", "--json"],
        ["export", f"run{EVIL}", "-o", "-"],
    ],
)
def test_stored_control_characters_never_reach_the_terminal(evil_db, capsys, argv):
    import re

    _, out, err = run_cli(capsys, "--storage", str(evil_db), *argv)
    assert out or err
    assert not re.search(RAW_CONTROL, out + err), repr(out + err)
    if "--json" in argv or "export" in argv:
        assert f"run{EVIL}" in _strings(json.loads(out))  # the same values, escaped
    else:
        assert "\\x1b" in out + err and "\\u202e" in out + err


def _strings(value):
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


def test_escaping_helpers():
    assert cli.printable("a\x1b[31mb\tc\nd\x9b\u202e") == "a\\x1b[31mb\tc\nd\\x9b\\u202e"
    assert cli.inline("a\nb\tc\r") == "a\\nb\\tc\\r"
    assert cli.printable("naïve café ✓") == "naïve café ✓"


def _strict_json(text):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_and_exports_are_standard_json(tmp_path, capsys):
    import math

    path = tmp_path / "nan.db"
    with open_storage(f"sqlite:///{path}") as storage:
        run = storage.create_run("nan", config={"limit": math.inf})
        storage.append_step(run, scores={"test": math.nan, "train": 0.5}, feedback=math.nan)
        storage.append_step(run, scores={"test": math.nan, "train": -math.inf})
    for argv in (["list", "--json"], ["show", "nan", "--json"], ["best", "nan", "--json"]):
        code, out, err = run_cli(capsys, "--storage", str(path), *argv)
        assert code == 0, err
        _strict_json(out)
    code, _, _ = run_cli(capsys, "--storage", str(path), "export", "nan", "-o", str(tmp_path / "x"))
    exported = _strict_json((tmp_path / "x").read_text())
    assert exported["steps"][0]["scores"] == {"test": None, "train": 0.5}
    assert exported["steps"][0]["feedback"] is None and exported["run"]["config"] == {"limit": None}
    code, out, _ = run_cli(capsys, "--storage", str(path), "list", "--json")
    (summary,) = _strict_json(out)
    # NaN never wins: 'test' holds only NaN, so the best is by 'train' (and -inf loses to 0.5)
    assert summary["best_key"] == "train" and summary["best_iteration"] == 0


def test_inspecting_never_writes_to_the_database(db, capsys):
    before = db.read_bytes()
    for argv in (["list"], ["show", "tuning"], ["best", "tuning"]):
        code, _, err = run_cli(capsys, "--storage", f"sqlite:///{db}", *argv)
        assert code == 0, err
    assert db.read_bytes() == before


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_a_read_only_database_file_can_be_listed_and_shown(db):
    """chmod 0444 file in a 0555 folder; as root (which ignores permissions) the CLI runs in
    a forked child that dropped to the `nobody` user."""
    import io
    import os
    import shutil
    import stat
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="opto-cli-ro-"))
    path = folder / "runs.db"
    shutil.copy(db, path)
    path.chmod(0o444)
    folder.chmod(0o555)
    cli.main(["--storage", str(db), "list", "--json"])  # import everything before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read)
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
        except PermissionError:
            os.write(write, b"setuid failed")
            os._exit(0)
        try:
            # In memory: the `nobody` user may not write to TMPDIR (nox sets it to its own).
            out, err = io.StringIO(), io.StringIO()
            sys.stdout, sys.stderr = out, err
            codes = [
                cli.main(["--storage", str(path), "list"]),
                cli.main(["--storage", str(path), "show", "tuning"]),
                cli.main(["--storage", str(path), "best", "tuning", "--json"]),
            ]
            out.seek(0)
            err.seek(0)
            result = json.dumps([codes, out.read(), err.read()]).encode()
        except BaseException as exc:
            result = repr(exc).encode()
        os.write(write, result)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        result = pipe.read().decode()
    os.waitpid(pid, 0)
    folder.chmod(stat.S_IRWXU)
    shutil.rmtree(folder)
    if result == "setuid failed":
        pytest.skip("running as root without the right to drop privileges")
    codes, out, err = json.loads(result)
    assert codes == [0, 0, 0], err
    assert "tuning" in out and "Be brief and polite." in out
