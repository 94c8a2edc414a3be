"""Overhead of opto.utils' LLM call pipeline (cache → budget → retry → ledger).

Measures, with a zero-latency backend so only our code is timed:

- pipeline overhead per call: `llm(messages=...)` minus the bare backend call (target ≤ 50 µs);
- the same inside `track_usage()` with a budget (one more scope to check and record);
- a response-cache hit on SQLite (lookup, decode, ledger record);
- `import opto.utils.llm` in a fresh interpreter, without litellm (target ≤ 20 ms), and the
  cost of the first real use (`from opto.utils.llm import LLM, ChatResponse`, which loads
  attrs), with attrs' own import time for reference.

    python benchmarks/llm_pipeline.py [--calls 20000] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from opto.utils.llm import AbstractModel, ChatResponse, Usage
from opto.utils.usage import track_usage

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
REPLY = ChatResponse.from_text("Paris.", model="zero", usage=Usage(prompt_tokens=20))


class ZeroLatency(AbstractModel):
    """A backend that answers instantly with a prebuilt response."""

    def _complete(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> ChatResponse:
        return REPLY


def _per_call_us(fn: Any, calls: int, repeats: int = 5) -> float:
    """Best-of-`repeats` mean time of `fn()` in microseconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def pipeline(calls: int) -> dict[str, float]:
    llm = ZeroLatency(model="zero", cache=False)
    bare = _per_call_us(lambda: llm._complete(MESSAGES, {}), calls)
    full = _per_call_us(lambda: llm(messages=MESSAGES, temperature=0), calls)
    with track_usage(max_calls=10**9, max_tokens=10**12):
        scoped = _per_call_us(lambda: llm(messages=MESSAGES, temperature=0), calls)
    return {
        "backend_us": bare,
        "pipeline_overhead_us": full - bare,
        "pipeline_overhead_with_budget_us": scoped - bare,
    }


def cache_hit(calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        llm = ZeroLatency(model="zero", cache=Path(tmp) / "bench.db")
        llm(messages=MESSAGES)  # prime
        hit = _per_call_us(lambda: llm(messages=MESSAGES), calls)
        assert llm(messages=MESSAGES).cached
        llm.cache.close()
    return {"cache_hit_us": hit}


def _import_ms(statement: str, runs: int = 7) -> float:
    """Median wall time of `statement` in a fresh interpreter, in milliseconds."""
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        f"{statement}\n"
        "dt = time.perf_counter() - t\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
        "print(dt)\n"
    )
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        times.append(float(out.stdout) * 1000)
    return statistics.median(times)


def imports() -> dict[str, float]:
    return {
        "import_opto_utils_llm_ms": _import_ms("import opto.utils.llm"),
        "first_use_import_ms": _import_ms(
            "from opto.utils.llm import LLM, ChatResponse, AbstractModel"
        ),
        "attrs_alone_ms": _import_ms("import attrs"),
    }


TARGETS = {"pipeline_overhead_us": 50.0, "import_opto_utils_llm_ms": 20.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results = {**pipeline(args.calls), **cache_hit(max(1, args.calls // 10)), **imports()}
    width = max(map(len, results))
    for name, value in results.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else ("  ok" if value <= target else "  SLOW")
        bound = "" if target is None else f"  (target ≤ {target:g})"
        print(f"{name:<{width}}  {value:9.2f}{bound}{verdict}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
