"""Code written for trace-opt runs on opto unchanged.

`trace_opt_code/readme_sales_agent.py` is trace-opt's README example, verbatim (plus one
line printing the result). It runs as a user runs it — `python readme_sales_agent.py` —
with the default LLM configured only through trace-opt's environment variables, served by
an OpenAI-compatible server on loopback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
README_EXAMPLE = HERE / "trace_opt_code" / "readme_sales_agent.py"


def test_trace_opt_readme_example_runs_unchanged(tmp_path):
    pytest.importorskip("openai")  # CustomLLM's client (the litellm extra)
    from opto.utils.testing import OpenAIServer, ServerReply

    def answer(request):
        text = "\n".join(m["content"] for m in request["messages"])
        if "#Variables" not in text:  # the agent's own call_llm calls
            return ServerReply.ok("es" if "Decide the language" in text else "Juan")
        # the optimizer: rewrite the greeting code it was shown
        code = re.search(r"\(code\) (__code\d+\S*):def greet", text).group(1)
        new = 'def greet(self, lang, user_name):\n    """Produce a greeting based on the language"""\n    return f"Hola, {user_name}! Bienvenido."\n'
        return ServerReply.ok(json.dumps({"reasoning": "greet warmly", "suggestion": {code: new}}))

    with OpenAIServer(default=answer) as server:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OPTO_LLM", "TRACE_"))},
            "TRACE_DEFAULT_LLM_BACKEND": "CustomLLM",
            "TRACE_CUSTOMLLM_URL": server.base_url,
            "TRACE_CUSTOMLLM_API_KEY": "test-key",
            "TRACE_CUSTOMLLM_MODEL": "fake-model",
        }
        script = tmp_path / README_EXAMPLE.name
        script.write_text(README_EXAMPLE.read_text())
        out = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        requests = list(server.requests)
    assert "Training Epoch 0" in out.stdout
    # the optimizer's step rewrote greet, and the agent runs the new code
    assert "RESULT Hola, Juan! Bienvenido." in out.stdout
    assert all(r["model"] == "fake-model" for r in requests)
    optimizer_prompts = [r for r in requests if "#Variables" in r["messages"][-1]["content"]]
    assert len(optimizer_prompts) == 1
    assert (
        "system_prompt0=You are a sales assistant."
        in optimizer_prompts[0]["messages"][-1]["content"]
    )
