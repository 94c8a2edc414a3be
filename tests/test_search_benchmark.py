"""Smoke test of benchmarks/search_efficiency.py: the harness runs end to end on tiny budgets.

Keeps the benchmark from rotting as the trainers change: every trainer opto.trainers
exports runs on every task, curves respect the budget, runs are reproducible from their
seed, and the kill/resume measurement resumes. Nothing here is timed.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield _load("search_efficiency")
    finally:
        sys.path.remove(str(BENCHMARKS))


def _available(bench):
    return [s for s in bench.TRAINERS if bench.trainer_class(s)[0] is not None]


def test_every_available_trainer_runs_every_task_within_the_budget(bench):
    results = bench.efficiency(
        _available(bench), list(bench.TASKS), seeds=1, budgets=dict.fromkeys(bench.TASKS, 24),
        p_improve=0.5,
    )  # fmt: skip
    assert set(results) == set(bench.TASKS)
    for task, rows in results.items():
        assert {s.name for s in _available(bench)} == set(rows), task
        for name, row in rows.items():
            assert "error" not in row, (task, name, row)
            low, high = (-1.0, 1.0) if task == "multiobjective" else (0.0, 1.0)
            assert low <= row["auc_calls"][0] <= high
            assert row["proposals"] >= 1


def test_a_run_stops_at_its_metric_budget_and_its_curve_is_ordered(bench):
    spec = next(s for s in bench.TRAINERS if s.name == "PrioritySearch")
    run = bench.efficiency_run(spec, "multiinstance", seed=3, budget=30, p_improve=0.5)
    assert run["metric_calls"] <= 30
    assert run["stopped"] == "budget"
    calls = [p[0] for p in run["points"]]
    assert calls == sorted(calls) and calls[0] == 0


def test_runs_depend_only_on_the_seed(bench):
    spec = next(s for s in bench.TRAINERS if s.name == "BeamSearch")
    first = bench.efficiency_run(spec, "code", seed=1, budget=40, p_improve=0.5)
    second = bench.efficiency_run(spec, "code", seed=1, budget=40, p_improve=0.5)
    other = bench.efficiency_run(spec, "code", seed=2, budget=40, p_improve=0.5)
    assert first["points"] == second["points"]
    assert first["points"] != other["points"]


def test_area_and_score_at_read_the_step_curve(bench):
    points = [(0, 0, 0.0), (10, 1, 0.5), (30, 2, 1.0)]
    assert bench.area(points, 0, 40) == pytest.approx((10 * 0.0 + 20 * 0.5 + 10 * 1.0) / 40)
    assert bench.area(points, 1, 2) == pytest.approx(0.25)
    assert bench.score_at(points, 0, 29) == 0.5
    assert bench.score_at(points, 0, 30) == 1.0


def test_waves_group_overlapping_proposals(bench):
    meter = _load("search_tasks").Meter()
    for span in [(0.0, 1.0), (0.1, 1.1), (1.2, 2.0), (2.5, 3.0), (2.6, 2.7)]:
        meter.span(*span)
    assert meter.waves() == 3


def test_the_informed_move_fixes_a_failed_case_and_may_forget_unseen_kinds(bench):
    task = _load("search_tasks").TASKS["multiinstance"]()
    values = dict.fromkeys(task.names, 0)
    feedback = "ID [0]: beta case failed: needs beta >= 4, has 0"
    for seed in range(5):
        improved = task.improve(values, feedback, random.Random(seed))
        assert improved["beta"] > 0
        assert all(improved[k] == 0 for k in task.names if k != "beta")


def test_the_oracle_takes_the_informed_move_with_its_probability(bench):
    tasks = _load("search_tasks")
    task = tasks.TASKS["multiinstance"]()
    moves = []
    task.improve = lambda values, feedback, rng: moves.append("improve") or values
    task.perturb = lambda values, rng: moves.append("perturb") or values
    agent = task.make_agent()
    oracle = tasks.NoisyOracle(agent, task, tasks.Meter(), seed=0, p_improve=0.25)
    for _ in range(400):
        oracle.fork().step(bypassing=True)
    assert 0.18 < moves.count("improve") / len(moves) < 0.32


def test_the_latency_measurement_counts_rounds(bench):
    spec = next(s for s in bench.TRAINERS if s.name == "UCBSearch")
    run = bench.latency_run(spec, "convex", seed=0, steps=2, latency=0.01, p_improve=0.5)
    assert run["steps"] == 2 and run["rounds"] == 2 and run["waves"] == 2
    assert run["critical_s"] == pytest.approx(0.02)


@pytest.mark.skipif(
    importlib.util.find_spec("sqlalchemy") is None, reason="needs opto-utils[storage]"
)
def test_the_resume_measurement_kills_and_resumes(bench):
    spec = next(s for s in bench.TRAINERS if s.name == "PrioritySearch")
    row = bench.resume_run(spec, "multiinstance", seed=0, steps=1, p_improve=0.5)
    assert row["killed_after_step"] == 1
    assert row["resumed_steps"] == 2
    assert row["calls_before_kill"] > 0 and row["calls_after_resume"] > 0


def test_resume_repeats_are_counted_by_kind(bench):
    tasks = _load("search_tasks")
    before, after = tasks.Meter(), tasks.Meter()
    before.pairs = {("score", "a"): 1, ("feedback", "b"): 1, ("feedback", "c"): 1}
    before.pairs[("score", "c")] = 1
    after.pairs = {("score", "a"): 2, ("score", "b"): 1, ("score", "c"): 1, ("feedback", "b"): 3}
    after.pairs[("score", "new")] = 5
    assert bench._repeats(after, before, "score", {"score"}) == 3  # a twice, c once
    assert bench._repeats(after, before, "score", {"feedback"}, {"score"}) == 1  # c
    assert bench._repeats(after, before, "feedback", {"score", "feedback"}) == 3
