"""Latency-bound training: wall time of opto.trainers' algorithms vs their critical path.

Workload (issue 5, section 8): every LLM call sleeps 200 ms (the agent makes one call per
example, the optimizer one per proposal); 32 examples, batch 8, 8 threads, two epochs (8 steps).

The *critical path* is the time the run would take if every independent call ran at once
within `num_threads`: each batch of independent calls the trainer hands its executor costs
ceil(calls / threads) x 200 ms, and each call made alone (e.g. the optimizer's single step)
costs 200 ms. It is measured, not assumed: the executor counts the waves of every `map`,
and the LLM counts the calls made outside one. The target is wall / critical <= 1.15.

"Framework time per step" reruns the same training with instant LLM calls: everything
but the LLM (tracing, copies, backward, bookkeeping), as a share of a latency-bound step
(target < 5%); "+storage" does so again with every step recorded and checkpointed in a
SQLite run storage (SQLAlchemy's one-time import excluded).

    python benchmarks/trainer_latency.py [--latency 0.2] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import threading
import time
from typing import Any

from opto import trace
from opto.optimizers import Optimizer
from opto.trace import bundle, node
from opto.trainers import BasicSearchAlgorithm, ExactMatchGuide, MinibatchAlgorithm
from opto.trainers.executors import ThreadExecutor
from opto.utils.testing import ScriptedLLM

EXAMPLES, BATCH, THREADS, PROPOSALS = 32, 8, 8, 4


class Waves:
    """Counts the critical path in units of one LLM latency."""

    def __init__(self) -> None:
        self.waves = 0
        self.in_map = threading.local()
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.waves += n


class CountingExecutor(ThreadExecutor):
    """A thread executor that adds ceil(calls / threads) waves per map of LLM-calling tasks."""

    def __init__(self, max_workers: int, waves: Waves) -> None:
        super().__init__(max_workers)
        self.waves = waves

    def map(self, fn: Any, items: Any) -> list[Any]:
        items = list(items)
        if getattr(self.waves.in_map, "active", False):
            return [fn(item) for item in items]
        calls = [0]
        lock = threading.Lock()

        def counted(item: Any) -> Any:
            self.waves.in_map.active = True
            before = _calls_in_thread()
            try:
                return fn(item)
            finally:
                with lock:
                    calls[0] += _calls_in_thread() - before
                self.waves.in_map.active = False

        result = super().map(counted, items)
        # Every task makes at most one LLM call: the calls form ceil(calls / threads) waves.
        self.waves.add(math.ceil(calls[0] / self.max_workers))
        return result


_LOCAL = threading.local()


def _calls_in_thread() -> int:
    return getattr(_LOCAL, "calls", 0)


def sleeping_llm(latency: float, waves: Waves, reply: Any) -> ScriptedLLM:
    """A scripted LLM whose every call takes `latency` seconds."""

    def answer(messages: list[dict[str, Any]], **kwargs: Any) -> str:
        _LOCAL.calls = _calls_in_thread() + 1
        if not getattr(waves.in_map, "active", False):
            waves.add(1)  # a call on its own is one wave
        if latency:
            time.sleep(latency)
        return reply(messages[-1]["content"])

    return ScriptedLLM(answer)


def build(latency: float, waves: Waves) -> tuple[Any, Any]:
    agent_llm = sleeping_llm(latency, waves, lambda text: text.split("|")[0])

    @bundle()
    def respond(prompt: str, x: int) -> str:
        """Answer x following the prompt."""
        return agent_llm(messages=[{"role": "user", "content": f"{prompt}|{x}"}]).content

    @trace.model
    class Agent:
        def __init__(self) -> None:
            self.prompt = node("v0", trainable=True)

        def forward(self, x: int) -> Any:
            return respond(self.prompt, x)

    counter = iter(range(10**6))
    lock = threading.Lock()

    def propose(text: str) -> str:
        with lock:
            n = next(counter)
        return f"v{n % 5}"

    class OneCall(Optimizer):
        def __init__(self, parameters: Any, llm: Any) -> None:
            super().__init__(parameters)
            self.llm = llm

        def _step(self, **kwargs: Any) -> dict[Any, Any]:
            (p,) = self.parameters
            text = f"value={p.data} feedback={self.trace_graph.user_feedback}"
            return {p: self.llm(messages=[{"role": "user", "content": text}]).content}

    agent = Agent()
    return agent, OneCall(
        agent.parameters(), sleeping_llm(latency, waves, lambda text: propose(text))
    )


def run(algorithm: str, latency: float, storage: str | None = None) -> dict[str, Any]:
    waves = Waves()
    agent, optimizer = build(latency, waves)
    executor = CountingExecutor(THREADS, waves)
    data = {"inputs": list(range(EXAMPLES)), "infos": [f"v{i % 5}" for i in range(EXAMPLES)]}
    guide = ExactMatchGuide()
    start = time.perf_counter()
    if algorithm == "MinibatchAlgorithm":
        trainer = MinibatchAlgorithm(agent, optimizer, THREADS, executor=executor, seed=0)
        result = trainer.train(
            guide, data, batch_size=BATCH, eval_frequency=0, storage=storage, num_epochs=2
        )
    else:
        trainer = BasicSearchAlgorithm(agent, optimizer, THREADS, executor=executor, seed=0)
        validation = {"inputs": data["inputs"][:8], "infos": data["infos"][:8]}
        result = trainer.train(
            guide,
            data,
            batch_size=BATCH,
            num_proposals=PROPOSALS,
            validate_dataset=validation,
            storage=storage,
            num_epochs=2,
        )
    wall = time.perf_counter() - start
    executor.close()
    return {
        "wall_s": wall,
        "critical_s": waves.waves * latency,
        "steps": result.n_iters,
        "llm_calls": result.usage["calls"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per LLM call")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    rows = {}
    print(f"{'algorithm':<22} {'wall s':>7} {'critical s':>10} {'ratio':>6} "
          f"{'framework/step':>15} {'+storage':>16} {'calls':>6}")  # fmt: skip
    import opto.utils.storage._storage  # noqa: F401  (SQLAlchemy's import is a one-time cost)

    for name in ("MinibatchAlgorithm", "BasicSearchAlgorithm"):
        timed = run(name, args.latency)
        instant = run(name, 0.0)
        with tempfile.TemporaryDirectory() as tmp:
            stored = run(name, 0.0, storage=f"sqlite:///{tmp}/runs.db")
        ratio = timed["wall_s"] / timed["critical_s"]
        step = timed["wall_s"] / timed["steps"]
        framework = instant["wall_s"] / instant["steps"]
        with_storage = stored["wall_s"] / stored["steps"]
        rows[name] = {**timed, "ratio": ratio, "framework_per_step_s": framework,
                      "framework_share": framework / step,
                      "framework_with_storage_per_step_s": with_storage,
                      "framework_with_storage_share": with_storage / step}  # fmt: skip
        print(f"{name:<22} {timed['wall_s']:>7.2f} {timed['critical_s']:>10.2f} {ratio:>6.3f} "
              f"{framework * 1000:>7.1f} ms {100 * framework / step:>4.1f}% "
              f"{with_storage * 1000:>7.1f} ms {100 * with_storage / step:>4.1f}% "
              f"{timed['llm_calls']:>6}")  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
