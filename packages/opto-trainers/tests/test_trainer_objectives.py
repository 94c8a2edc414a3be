"""objective_config in trainers: selection by score dicts, every metric recorded and logged."""

from __future__ import annotations

import itertools
import json
import re
import threading

import opto_trainers_test_support as S
import pytest
from opto.trainers import (
    BasicSearchAlgorithm,
    BeamSearch,
    BeamSearchHistory,
    Guide,
    MinibatchAlgorithm,
    PrioritySearch,
    UCBSearch,
)
from opto.trainers.algorithms.base import TrainOptions
from opto.trainers.cli import main as opto_runs
from opto.trainers.objectives import ObjectiveConfig
from opto.trainers.resume_check import ResumeMismatchError
from opto.trainers.search import Candidate, ParetoHeapMemory, best_candidate
from opto.utils.storage import Storage
from opto.utils.testing import ScriptedLLM

DATA = {"inputs": list(range(4)), "infos": ["v3"] * 4}


def _n(response: str) -> int:
    return int(re.fullmatch(r"v(\d+)", response).group(1))


class TradeOff(Guide):
    """Accuracy peaks at v3; cost grows with N: a trade-off between the two metrics."""

    def get_feedback(self, query, response, reference=None, **kwargs):
        return float(-abs(_n(response) - 3)), "aim for v3"

    def get_score_dict(self, query, response, reference=None, **kwargs):
        n = _n(response)
        return {"acc": float(-abs(n - 3)), "cost": float(n)}


def counting_llm(prompts: list[str] | None = None) -> ScriptedLLM:
    """Proposes v1, v2, v3, v4, ... (one new value per request, in any thread); the
    prompts go to `prompts`."""
    counter = itertools.count(1)
    lock = threading.Lock()

    def reply(messages, **kwargs):
        with lock:
            if prompts is not None:
                prompts.append(messages[-1]["content"])
            return f"v{next(counter)}"

    return ScriptedLLM(reply)


def basic_search(config, **kwargs):
    agent = S.EchoAgent()
    trainer = BasicSearchAlgorithm(
        agent, S.StepOptimizer(agent.parameters(), counting_llm()), num_threads=4
    )
    logger = S.RecordingLogger()
    trainer.logger = logger
    result = trainer.train(
        TradeOff(),
        DATA,
        batch_size=2,
        num_proposals=4,
        max_steps=1,
        objective_config=config,
        **kwargs,
    )
    return result, logger


def test_train_options_take_an_objective_config_or_its_dict():
    cfg = ObjectiveConfig(mode="pareto")
    assert TrainOptions(objective_config=cfg).objective_config is cfg
    assert TrainOptions(objective_config={"mode": "weighted"}).objective_config == ObjectiveConfig(
        mode="weighted"
    )
    with pytest.raises(TypeError, match="objective_config must be"):
        TrainOptions(objective_config="pareto")


@pytest.mark.parametrize(
    ("config", "winner"),
    [
        (ObjectiveConfig(score_key="acc"), "v3"),
        (ObjectiveConfig(mode="weighted", weights={"acc": 1, "cost": 2}, minimize={"cost"}), "v0"),
        (ObjectiveConfig(mode="weighted", weights={"acc": 2, "cost": 1}, minimize={"cost"}), "v3"),
        # front v0..v3 (v4 is dominated by v2); the weighted sums tie, the earliest (the
        # current parameters) stays
        (ObjectiveConfig(mode="pareto", minimize={"cost"}), "v0"),
        (ObjectiveConfig(mode="pareto", minimize={"cost"}, tie_break="lexicographic"), "v3"),
    ],
)
def test_basic_search_selects_by_the_objective(config, winner):
    result, _ = basic_search(config)
    assert result.final_parameters == {"prompt": winner}


def test_basic_search_records_and_logs_every_metric():
    config = ObjectiveConfig(score_key="acc", minimize={"cost"})
    result, logger = basic_search(config)
    (step,) = result.history
    assert step["scores"]["validation"] == 0.0  # "acc" of the winner, v3
    assert step["scores"]["validation/acc"] == 0.0
    assert step["scores"]["validation/cost"] == 3.0
    assert logger.values("validation/cost") == [3.0]
    assert logger.values("Validation score") == [0.0]


