"""Per-step overhead of OptoPrime with the LLM excluded, for 20 and 200 parameters.

Each repetition builds the program (N trainable integers summed by N traced calls),
backpropagates one feedback, and times ``optimizer.step()`` — summarizing the graph,
building the prompt, parsing a reply that suggests a new value for every parameter,
converting and assigning — with an LLM that answers instantly (a precomputed reply).
``backward`` is timed separately. Best and median of the repetitions are reported.

    .venv/bin/python benchmarks/optimizer_overhead.py [--reference-python PY] [--output F]

With ``--reference-python`` the same workload also runs in trace-opt's interpreter.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

SIZES = (20, 200)
REPEATS = {20: 30, 200: 10}


def run(size: int, repeats: int) -> dict[str, Any]:
    """Time ``backward`` and ``step`` for ``size`` parameters; seconds per repetition."""
    from opto import trace
    from opto.optimizers import OptoPrime

    params = [
        trace.node(i, name=f"w{i}", trainable=True, description="an int") for i in range(size)
    ]
    reply = json.dumps(
        {
            "reasoning": "r",
            "answer": "",
            "suggestion": {p.py_name: i + 1 for i, p in enumerate(params)},
        }
    )
    response = SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=reply))])

    def llm(messages: list[dict[str, str]], **options: Any) -> Any:
        return response

    optimizer = OptoPrime(params, llm=llm)
    backward_times: list[float] = []
    step_times: list[float] = []
    for _ in range(repeats):
        total = params[0] * 1
        for p in params[1:]:
            total = total + p
        optimizer.zero_feedback()
        gc.collect()
        start = time.perf_counter()
        optimizer.backward(total, "The total should be larger.")
        backward_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        optimizer.step()  # trace-opt 0.1.3.8 returns None, so check the parameters
        step_times.append(time.perf_counter() - start)
        updated = sum(p.data == i + 1 for i, p in enumerate(params))
        assert updated == size, f"only {updated} of {size} parameters updated"
        for i, p in enumerate(params):  # restore for the next repetition
            p._data = i
    return {
        "parameters": size,
        "repeats": repeats,
        "step_best_ms": min(step_times) * 1e3,
        "step_median_ms": statistics.median(step_times) * 1e3,
        "backward_median_ms": statistics.median(backward_times) * 1e3,
    }


def workload() -> list[dict[str, Any]]:
    return [run(size, REPEATS[size]) for size in SIZES]


def _reference(python: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "overhead.json"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        subprocess.run(
            [python, __file__, "--side", str(out)],
            check=True,
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", default=None, help="python of a trace-opt venv")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.side:
        Path(args.side).write_text(json.dumps(workload()))
        return 0
    results = {"opto": workload()}
    if args.reference_python:
        results["trace-opt 0.1.3.8"] = _reference(args.reference_python)
    print("OptoPrime step overhead, LLM excluded (ms per step)")
    print(f"{'side':<20}{'params':>7}{'step best':>11}{'step median':>13}{'backward':>10}")
    for side, rows in results.items():
        for r in rows:
            print(
                f"{side:<20}{r['parameters']:>7}{r['step_best_ms']:>11.2f}"
                f"{r['step_median_ms']:>13.2f}{r['backward_median_ms']:>10.2f}"
            )
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
