"""What every PrioritySearch variant (SequentialUpdate, SequentialSearch, ParetobasedPS,
StreamingPrioritySearch) must do: exact resume, LLM budgets, multi-objective guides, the
same result on every executor (threads, asyncio, serial, out of process), and the exports."""

from __future__ import annotations

import warnings

import opto_trainers_test_support as S
import pytest
from opto.trainers import ParetobasedPS, SequentialSearch, SequentialUpdate, StreamingPrioritySearch
from opto.trainers.objectives import ObjectiveConfig

pytest.importorskip("sqlalchemy", reason="checkpoints need opto-utils[storage]")

CASES = [
    (SequentialUpdate, dict(batch_size=2)),
    (SequentialSearch, dict(batch_size=2, num_proposals=3)),
    (ParetobasedPS, dict(batch_size=1, num_candidates=2, num_proposals=2)),
    (
        StreamingPrioritySearch,
        dict(batch_size=1, num_batches=2, num_candidates=4, num_proposals=2),
    ),
]
ids = [cls.__name__ for cls, _ in CASES]


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=ids)
def test_reaches_the_target(cls, kwargs):
    trainer, agent, _ = S.make(cls)
    result = trainer.train(S.TargetGuide(), S.DATA, num_steps=8, **kwargs)
    assert agent.a.data == S.TARGET
    assert result.best_score == 1.0 and result.n_iters == 8


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=ids)
def test_resume_continues_exactly(tmp_path, cls, kwargs):
    (straight, straight_agent, straight_opt, expected), (second, agent, second_opt, resumed) = (
        S.straight_and_resumed(cls, tmp_path, "num_steps", 6, 3, **kwargs)
    )
    assert resumed.n_iters == 6
    assert resumed.train_scores == expected.train_scores
    assert [h["scores"] for h in resumed.history] == [h["scores"] for h in expected.history]
    assert agent.a.data == straight_agent.a.data
    assert [c.to_dict() for c in second.memory] == [c.to_dict() for c in straight.memory]
    # the resumed run made only the remaining steps' proposals
    assert 0 < len(second_opt.events) < len(straight_opt.events)


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=ids)
def test_llm_budget_stops_after_the_last_complete_step(cls, kwargs):
    capped, capped_agent, _ = S.make(cls)
    result = capped.train(S.TargetGuide(), S.DATA, num_steps=8, max_llm_calls=7, **kwargs)
    assert result.stopped == "budget" and result.n_iters >= 1
    assert result.usage["calls"] <= 7
    # the stopped run is the uninterrupted run cut at its last complete step
    straight, straight_agent, _ = S.make(cls)
    expected = straight.train(S.TargetGuide(), S.DATA, num_steps=result.n_iters, **kwargs)
    assert result.train_scores == expected.train_scores
    assert capped_agent.a.data == straight_agent.a.data


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=ids)
def test_multi_objective_guides_score_every_candidate_by_its_metrics(cls, kwargs):
    config = ObjectiveConfig(mode="pareto", minimize={"size"}, weights={"closeness": 1.0})
    trainer, agent, _ = S.make(cls)
    result = trainer.train(S.MetricsGuide(), S.DATA, objective_config=config, num_steps=6, **kwargs)
    assert agent.a.data == S.TARGET
    assert {"best_mean/closeness", "best_mean/size"} <= set(result.history[-1]["scores"])
    scored = [c for c in trainer.memory if c.num_rollouts]
    assert scored and all(set(c.mean_score_dict()) == {"closeness", "size"} for c in scored)


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=ids)
def test_multi_objective_runs_resume_exactly(tmp_path, cls, kwargs):
    config = ObjectiveConfig(mode="weighted", minimize={"size"}, weights={"closeness": 1.0})
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    def run(steps, **more):
        trainer, agent, _ = S.make(cls)
        result = trainer.train(
            S.MetricsGuide(), S.DATA, objective_config=config, num_steps=steps, **kwargs, **more
        )
        return result, agent.a.data, [c.to_dict() for c in trainer.memory]

    straight = run(5)
    run(2, storage=url, run_name="r")
    resumed = run(5, storage=url, run_name="r", resume=True)
    assert resumed[1:] == straight[1:]
    assert [h["scores"] for h in resumed[0].history] == [h["scores"] for h in straight[0].history]


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=ids)
def test_every_executor_reaches_the_same_result(cls, kwargs):
    outcomes = []
    for executor in ("serial", "threads", "asyncio", S.PicklingExecutor()):
        trainer, agent, _ = S.make(cls, executor=executor)
        result = trainer.train(S.TargetGuide(), S.DATA, num_steps=5, **kwargs)
        outcomes.append(
            (agent.a.data, result.train_scores, result.best_score, result.usage["calls"])
        )
    assert outcomes[0][0] == S.TARGET
    assert all(outcome == outcomes[0] for outcome in outcomes)


def test_exported_under_every_name():
    import opto.trainers.algorithms as algorithms

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import opto.trainer as compat
        from opto.trainer.algorithms import classical_algorithms, streaming_priority_search

    for cls in (SequentialUpdate, SequentialSearch, ParetobasedPS, StreamingPrioritySearch):
        assert getattr(algorithms, cls.__name__) is cls
        assert getattr(compat, cls.__name__) is cls
    assert classical_algorithms.SequentialUpdate is SequentialUpdate
    assert classical_algorithms.SequentialSearch is SequentialSearch
    assert classical_algorithms.ParetobasedPS is ParetobasedPS
    assert streaming_priority_search.StreamingPrioritySearch is StreamingPrioritySearch


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=ids)
def test_stop_conditions(tmp_path, cls, kwargs):
    stop = tmp_path / "STOP"
    stop.touch()
    trainer, agent, _ = S.make(cls)
    result = trainer.train(S.TargetGuide(), S.DATA, stop_file=str(stop), num_steps=5, **kwargs)
    assert result.stopped == "stop_file" and result.n_iters == 0 and agent.a.data == 1
    # An optimizer that only proposes the current value never improves: patience ends it.
    agent = S.Scale(1)
    optimizer = S.NudgeOptimizer(agent.parameters(), S.ScriptedLLM(default="1"))
    trainer = cls(agent, optimizer, num_threads=2, seed=0)
    result = trainer.train(S.TargetGuide(), S.DATA, patience=2, num_steps=8, **kwargs)
    assert result.stopped == "no_improvement" and result.n_iters < 8
