"""Prompt size of one OptoPrime step on a large graph (50,000 nodes by default).

A trainable string goes through ``x = x + "a"`` N times (every intermediate value is a
longer string), one backward with a feedback sentence, then one ``OptoPrime.step()`` whose
prompt a stand-in LLM captures (no network). Reports the prompt's size in characters and
the time of the step, with the default ``max_section_chars`` and, with ``--unlimited``,
also without a section budget (that prompt is about 100 MB at 50,000 nodes).

    .venv/bin/python benchmarks/large_graph_prompt.py [--nodes N] [--unlimited] [--output F]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TARGET_CHARS = 1_000_000  # the default budget must keep a 50k-node prompt under 1 MB


def measure(nodes: int, max_section_chars: int | str | None) -> dict[str, Any]:
    """Build the graph, run one step, and return the prompt's size and the step's time."""
    from opto import trace
    from opto.optimizers import OptoPrime

    captured: list[list[dict[str, str]]] = []

    def llm(messages: list[dict[str, str]], **options: Any) -> Any:
        captured.append(messages)
        content = json.dumps({"reasoning": "", "answer": "", "suggestion": {}})
        message = SimpleNamespace(content=content)
        return SimpleNamespace(choices=[SimpleNamespace(message=message)])

    prompt = trace.node("Be brief.", name="prompt", trainable=True)
    x = prompt
    for _ in range(nodes):
        x = x + "a"
    options = {} if max_section_chars == "default" else {"max_section_chars": max_section_chars}
    optimizer = OptoPrime([prompt], llm=llm, **options)
    optimizer.zero_feedback()
    optimizer.backward(x, "The answer is far too long.")
    start = time.perf_counter()
    optimizer.step()
    elapsed = time.perf_counter() - start
    system, user = (m["content"] for m in captured[-1])
    return {
        "max_section_chars": optimizer.max_section_chars,
        "prompt_chars": len(system) + len(user),
        "step_s": elapsed,
        "variable_whole": "Be brief." in user,
        "feedback_whole": "The answer is far too long." in user,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--unlimited", action="store_true", help="also measure without budget")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the truncation warning is expected here
    runs = [measure(args.nodes, "default")]
    if args.unlimited:
        runs.append(measure(args.nodes, None))
    print(f"one OptoPrime step on a {args.nodes:,}-node graph")
    print(f"{'max_section_chars':>18} {'prompt chars':>14} {'step s':>8}  variable/feedback whole")
    for r in runs:
        whole = "yes" if r["variable_whole"] and r["feedback_whole"] else "NO"
        budget = "None" if r["max_section_chars"] is None else f"{r['max_section_chars']:,}"
        print(f"{budget:>18} {r['prompt_chars']:>14,} {r['step_s']:>8.2f}  {whole}")
    verdict = "pass" if runs[0]["prompt_chars"] < TARGET_CHARS else "FAIL"
    print(f"default budget: prompt < {TARGET_CHARS:,} chars: {verdict}")
    if args.output:
        Path(args.output).write_text(json.dumps(runs, indent=2))
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
