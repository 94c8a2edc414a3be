"""RayExecutor on a local Ray runtime: ordered maps, unwrapped errors, and search trainers
that reach exactly the result they reach on threads (deterministic scripted LLM).

Needs the extra `opto-trainers[ray]`; without Ray only the install-hint test runs (unless
`OPTO_REQUIRE_RAY=1`, which turns a missing Ray into an error).
"""

from __future__ import annotations

import asyncio
import os
import sys

import opto_trainers_test_support as S
import pytest
from opto.trainers.algorithms.beamsearch import BeamSearch, BeamSearchHistory
from opto.trainers.algorithms.priority_search import PrioritySearch
from opto.trainers.algorithms.ucb import UCBSearch
from opto.trainers.executors import make_executor
from opto.trainers.search.classical import ParetobasedPS, SequentialSearch
from opto.trainers.search.gepa_variants import GEPABeamPareto, GEPAUCBSearch
from opto.trainers.search.polca import POLCA
from opto.trainers.search.streaming import StreamingPrioritySearch
from opto.utils.usage import BudgetExceeded, track_usage

try:
    import ray
except ImportError:
    # The ray session sets OPTO_REQUIRE_RAY=1: there a missing Ray is a failure, not a skip.
    if os.environ.get("OPTO_REQUIRE_RAY") == "1":
        raise
    ray = None

needs_ray = pytest.mark.skipif(
    ray is None, reason="Ray is not installed (extra opto-trainers[ray]); see the ray session"
)


def test_missing_ray_gives_the_install_hint(monkeypatch):
    from opto.trainers.ray_executor import RayExecutor, RayNotInstalledError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayNotInstalledError, match=r"opto-trainers\[ray\]"):
        RayExecutor()


@pytest.fixture(scope="module")
def ray_runtime():
    # A task ships a few KB (agent, guide, optimizer state), so a small object store does;
    # Ray's default (30% of the RAM) would reserve gigabytes of /dev/shm on a shared machine.
    options = dict(
        num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 << 20
    )
    try:
        ray.init(**options)
    except Exception as exc:
        # Ray gives its raylet a fixed 30 s to register (not configurable); on a loaded
        # machine that can run out once, so start over once before failing.
        if "timed out during startup" not in str(exc):
            raise
        ray.shutdown()
        ray.init(**options)
    # The test agent, guide and optimizer live in a module the workers cannot import.
    ray.cloudpickle.register_pickle_by_value(S)
    try:
        yield
    finally:
        ray.cloudpickle.unregister_pickle_by_value(S)
        ray.shutdown()


@needs_ray
def test_map_keeps_order_with_more_items_than_workers(ray_runtime):
    from opto.trainers.ray_executor import RayExecutor

    with RayExecutor(max_workers=2) as executor:
        assert executor.map(abs, [-5, 4, -3, 2, -1]) == [5, 4, 3, 2, 1]
        assert executor.map(abs, []) == []


@needs_ray
def test_task_errors_come_back_as_the_original_exception(ray_runtime):
    from opto.trainers.ray_executor import RayExecutor

    with RayExecutor(max_workers=2) as executor, pytest.raises(ValueError):
        executor.map(int, ["1", "x", "3"])


@needs_ray
def test_make_executor_builds_a_ray_executor(ray_runtime):
    from opto.trainers.ray_executor import RayExecutor

    executor = make_executor("ray", num_threads=3)
    assert isinstance(executor, RayExecutor) and executor.max_workers == 3
    assert executor.in_process is False
    executor.close()


@needs_ray
def test_workers_enforce_what_is_left_of_the_drivers_budget(ray_runtime):
    from opto.trainers.ray_executor import RayExecutor

    with RayExecutor(max_workers=1) as executor, track_usage(max_calls=3) as scope:
        assert executor.map(S.ask_once, [1, 2]) == ["1", "2"]
        with pytest.raises(BudgetExceeded, match="max_calls"):
            executor.map(S.ask_once, [3, 4, 5])
    assert scope.requests == 3  # remote requests count in the driver's scope


@needs_ray
def test_workers_keep_the_code_restrictions_of_the_driver(ray_runtime):
    import textwrap

    from opto import trace
    from opto.trace.code_policy import CodePolicy, code_spec, restrict_code
    from opto.trainers.ray_executor import RayExecutor

    # A stdlib function: its bundle is rebuilt in the worker by importing it by name.
    coded = trace.bundle(trainable=True)(textwrap.indent)
    restrict_code(coded.parameter, CodePolicy(forbidden_modules={"os"}))
    with RayExecutor(max_workers=1) as executor:
        (remote,) = executor.map(S.code_spec_of, [coded])
    assert remote == code_spec(coded.parameter)
    assert remote.policy.forbidden_modules == {"os"}


