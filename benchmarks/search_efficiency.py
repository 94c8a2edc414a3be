"""Search efficiency of opto.trainers' search algorithms, with a seeded noisy oracle.

Each search trainer runs on the tasks of `search_tasks.py` with `NoisyOracle` in place of
the LLM (a proposer that follows the feedback with probability `--p-improve`, else makes
a random edit; seeded, so results depend only on the search), and three things are
measured:

* **efficiency** - the true score of the trainer's current parameters (its incumbent,
  scored on the whole task without the guide) against the metric calls (rollouts the
  guide scored) and the proposals spent. Every run stops at the same metric-call budget;
  the table gives the area under the score curve up to that budget (mean and std over
  `--seeds` seeds, the curve normalised by the budget), the score at the budget, and the
  area against proposals up to the fewest proposals any run of the task made;
* **latency** - wall time when each proposal takes `--latency` seconds (the guide is
  instant) against the critical path: the algorithm's sequential LLM rounds times the
  latency. Every trainer here makes a step's proposals from the state at the step's
  start, so they could all run at once: the rounds are the steps that made a proposal.
  "waves" counts the rounds the run really made (proposals overlapping in time form
  one); more waves than rounds means a step's calls were serialised. The same run with
  instant proposals gives the framework's own time, which the critical path leaves out;
* **resume** - a run killed during step k+1 (at its first proposal, after that step's
  rollouts) and resumed from run storage to step 2k: the metric calls the killed step
  had made, and the calls after the resume on (candidate, example) pairs already scored
  before the kill, split into validation re-scores (score-only rollouts of pairs
  validated before, which an evaluation cache in run storage answers), validations of
  pairs that before were only training rollouts, and training rollouts run again (their
  trace graph feeds the next proposal, so they run again after a resume).

Trainers are one row each of `TRAINERS` (name, train keywords, constructor keywords); a
trainer that opto.trainers does not export yet is skipped with a note.

    python benchmarks/search_efficiency.py            # everything (a few minutes)
    python benchmarks/search_efficiency.py --quick    # smoke test: tiny budgets, 2 seeds
    python benchmarks/search_efficiency.py --tasks multiinstance --trainers PrioritySearch
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from opto.trainers.loggers import BaseLogger
from search_baseline import RandomSearch
from search_tasks import TASKS, Meter, NoisyOracle, Task, TaskGuide

Kwargs = dict[str, Any]
BIG = 10**6  # "no limit" for epochs and iterations: the budgets stop every run


@dataclass
class TrainerSpec:
    """One trainer of the comparison.

    `train(task, max_steps)` gives `train`'s keywords, `make` the constructor's.
    """

    name: str
    train: Callable[[Task, int], Kwargs]
    make: Kwargs = field(default_factory=dict)
    source: str = "opto.trainers"
    cls: str | None = None  # the class's name, when the row's name is a variant's


def _minibatch(task: Task, steps: int) -> Kwargs:
    """`batch_size` of the task, run length set by the budget, no test evaluations."""
    kwargs: Kwargs = {"max_steps": steps, "eval_frequency": 0, "batch_size": task.batch_size}
    if task.objective is not None:
        kwargs["objective_config"] = task.objective
    return kwargs


def _epochs(task: Task, steps: int) -> Kwargs:
    return {**_minibatch(task, steps), "num_epochs": BIG}


def _bandit(task: Task, steps: int) -> Kwargs:
    """The UCB/GEPA spelling: `train_batch_size`, `num_search_iterations`."""
    kwargs = _minibatch(task, steps)
    return {**kwargs, "train_batch_size": kwargs.pop("batch_size"), "num_search_iterations": BIG}


#: Every trainer runs with its defaults; only the minibatch size (the task's) and the run
#: length (the budget) are set, so no trainer is tuned for these tasks. Rows with a
#: comma in their name are ablations of a library default.
TRAINERS: list[TrainerSpec] = [
    TrainerSpec("BasicSearchAlgorithm", _epochs),
    TrainerSpec("RandomSearch", _minibatch, source="benchmark"),
    TrainerSpec("PrioritySearch", _epochs),
    TrainerSpec("BeamSearch", lambda t, s: {**_minibatch(t, s), "max_depth": BIG}),
    TrainerSpec("UCBSearch", _bandit),
    TrainerSpec("POLCA", _epochs),
    TrainerSpec("GEPAUCBSearch", _bandit),
    TrainerSpec("GEPABeamPareto", _bandit),
    TrainerSpec(  # ablation: a child must beat its parent on the minibatch to be scored
        "GEPAUCBSearch, minibatch gate",
        lambda t, s: {**_bandit(t, s), "minibatch_gate": True},
        cls="GEPAUCBSearch",
    ),
    TrainerSpec("StreamingPrioritySearch", _epochs),
    TrainerSpec("SequentialUpdate", _epochs),
    TrainerSpec("SequentialSearch", _epochs),
    TrainerSpec("ParetobasedPS", _epochs),
]


def trainer_class(spec: TrainerSpec) -> tuple[Any, str | None]:
    """The trainer class, or None and why it cannot be used yet."""
    if spec.source == "benchmark":
        return RandomSearch, None
    try:
        module = importlib.import_module(spec.source)
        return getattr(module, spec.cls or spec.name), None
    except (ImportError, AttributeError) as exc:
        return None, f"not importable from {spec.source} ({type(exc).__name__}: {exc})"


class CurveLogger(BaseLogger):
    """Records (metric calls, proposals, true score of the agent) after every step."""

    verbose = False

    def __init__(self, agent: Any, task: Task, meter: Meter) -> None:
        self.agent, self.task, self.meter = agent, task, meter
        self.points: list[tuple[int, int, float]] = []

    def log(self, name: str, data: Any, step: int, **kwargs: Any) -> None:
        return

    def snapshot(self) -> None:
        values = {path: node.data for path, node in self.agent.named_parameters()}
        score = self.task.true_score(values)
        self.points.append((self.meter.metric_calls, self.meter.proposals, score))

    def advance(self, step: int) -> None:
        self.meter.step = step
        self.snapshot()


@dataclass
class Setup:
    """A trainer built for one run: its agent, oracle, guide, meter and curve."""

    trainer: Any
    guide: TaskGuide
    meter: Meter
    curve: CurveLogger
    kwargs: Kwargs


def build(
    spec: TrainerSpec,
    task: Task,
    seed: int,
    *,
    max_steps: int,
    meter: Meter,
    p_improve: float,
    latency: float = 0.0,
    threads: int = 8,
) -> Setup:
    cls, missing = trainer_class(spec)
    if cls is None:
        raise RuntimeError(missing)
    agent = task.make_agent()
    oracle = NoisyOracle(agent, task, meter, seed=seed, p_improve=p_improve, latency=latency)
    curve = CurveLogger(agent, task, meter)
    trainer = cls(
        agent,
        oracle,
        logger=curve,
        num_threads=threads,
        executor="threads",
        seed=seed,
        **spec.make,
    )
    return Setup(trainer, TaskGuide(task, meter), meter, curve, spec.train(task, max_steps))


def efficiency_run(
    spec: TrainerSpec,
    task_name: str,
    seed: int,
    budget: int,
    p_improve: float,
    storage: bool = False,
) -> dict[str, Any]:
    """One run to the metric-call budget; returns its curve. With `storage`, the run
    keeps its checkpoints (and evaluation cache) in a fresh SQLite run storage."""
    task = TASKS[task_name]()
    meter = Meter(metric_budget=budget)
    setup = build(spec, task, seed, max_steps=BIG, meter=meter, p_improve=p_improve)
    setup.curve.snapshot()  # the initial parameters, before any call
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = (
            {**setup.kwargs, "storage": f"sqlite:///{tmp}/runs.db"} if storage else setup.kwargs
        )
        result = setup.trainer.train(setup.guide, task.data, **kwargs)
    setup.curve.snapshot()  # after any final selection
    return {
        "points": setup.curve.points,
        "steps": result.n_iters,
        "stopped": str(result.stopped),
        "metric_calls": meter.metric_calls,
        "proposals": meter.proposals,
    }


def area(points: Sequence[tuple[int, int, float]], axis: int, limit: float) -> float:
    """Mean over [0, limit] of the step curve score(x), x = points' `axis` coordinate
    (the score at x is the last one recorded at or before x)."""
    if limit <= 0:
        return points[0][2]
    total, last_x, last_score = 0.0, 0.0, points[0][2]
    for point in points:
        x = min(float(point[axis]), limit)
        total += (x - last_x) * last_score
        last_x, last_score = x, point[2]
    total += (limit - last_x) * last_score
    return total / limit


def score_at(points: Sequence[tuple[int, int, float]], axis: int, limit: float) -> float:
    """The score recorded last at or before `limit` on `axis`."""
    score = points[0][2]
    for point in points:
        if point[axis] <= limit:
            score = point[2]
    return score


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def efficiency(
    specs: Sequence[TrainerSpec],
    tasks: Sequence[str],
    seeds: int,
    budgets: dict[str, int],
    p_improve: float,
    storage: bool = False,
) -> dict[str, Any]:
    """Every trainer on every task, `seeds` runs each; the table rows."""
    rows: dict[str, Any] = {}
    for task_name in tasks:
        runs: dict[str, list[dict[str, Any]]] = {}
        for spec in specs:
            if trainer_class(spec)[0] is None:
                continue
            start = time.perf_counter()
            try:
                runs[spec.name] = [
                    efficiency_run(spec, task_name, seed, budgets[task_name], p_improve, storage)
                    for seed in range(seeds)
                ]
            except Exception as exc:
                rows.setdefault(task_name, {})[spec.name] = {
                    "error": f"{type(exc).__name__}: {exc}"
                }
                print(f"  {task_name:<15} {spec.name:<24} error: {exc}", file=sys.stderr)
                continue
            print(
                f"  {task_name:<15} {spec.name:<24} {time.perf_counter() - start:6.1f}s",
                file=sys.stderr,
            )
        if not runs:
            continue
        common_proposals = min(r["proposals"] for rs in runs.values() for r in rs)
        budget = budgets[task_name]
        for name, rs in runs.items():
            auc = _mean_std([area(r["points"], 0, budget) for r in rs])
            final = _mean_std([score_at(r["points"], 0, budget) for r in rs])
            auc_p = _mean_std([area(r["points"], 1, common_proposals) for r in rs])
            rows.setdefault(task_name, {})[name] = {
                "auc_calls": auc,
                "final": final,
                "auc_proposals": auc_p,
                "proposal_budget": common_proposals,
                "metric_budget": budget,
                "initial": rs[0]["points"][0][2],
                "proposals": statistics.fmean(r["proposals"] for r in rs),
                "steps": statistics.fmean(r["steps"] for r in rs),
                "stopped": sorted({r["stopped"] for r in rs}),
            }
    return rows


def latency_run(
    spec: TrainerSpec, task_name: str, seed: int, steps: int, latency: float, p_improve: float
) -> dict[str, Any]:
    """Wall time of `steps` steps at `latency` s per proposal vs the critical path."""
    task = TASKS[task_name]()
    meter = Meter()
    setup = build(
        spec,
        task,
        seed,
        max_steps=steps,
        meter=meter,
        p_improve=p_improve,
        latency=latency,
        threads=32,
    )
    start = time.perf_counter()
    result = setup.trainer.train(setup.guide, task.data, **setup.kwargs)
    wall = time.perf_counter() - start
    rounds = meter.rounds()
    # The same run with instant proposals: the framework's own time (tracing, copies,
    # rollouts, bookkeeping), which the critical path leaves out.
    instant = build(
        spec, TASKS[task_name](), seed, max_steps=steps, meter=Meter(), p_improve=p_improve
    )
    start = time.perf_counter()
    instant.trainer.train(instant.guide, task.data, **instant.kwargs)
    framework = time.perf_counter() - start
    return {
        "framework_s": framework,
        "wall_s": wall,
        "critical_s": rounds * latency,
        "rounds": rounds,
        "waves": meter.waves(),
        "steps": result.n_iters,
        "proposals": meter.proposals,
    }


def latency(
    specs: Sequence[TrainerSpec],
    task_name: str,
    seeds: int,
    steps: int,
    seconds: float,
    p_improve: float,
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for spec in specs:
        if trainer_class(spec)[0] is None:
            continue
        try:
            runs = [
                latency_run(spec, task_name, seed, steps, seconds, p_improve)
                for seed in range(seeds)
            ]
        except Exception as exc:
            rows[spec.name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        wall = statistics.fmean(r["wall_s"] for r in runs)
        critical = statistics.fmean(r["critical_s"] for r in runs)
        rows[spec.name] = {
            "framework_s": statistics.fmean(r["framework_s"] for r in runs),
            "wall_s": wall,
            "critical_s": critical,
            "ratio": wall / critical if critical else math.inf,
            "ratio_with_framework": wall
            / (critical + statistics.fmean(r["framework_s"] for r in runs)),
            "rounds": statistics.fmean(r["rounds"] for r in runs),
            "waves": statistics.fmean(r["waves"] for r in runs),
            "steps": statistics.fmean(r["steps"] for r in runs),
            "proposals": statistics.fmean(r["proposals"] for r in runs),
        }
        print(f"  latency {spec.name:<24} {wall:6.2f}s", file=sys.stderr)
    return rows


class _Kill(KeyboardInterrupt):
    """The simulated kill (a KeyboardInterrupt: trainers checkpoint and stop on it)."""


class KillingMeter(Meter):
    """A meter that raises `_Kill` at proposal number `kill_at` (1-based)."""

    def __init__(self, kill_at: int) -> None:
        super().__init__()
        self.kill_at = kill_at

    def proposal(self) -> None:
        if self.proposals + 1 == self.kill_at:
            self.kill_at = -1
            raise _Kill("simulated kill")
        super().proposal()


def resume_run(
    spec: TrainerSpec, task_name: str, seed: int, steps: int, p_improve: float
) -> dict[str, Any]:
    """Kill during step `steps + 1`, resume to `2 * steps`; count re-evaluations."""
    task = TASKS[task_name]()
    # Where step k+1 makes its first proposal: a dry run of k steps.
    probe = Meter()
    setup = build(spec, task, seed, max_steps=steps, meter=probe, p_improve=p_improve)
    setup.trainer.train(setup.guide, task.data, **setup.kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        first = KillingMeter(kill_at=probe.proposals + 1)
        setup = build(spec, task, seed, max_steps=2 * steps, meter=first, p_improve=p_improve)
        kwargs = {**setup.kwargs, "storage": f"sqlite:///{tmp}/runs.db", "run_name": "killed"}
        killed = setup.trainer.train(setup.guide, task.data, **kwargs)
        completed = setup.curve.points[-1][0]  # metric calls when the last step completed
        # The resumed run, on a fresh agent, oracle and guide.
        second = Meter()
        setup = build(spec, task, seed, max_steps=2 * steps, meter=second, p_improve=p_improve)
        resumed = setup.trainer.resume(setup.guide, task.data, **kwargs)
    return {
        "killed_after_step": killed.n_iters,
        "stopped": str(killed.stopped),
        "resumed_steps": resumed.n_iters,
        "calls_before_kill": first.metric_calls,
        "calls_lost_in_killed_step": first.metric_calls - completed,
        "calls_after_resume": second.metric_calls,
        "rescored": _repeats(second, first, "score", {"score"}),
        "validated_after_training": _repeats(second, first, "score", {"feedback"})
        - _repeats(second, first, "score", {"score"}, {"feedback"}),
        "training_rerun": _repeats(second, first, "feedback", {"score", "feedback"}),
    }


def _repeats(
    after: Meter, before: Meter, kind: str, kinds: set[str], also: set[str] = frozenset()
) -> int:
    """Calls of `kind` in `after` on (candidate, example) pairs that `before` called with
    one of `kinds` (and, if given, with one of `also` too)."""
    by_kind: dict[str, set[str]] = {}
    for k, pair in before.pairs:
        by_kind.setdefault(k, set()).add(pair)
    seen = set().union(*(by_kind.get(k, set()) for k in kinds))
    if also:
        seen &= set().union(*(by_kind.get(k, set()) for k in also))
    return sum(n for (k, pair), n in after.pairs.items() if k == kind and pair in seen)


def resume(
    specs: Sequence[TrainerSpec], task_name: str, steps: int, p_improve: float
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for spec in specs:
        if trainer_class(spec)[0] is None:
            continue
        try:
            rows[spec.name] = resume_run(spec, task_name, 0, steps, p_improve)
        except Exception as exc:
            rows[spec.name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"  resume {spec.name:<24} {rows[spec.name]}", file=sys.stderr)
    return rows


# -- output -------------------------------------------------------------------------------------


def _pm(value: tuple[float, float]) -> str:
    return f"{value[0]:.3f} ± {value[1]:.3f}"


def _table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[tuple[str, dict[str, Any]]],
    cells: Callable[[dict[str, Any]], list[str]],
) -> list[str]:
    """A Markdown table: `title`, then one line per `(trainer, row)`; a row holding an
    `error` shows it in the first cell after the trainer's name."""
    lines = [title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, row in rows:
        shown = cells(row) if "error" not in row else [f"error: {row['error']}"]
        shown += [""] * (len(columns) - 1 - len(shown))
        lines.append("| " + " | ".join([name, *shown]) + " |")
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    """The results as Markdown tables (the README's format)."""
    lines: list[str] = []
    tables = [("", results["efficiency"])]
    if results.get("efficiency_storage"):
        tables.append((", runs in SQLite run storage", results["efficiency_storage"]))
    for suffix, task_name, rows in [(x, t, r) for x, e in tables for t, r in e.items()]:
        budget = next((r["metric_budget"] for r in rows.values() if "metric_budget" in r), "?")
        common = next((r["proposal_budget"] for r in rows.values() if "proposal_budget" in r), "?")
        lines += _table(
            f"**{task_name}** (budget {budget} metric calls; proposals axis to {common}{suffix})",
            [
                "trainer",
                "AUC vs metric calls",
                "score at budget",
                "AUC vs proposals",
                "proposals",
                "steps",
            ],
            sorted(rows.items(), key=lambda kv: -kv[1].get("auc_calls", (-1, 0))[0]),
            lambda row: [
                _pm(row["auc_calls"]),
                _pm(row["final"]),
                _pm(row["auc_proposals"]),
                f"{row['proposals']:.0f}",
                f"{row['steps']:.1f}",
            ],
        )
    if results.get("latency"):
        info = results["latency_setup"]
        lines += _table(
            f"**Latency** ({info['task']}, {info['steps']} steps, {info['latency']} s per "
            f"proposal, {info['seeds']} seeds, 32 threads)",
            [
                "trainer",
                "wall s",
                "critical path s",
                "ratio",
                "rounds",
                "waves",
                "same run, instant proposals s",
                "wall / (critical + instant)",
                "proposals",
            ],
            results["latency"].items(),
            lambda row: [
                f"{row['wall_s']:.2f}",
                f"{row['critical_s']:.2f}",
                f"{row['ratio']:.3f}",
                f"{row['rounds']:.0f}",
                f"{row['waves']:.0f}",
                f"{row['framework_s']:.2f}",
                f"{row['ratio_with_framework']:.3f}",
                f"{row['proposals']:.0f}",
            ],
        )
    if results.get("resume"):
        info = results["resume_setup"]
        lines += _table(
            f"**Resume** ({info['task']}: killed at the first proposal of step "
            f"{info['steps'] + 1}, resumed to step {2 * info['steps']})",
            [
                "trainer",
                "calls before kill",
                "of which in the killed step",
                "calls after resume",
                "validation re-scores",
                "validations of pairs only trained on before",
                "training rollouts re-run",
            ],
            results["resume"].items(),
            lambda row: [
                str(row["calls_before_kill"]),
                str(row["calls_lost_in_killed_step"]),
                str(row["calls_after_resume"]),
                str(row["rescored"]),
                str(row["validated_after_training"]),
                str(row["training_rerun"]),
            ],
        )
    if results.get("skipped"):
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items())]
    return "\n".join(lines)


