"""Every Python code block in the README runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_python_examples():
    assert BLOCKS


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run a block as a script file (trainable bundles need their source on disk)."""
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code, tmp_path):
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stderr


def test_readme_trace_example_prints_what_it_claims(tmp_path):
    result = _run(BLOCKS[0], tmp_path)
    assert result.stdout.splitlines() == [
        "concat0 = concat(x=prompt0, y=str0)",
        "eval0 = eval(text=concat0, __code=__code0)",
        "Too loud: the user wanted a calm answer.",
    ]