CASES = [
    (PrioritySearch, {}, dict(batch_size=2, num_candidates=2, num_proposals=2, num_steps=3)),
    (POLCA, {}, dict(batch_size=2, num_candidates=2, num_proposals=2, num_steps=3)),
    (SequentialSearch, {}, dict(batch_size=2, num_proposals=2, num_steps=3)),
    (ParetobasedPS, {}, dict(batch_size=1, num_candidates=2, num_proposals=2, num_steps=4)),
    (
        StreamingPrioritySearch,
        {},
        dict(batch_size=1, num_batches=2, num_candidates=4, num_proposals=2, num_steps=5),
    ),
    (
        BeamSearch,
        {},
        dict(batch_size=1, max_depth=3, beam_width=2, num_proposals=2, validation_dataset_size=3),
    ),
    (BeamSearchHistory, {}, dict(batch_size=2, max_depth=2, beam_width=2)),
    (
        UCBSearch,
        {"max_buffer_size": 3},
        dict(num_search_iterations=4, train_batch_size=2, evaluation_batch_size=3),
    ),
    (
        GEPAUCBSearch,
        {"max_buffer_size": 3},
        dict(num_search_iterations=4, train_batch_size=2, pareto_subset_size=3, merge_every=2),
    ),
    (GEPABeamPareto, {}, dict(num_search_iterations=4, train_batch_size=2, beam_width=2)),
]


@pytest.fixture(scope="module")
def ray_executor(ray_runtime):
    from opto.trainers.ray_executor import RayExecutor

    with RayExecutor(max_workers=3, task_threads=2) as executor:
        yield executor  # the trainers leave an executor they were given open


@needs_ray
@pytest.mark.parametrize(("cls", "init", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_training_on_ray_matches_training_on_threads(ray_executor, cls, init, kwargs):
    results = {}
    for name in ("threads", "ray"):
        executor = ray_executor if name == "ray" else "threads"
        trainer, agent, optimizer = S.make(cls, executor=executor, num_threads=3, **init)
        result = trainer.train(S.TargetGuide(), S.DATA, test_dataset=S.DATA, **kwargs)
        results[name] = (
            agent.a.data,
            result.train_scores,
            result.best_score,
            result.test_scores,
            [entry["scores"] for entry in result.history],
            {k: result.usage[k] for k in ("calls", "prompt_tokens", "completion_tokens")},
            optimizer.llm.calls,
        )
    *threaded, thread_calls = results["threads"]
    *remote, driver_calls = results["ray"]
    assert remote == threaded
    assert threaded[0] == S.TARGET
    # On Ray every LLM call ran in a worker, on the LLM object unpickled there, and its
    # usage was reported back to the run (same totals as on threads).
    assert thread_calls > 0 and driver_calls == 0
    assert threaded[-1]["calls"] == thread_calls


@needs_ray
@pytest.mark.parametrize(("cls", "init", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_score_dicts_on_ray_match_threads(ray_executor, cls, init, kwargs):
    from opto.trainers.objectives import ObjectiveConfig

    config = ObjectiveConfig(mode="pareto", minimize={"size"}, weights={"closeness": 1.0})
    results = {}
    for name in ("threads", "ray"):
        executor = ray_executor if name == "ray" else "threads"
        trainer, agent, _ = S.make(cls, executor=executor, num_threads=3, **init)
        result = trainer.train(
            S.MetricsGuide(), S.DATA, test_dataset=S.DATA, objective_config=config, **kwargs
        )
        results[name] = (
            agent.a.data,
            result.test_scores,
            [entry["scores"] for entry in result.history],
        )
    assert results["ray"] == results["threads"]
    assert any(key.endswith("/size") for key in results["ray"][2][-1])
    assert "metrics" in results["ray"][1][-1]


@needs_ray
def test_async_agents_and_failing_examples_on_ray(ray_runtime):
    # AsyncScale records its event loops in S.LOOPS, which Ray pickles with the module (by
    # value); loops left there by earlier tests cannot be pickled.
    S.LOOPS.clear()
    from opto.trainers.evaluation import TooManyErrorsError
    from opto.utils.testing import ScriptedLLM

    def run(agent, executor, **kwargs):
        optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(S.nudge))
        trainer = PrioritySearch(agent, optimizer, num_threads=2, seed=0, executor=executor)
        return trainer.train(
            S.TargetGuide(), S.DATA, batch_size=2, num_candidates=2, num_steps=2, **kwargs
        )

    # An async forward that ran in the driver (as in test_async_agents.py) leaves its event
    # loop in `S.LOOPS`, which Ray pickles with the class: that must not stop shipping it.
    asyncio.run(S.AsyncScale().forward(1))
    assert S.LOOPS
    expected = run(S.Scale(), "threads")
    assert run(S.AsyncScale(), "ray").final_parameters == expected.final_parameters
    with pytest.raises(TooManyErrorsError) as caught:
        run(S.FlakyScale(), "ray", max_errors=1)
    assert caught.value.failures[0]["x"] == S.BAD
    assert "ConnectionError" in caught.value.failures[0]["error"]


@needs_ray
@pytest.mark.parametrize(("cls", "init", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_a_repeated_search_on_ray_reads_its_scores_from_the_driver_cache(
    ray_executor, cls, init, kwargs, tmp_path
):
    pytest.importorskip("sqlalchemy", reason="the evaluation cache lives in run storage")
    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    runs = []
    for _ in range(2):
        trainer, agent, _ = S.make(cls, executor=ray_executor, num_threads=3, **init)
        result = trainer.train(
            S.TargetGuide(), S.DATA, test_dataset=S.DATA, storage=storage, **kwargs
        )
        runs.append((result, agent.a.data))
    (first, first_value), (second, second_value) = runs
    assert first.usage["eval_cache_misses"] > 0
    assert second.usage["eval_cache_misses"] == 0
    assert second.usage["eval_cache_hits"] == (
        first.usage["eval_cache_hits"] + first.usage["eval_cache_misses"]
    )
    assert (second.test_scores, second_value) == (first.test_scores, first_value)