def test_test_evaluation_keeps_every_metric():
    config = ObjectiveConfig(score_key="acc")
    result, logger = basic_search(config, test_dataset=DATA)
    assert [t["score"] for t in result.test_scores] == [-3.0, 0.0]  # before, after step 1
    assert result.test_scores[-1]["metrics"] == {"acc": 0.0, "cost": 3.0}
    step = result.history[0]["scores"]
    assert step["test"] == 0.0 and step["test/acc"] == 0.0 and step["test/cost"] == 3.0
    assert logger.values("Average test score/cost") == [0.0, 3.0]


def test_a_dict_scoring_guide_needs_an_objective_config():
    class DictOnly(Guide):
        def get_feedback(self, query, response, reference=None, **kwargs):
            return {"acc": float(response == reference)}, "fb"

    agent = S.EchoAgent()
    trainer = MinibatchAlgorithm(agent, S.StepOptimizer(agent.parameters(), counting_llm()))
    with pytest.raises(ValueError, match="objective_config=ObjectiveConfig"):
        trainer.train(DictOnly(), DATA, batch_size=2, max_steps=1)
    agent = S.EchoAgent()
    trainer = MinibatchAlgorithm(agent, S.StepOptimizer(agent.parameters(), counting_llm()))
    result = trainer.train(
        DictOnly(),
        DATA,
        batch_size=2,
        max_steps=1,
        objective_config=ObjectiveConfig(score_key="acc"),
    )
    assert result.train_scores == [0.0]