QUICK = {"seeds": 2, "budget": 40, "latency_steps": 1, "latency_seeds": 1, "resume_steps": 1}
FULL_BUDGETS = {"convex": 120, "multiobjective": 120, "multiinstance": 600, "code": 400}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (a smoke test)")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--trainers", nargs="+", help="names from TRAINERS (default: all)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, help="metric calls per run (default: per task)")
    parser.add_argument("--p-improve", type=float, default=0.5)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per proposal")
    parser.add_argument("--latency-task", default="multiinstance", choices=sorted(TASKS))
    parser.add_argument("--latency-steps", type=int, default=8)
    parser.add_argument("--latency-seeds", type=int, default=2)
    parser.add_argument("--resume-steps", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["latency", "resume"])
    parser.add_argument(
        "--storage",
        action="store_true",
        help="also run the efficiency tables with run storage (its evaluation cache on)",
    )
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = QUICK["seeds"]
        args.budget = args.budget or QUICK["budget"]
        args.latency_steps, args.latency_seeds = QUICK["latency_steps"], QUICK["latency_seeds"]
        args.resume_steps = QUICK["resume_steps"]
    specs = [s for s in TRAINERS if not args.trainers or s.name in args.trainers]
    skipped = {s.name: trainer_class(s)[1] for s in specs if trainer_class(s)[0] is None}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    budgets = {t: args.budget or FULL_BUDGETS[t] for t in args.tasks}
    results: dict[str, Any] = {"skipped": skipped, "p_improve": args.p_improve}
    results["efficiency"] = efficiency(specs, args.tasks, args.seeds, budgets, args.p_improve)
    if args.storage:
        results["efficiency_storage"] = efficiency(
            specs, args.tasks, args.seeds, budgets, args.p_improve, storage=True
        )
    if "latency" not in args.skip:
        results["latency_setup"] = {
            "task": args.latency_task,
            "steps": args.latency_steps,
            "latency": args.latency,
            "seeds": args.latency_seeds,
        }
        results["latency"] = latency(
            specs,
            args.latency_task,
            args.latency_seeds,
            args.latency_steps,
            args.latency,
            args.p_improve,
        )
    if "resume" not in args.skip:
        results["resume_setup"] = {"task": "multiinstance", "steps": args.resume_steps}
        results["resume"] = resume(specs, "multiinstance", args.resume_steps, args.p_improve)
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
