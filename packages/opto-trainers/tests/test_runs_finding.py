"""Finding and reading runs: one default storage for trainers and `opto-runs`,
`opto-runs latest`, and readable feedback in `show`."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sqlalchemy", reason="run storage needs opto-utils[storage]")

import opto_trainers_test_support as S
from opto.trace import node
from opto.trainers import FunctionGuide, cli, train
from opto.trainers.checkpoint import default_storage_url
from opto.utils.storage import open_storage
from opto.utils.testing import ScriptedLLM


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train_once(run_name=None, **kwargs):
    param = node("v0", trainable=True)
    return train(
        model=param,
        train_dataset={"inputs": [None], "infos": ["v2"]},
        optimizer=S.StepOptimizer([param], ScriptedLLM(S.increment)),
        guide=FunctionGuide(lambda q, r, ref: (float(r == ref), f"got {r}\nwant {ref}")),
        logger="JSONLLogger",
        logger_kwargs={"path": "/dev/null"},
        num_epochs=2,
        save_frequency=1,
        save_path="checkpoints/agent.json",
        run_name=run_name,
        **kwargs,
    )


def test_trainers_and_opto_runs_share_the_default_storage(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPTO_STORAGE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_storage_url() == f"sqlite:///{tmp_path / 'opto-runs.db'}"
    result = train_once()
    assert result.storage_url == default_storage_url()
    code, out, _ = run_cli(capsys, "list")  # no --storage: the same default
    assert code == 0 and result.run_name in out


def test_the_environment_variable_moves_both(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPTO_STORAGE_URL", str(tmp_path / "elsewhere.db"))  # a path is SQLite
    result = train_once("moved")
    assert result.storage_url == f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert not (tmp_path / "opto-runs.db").exists()
    code, out, _ = run_cli(capsys, "show", "moved")
    assert code == 0 and "run 'moved'" in out


def test_latest_shows_the_newest_run_and_is_a_run_reference(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPTO_STORAGE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    train_once("first")
    train_once("second")
    code, out, _ = run_cli(capsys, "latest")
    assert code == 0 and out.startswith("run 'second'")
    code, out, _ = run_cli(capsys, "latest", "--json")
    assert json.loads(out)["run"]["name"] == "second"
    code, out, _ = run_cli(capsys, "best", "latest", "--json")
    assert code == 0 and json.loads(out)["run"] == "second"


def test_latest_of_an_empty_storage_is_not_found(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_storage(url).close()
    code, _, err = run_cli(capsys, "--storage", url, "latest")
    assert code == cli.EXIT_NOT_FOUND and "no runs in" in err


def test_show_prints_stored_feedback_readably(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPTO_STORAGE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    train_once("readable")
    code, out, _ = run_cli(capsys, "show", "readable", "--feedback")
    assert code == 0
    assert "\\n" not in out  # multi-line feedback is printed as lines, not escaped JSON
    lines = out.splitlines()
    start = lines.index("  feedback:")
    block = "\n".join(lines[start : start + 12])
    assert "      feedback:\n        got v0\n        want v2" in block
    assert "      score: 0.0" in block and "    [1]" in block


def test_readable_lines_escape_control_characters():
    lines = cli.readable_lines({"note": "a\x1b[31mb\nsecond", "n": 1, "tags": ["x"]})
    assert lines == [
        "    note:",
        "      a\\x1b[31mb",
        "      second",
        "    n: 1",
        "    tags:",
        "      [1]",
        "        x",
    ]
