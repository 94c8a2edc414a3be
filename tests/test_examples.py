"""The examples run end to end (the README's main job among them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_traces_scores_and_writes_the_graph(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Score: 3/5" in result.stdout
    assert "eval(self=SupportAgent0, question=question0, __code=__code0_copy0)" in result.stdout
    assert "Wrong team: this question belongs to the billing team." in result.stdout
    dot = (tmp_path / "trace_graph.dot").read_text()
    assert dot.lstrip().startswith("digraph")
    assert "greeting0" in dot