def test_storage_and_opto_runs_keep_every_metric(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    config = ObjectiveConfig(mode="pareto", minimize={"cost"}, tie_break="lexicographic")
    basic_search(config, storage=url, run_name="mo")
    with Storage(url) as storage:
        run = storage.get_run("mo")
        (step,) = storage.list_steps(run.id)
        assert step.scores["validation/acc"] == 0.0 and step.scores["validation/cost"] == 3.0
        assert run.config["objective_config"]["mode"] == "pareto"
    assert opto_runs(["--storage", url, "show", "mo"]) == 0
    shown = capsys.readouterr().out
    assert "validation/acc=0" in shown and "validation/cost=3" in shown
    assert opto_runs(["--storage", url, "best", "mo", "--key", "validation/cost", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["score"] == 3.0
    assert opto_runs(["--storage", url, "export", "mo", "-o", "-"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["steps"][0]["scores"]["validation/cost"] == 3.0


def test_resume_keeps_the_objective_and_refuses_a_changed_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    config = ObjectiveConfig(score_key="acc")
    basic_search(config, storage=url, run_name="r")
    with pytest.raises(ResumeMismatchError, match="objective_config"):
        basic_search(ObjectiveConfig(score_key="cost"), storage=url, run_name="r", resume=True)
    result, _ = basic_search(config, storage=url, run_name="r", resume=True, num_epochs=2)
    assert result.n_iters == 1  # the first run's step was restored, not redone


def beam_search(config, cls=BeamSearch, prompts=None, **kwargs):
    agent = S.EchoAgent()
    optimizer = S.StepOptimizer(agent.parameters(), counting_llm(prompts), show_feedback=True)
    trainer = cls(agent, optimizer, num_threads=4, seed=0)
    trainer.logger = S.RecordingLogger()
    options = {
        "batch_size": 2,
        "beam_width": 2,
        "num_proposals": 3,
        "max_depth": 1,
        "validation_dataset_size": 4,
        "objective_config": config,
        **kwargs,
    }
    return trainer, trainer.train(TradeOff(), DATA, **options)


@pytest.mark.parametrize(
    ("config", "beams"),
    [
        (None, ["v3", "v2"]),  # TradeOff's scalar score is the accuracy
        (ObjectiveConfig(score_key="acc"), ["v3", "v2"]),
        (
            ObjectiveConfig(mode="weighted", weights={"acc": 1, "cost": 2}, minimize={"cost"}),
            ["v0", "v1"],
        ),
        (
            ObjectiveConfig(mode="pareto", minimize={"cost"}, weights={"acc": 1, "cost": 2}),
            ["v0", "v1"],
        ),
    ],
)
def test_beam_search_keeps_the_top_k_by_the_objective(config, beams):
    trainer, result = beam_search(config)
    assert [b.paramset["prompt"] for b in trainer.beams] == beams
    assert result.final_parameters == {"prompt": beams[0]}


def test_beam_search_records_every_metric_of_the_best_beam():
    config = ObjectiveConfig(mode="weighted", weights={"acc": 1, "cost": 2}, minimize={"cost"})
    trainer, result = beam_search(config, log_frequency=1)
    scores = result.history[0]["scores"]
    assert scores["validation"] == -3.0  # the weighted sum of v0: -3 - 2 * 0
    assert (scores["validation/acc"], scores["validation/cost"]) == (-3.0, 0.0)
    assert trainer.logger.values("validation/cost") == [0.0]
    assert trainer.logger.values("Best validation score") == [-3.0]
    assert trainer.logger.values("Final validation score/acc") == [-3.0]
    assert trainer.beams[0].score_dict == {"acc": -3.0, "cost": 0.0}
    restored = Candidate.from_dict(trainer.beams[0].to_dict())
    assert restored.score_dict == {"acc": -3.0, "cost": 0.0}


def test_beam_search_history_shows_every_metric_in_its_context():
    prompts: list[str] = []
    config = ObjectiveConfig(score_key="acc")
    trainer, _ = beam_search(config, cls=BeamSearchHistory, prompts=prompts, max_depth=2)
    assert all(isinstance(score, dict) for _, score in trainer.parameter_history)
    assert any("Score: acc=0.0000, cost=3.0000" in p for p in prompts)
    state = trainer._algorithm_state()
    trainer._load_algorithm_state(state)
    assert trainer.parameter_history[0][1] == {"acc": 0.0, "cost": 3.0}


def ucb_search(config, **kwargs):
    agent = S.EchoAgent()
    optimizer = S.StepOptimizer(agent.parameters(), counting_llm())
    trainer = UCBSearch(agent, optimizer, num_threads=4, seed=0)
    trainer.logger = S.RecordingLogger()
    result = trainer.train(
        TradeOff(),
        DATA,
        num_search_iterations=4,
        train_batch_size=2,
        evaluation_batch_size=4,
        objective_config=config,
        **kwargs,
    )
    return trainer, result


@pytest.mark.parametrize(
    ("config", "winner"),
    [
        (None, "v3"),
        (ObjectiveConfig(score_key="acc"), "v3"),
        (ObjectiveConfig(mode="weighted", weights={"acc": 1, "cost": 2}, minimize={"cost"}), "v0"),
        (
            ObjectiveConfig(mode="pareto", minimize={"cost"}, weights={"acc": 1, "cost": 2}),
            "v0",
        ),
    ],
)
def test_ucb_search_adopts_the_best_by_the_objective(config, winner):
    trainer, result = ucb_search(config)
    assert sorted(e.paramset["prompt"] for e in trainer.buffer) == ["v0", "v1", "v2", "v3", "v4"]
    assert result.final_parameters == {"prompt": winner}


def test_ucb_search_keeps_every_metric_of_training_and_validation():
    config = ObjectiveConfig(mode="weighted", weights={"acc": 1, "cost": 2}, minimize={"cost"})
    trainer, result = ucb_search(config)
    v0 = next(e for e in trainer.buffer if e.paramset["prompt"] == "v0")
    # validated once on 4 examples, plus 2 training rollouts per pull of it
    assert sum("score_dict" in r for r in v0.rollouts) == v0.num_scored > 4
    assert v0.mean_score_dict() == {"acc": -3.0, "cost": 0.0}
    assert v0.mean_score() == -3.0  # the bandit's reward: the weighted sum
    assert Candidate.from_dict(v0.to_dict()).mean_score_dict() == v0.mean_score_dict()
    scores = result.history[-1]["scores"]
    assert scores["best_mean"] == -3.0
    assert (scores["best_mean/acc"], scores["best_mean/cost"]) == (-3.0, 0.0)
    assert scores["new_candidate/cost"] == 4.0  # v4, proposed at the last step


def priority_search(config, **kwargs):
    agent = S.EchoAgent()
    optimizer = S.StepOptimizer(agent.parameters(), counting_llm())
    trainer = PrioritySearch(agent, optimizer, num_threads=4, seed=0)
    trainer.logger = S.RecordingLogger()
    options = {
        "batch_size": 2,
        "num_candidates": 2,
        "num_proposals": 2,
        "max_steps": 2,
        "objective_config": config,
        **kwargs,
    }
    return trainer, trainer.train(TradeOff(), DATA, **options)


@pytest.mark.parametrize(
    ("config", "winner"),
    [
        (None, "v3"),
        (ObjectiveConfig(score_key="acc"), "v3"),
        (ObjectiveConfig(mode="weighted", weights={"acc": 1, "cost": 2}, minimize={"cost"}), "v0"),
        (
            ObjectiveConfig(mode="pareto", minimize={"cost"}, weights={"acc": 1, "cost": 2}),
            "v0",
        ),
        (ObjectiveConfig(mode="pareto", minimize={"cost"}, tie_break="lexicographic"), "v3"),
    ],
)
def test_priority_search_exploits_the_best_by_the_objective(config, winner):
    trainer, result = priority_search(config)
    values = sorted(c.paramset["prompt"] for c in trainer.memory)
    assert {"v0", "v3"} <= set(values)
    assert result.final_parameters == {"prompt": winner}


def test_priority_search_candidates_keep_score_dicts_and_weighted_priorities():
    config = ObjectiveConfig(mode="weighted", weights={"acc": 1, "cost": 2}, minimize={"cost"})
    trainer, result = priority_search(config)
    assert isinstance(trainer.memory, ParetoHeapMemory)
    for priority, candidate in trainer.memory.items():
        n = int(candidate.paramset["prompt"][1:])
        assert candidate.mean_score_dict() == {"acc": -abs(n - 3), "cost": n}
        assert all(r["score_dict"] == {"acc": -abs(n - 3), "cost": n} for r in candidate.rollouts)
        assert priority == candidate.mean_score() == -abs(n - 3) - 2 * n
        restored = Candidate.from_dict(candidate.to_dict())
        assert restored.mean_score_dict() == candidate.mean_score_dict()
    scores = result.history[-1]["scores"]
    assert (scores["best_mean"], scores["best_mean/acc"], scores["best_mean/cost"]) == (
        -3.0,
        -3.0,
        0.0,
    )


def _candidate(created, score_dict=None):
    candidate = Candidate({"p": created}, created=created)
    if score_dict is not None:
        candidate.add_rollouts([{"score": None, "score_dict": score_dict}])
    return candidate


def test_pareto_memory_pops_from_the_front_with_the_tie_break():
    memory = ParetoHeapMemory(ObjectiveConfig(mode="pareto"))
    a = _candidate(1, {"x": 0.6, "y": 0.6})  # front, largest sum
    b = _candidate(2, {"x": 0.9, "y": 0.2})  # front
    c = _candidate(3, {"x": 0.5, "y": 0.5})  # dominated by a
    for priority, candidate in [(0.1, a), (0.9, b), (0.95, c)]:
        memory.push(priority, candidate)
    assert memory.pop() == (0.1, a)  # not the highest priority: the best front member
    assert memory.pop() == (0.9, b)
    assert memory.pop() == (0.95, c)


def test_pareto_memory_looks_at_its_top_pareto_k_only():
    memory = ParetoHeapMemory(ObjectiveConfig(mode="pareto"), pareto_k=1)
    memory.push(0.1, _candidate(1, {"x": 1.0}))
    memory.push(0.9, _candidate(2, {"x": 0.0}))
    assert memory.pop()[0] == 0.9
    with pytest.raises(ValueError, match="pareto_k must be a positive int"):
        ParetoHeapMemory(ObjectiveConfig(mode="pareto"), pareto_k=0)


def test_pareto_memory_falls_back_to_priority():
    missing = ParetoHeapMemory(ObjectiveConfig(mode="pareto"))
    missing.push(0.1, _candidate(1, {"x": 1.0}))
    missing.push(0.9, _candidate(2))  # never validated: no score dict
    assert missing.pop()[0] == 0.9
    weighted = ParetoHeapMemory(ObjectiveConfig(mode="weighted"))
    weighted.push(0.1, _candidate(1, {"x": 1.0}))
    weighted.push(0.9, _candidate(2, {"x": 0.0}))
    assert weighted.pop()[0] == 0.9


def test_pareto_best_candidate_prefers_the_oldest_on_ties():
    old, new = _candidate(1, {"x": 1.0}), _candidate(2, {"x": 1.0})
    assert best_candidate([new, old], ObjectiveConfig(mode="pareto")) is old
    assert best_candidate([_candidate(3), old], ObjectiveConfig(mode="weighted")) is old
    assert best_candidate([], ObjectiveConfig()) is None


def test_priority_search_with_an_objective_resumes_to_the_uninterrupted_result(tmp_path):
    config = ObjectiveConfig(mode="pareto", minimize={"cost"}, weights={"acc": 1.0, "cost": 0.1})

    def run(**kwargs):
        agent = S.EchoAgent()
        optimizer = S.StepOptimizer(agent.parameters(), ScriptedLLM(S.increment))
        trainer = PrioritySearch(agent, optimizer, num_threads=4, seed=0)
        options = {"batch_size": 2, "num_candidates": 2, "num_proposals": 1}
        result = trainer.train(TradeOff(), DATA, objective_config=config, **options, **kwargs)
        memory = sorted(
            (c.paramset["prompt"], c.mean_score_dict(), c.num_rollouts) for c in trainer.memory
        )
        return result, memory

    straight, straight_memory = run(max_steps=4)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run(max_steps=2, storage=url, run_name="r")
    resumed, resumed_memory = run(max_steps=4, storage=url, run_name="r", resume=True)
    assert resumed.final_parameters == straight.final_parameters
    assert [h["scores"] for h in resumed.history] == [h["scores"] for h in straight.history]
    assert resumed_memory == straight_memory
    assert "best_mean/cost" in resumed.history[-1]["scores"]


def test_jsonl_logger_gets_every_metric_per_step(tmp_path):
    from opto.trainers import JSONLLogger

    agent = S.EchoAgent()
    trainer = BasicSearchAlgorithm(
        agent,
        S.StepOptimizer(agent.parameters(), counting_llm()),
        num_threads=4,
        logger=JSONLLogger(tmp_path / "log.jsonl"),
    )
    trainer.train(
        TradeOff(),
        DATA,
        batch_size=2,
        num_proposals=2,
        num_epochs=2,
        test_dataset=DATA,
        objective_config=ObjectiveConfig(score_key="acc", minimize={"cost"}),
    )
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    logged = {(line["name"], line["step"]) for line in lines}
    for step in range(1, 5):
        assert {("validation/acc", step), ("validation/cost", step)} <= logged
        assert ("Average test score/cost", step) in logged


def test_minibatch_ensure_improvement_compares_by_the_objective():
    # v0 -> v1 gains accuracy (-3 -> -2) but costs 1 more: with the cost weighted twice
    # the update is worse and rolled back; by accuracy alone it is kept. Both sides are
    # scored by the objective: weighting accuracy 3x gives -9 -> -6 (kept), where the
    # batch's feedback score (-3, the plain accuracy) against -6 would reject it.
    def train(config):
        agent = S.EchoAgent()
        optimizer = S.StepOptimizer(agent.parameters(), ScriptedLLM(S.increment))
        trainer = MinibatchAlgorithm(agent, optimizer)
        return trainer.train(
            TradeOff(),
            DATA,
            batch_size=2,
            max_steps=1,
            ensure_improvement=True,
            objective_config=config,
        )

    kept = train(ObjectiveConfig(mode="weighted", weights={"acc": 1.0}))
    assert kept.final_parameters == {"prompt": "v1"}
    costly = ObjectiveConfig(mode="weighted", weights={"acc": 1, "cost": 2}, minimize={"cost"})
    assert train(costly).final_parameters == {"prompt": "v0"}
    tripled = ObjectiveConfig(mode="weighted", weights={"acc": 3.0})
    assert train(tripled).final_parameters == {"prompt": "v1"}


def test_the_train_entry_point_passes_the_objective_on():
    from opto.trainers import train

    agent = S.EchoAgent()
    result = train(
        model=agent,
        train_dataset=DATA,
        algorithm="BasicSearchAlgorithm",
        optimizer=S.StepOptimizer(agent.parameters(), counting_llm()),
        guide=TradeOff(),
        logger=S.RecordingLogger(),
        batch_size=2,
        num_proposals=4,
        max_steps=1,
        objective_config={
            "mode": "weighted",
            "weights": {"acc": 1, "cost": 2},
            "minimize": ["cost"],
        },
    )
    assert result.final_parameters == {"prompt": "v0"}
    assert result.history[0]["scores"]["validation/cost"] == 0.0
