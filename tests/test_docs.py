"""Every Python code block in the READMEs and in docs/ runs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = [
    ROOT / "README.md",
    *sorted(ROOT.glob("docs/*.md")),
    *sorted(ROOT.glob("packages/*/README.md")),
]
BLOCKS = [
    pytest.param(code, id=f"{readme.relative_to(ROOT)}#{index}")
    for readme in READMES
    for index, code in enumerate(re.findall(r"```python\n(.*?)```", readme.read_text(), re.S))
]
HAVE_LOCAL_MODEL = importlib.util.find_spec("llama_cpp") is not None


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run a block as a script file (trainable bundles need their source on disk)."""
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


def test_readmes_have_python_examples():
    assert len(BLOCKS) >= 3


def test_readme_starts_with_the_two_commands():
    first = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert first is not None
    main_job, tests = first.group(1).strip().splitlines()
    assert "uv run --locked" in main_job and "--extra local examples/quickstart.py" in main_job
    assert "pip install uv && uv run --locked nox" in tests


def test_docs_cover_every_concept_and_topic():
    concepts = (ROOT / "docs" / "concepts.md").read_text()
    for concept in ("Node", "Bundle", "Model", "Backward", "Optimizer", "Guide", "Trainer"):
        assert f"## {concept}" in concepts
    guide = (ROOT / "docs" / "guide.md").read_text()
    for topic in (
        "## Installing",
        "## Configuring LLMs",
        "## Cost tracking and budgets",
        "## Caching",
        "## Storage and resume",
        "## Scaling out on Ray",
        "## Migrating from trace-opt",
    ):
        assert topic in guide
    for provider in ("OpenAI", "Anthropic", "Ollama", "vLLM", "llama.cpp", "embedded"):
        assert provider in guide


STORING_BLOCKS = [block for block in BLOCKS if "storage" in block.values[0]]


@pytest.mark.parametrize("code", STORING_BLOCKS)
def test_storing_blocks_run_twice_in_one_folder(code, tmp_path, monkeypatch):
    """Run names never collide: a reader can run a block again where it ran before."""
    monkeypatch.delenv("OPTO_STORAGE_URL", raising=False)
    for attempt in (1, 2):
        result = _run(code, tmp_path)
        assert result.returncode == 0, f"run {attempt}:\n{result.stderr}"


@pytest.mark.parametrize("code", BLOCKS)
def test_readme_block_runs(code, tmp_path):
    if "LLM()" in code and not HAVE_LOCAL_MODEL:
        pytest.skip("needs a configured LLM; offline that is the embedded model (local extra)")
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stderr


def test_readme_trace_example_prints_what_it_claims(tmp_path):
    result = _run(BLOCKS[0].values[0], tmp_path)
    assert result.stdout.splitlines() == [
        "concat0 = concat(x=prompt0, y=str0)",
        "eval0 = eval(text=concat0, __code=__code0)",
        "Too loud: the user wanted a calm answer.",
    ]
