"""Checkpoints and step records in run storage; stop conditions; budgets; Ctrl-C."""

import importlib.util

import opto_trainers_test_support as S
import pytest
from opto.trainers import ExactMatchGuide, MinibatchAlgorithm
from opto.trainers.checkpoint import CheckpointError
from opto.utils.storage import open_storage
from opto.utils.testing import ScriptedLLM

Agent = S.EchoAgent
Toy = S.StepOptimizer
increment = S.increment

DATA = {"inputs": list(range(8)), "infos": ["v2"] * 8}
needs_storage = pytest.mark.skipif(
    importlib.util.find_spec("sqlalchemy") is None, reason="needs opto-utils[storage]"
)


def make(llm=None):
    agent = Agent()
    return MinibatchAlgorithm(agent, Toy(agent.parameters(), llm or ScriptedLLM(increment)), seed=1)


@needs_storage
def test_every_step_lands_in_storage_and_resume_continues(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    first = make().train(
        ExactMatchGuide(), DATA, batch_size=2, num_epochs=2, storage=url, run_name="r", max_steps=3
    )
    assert first.stopped == "max_steps" and first.n_iters == 3
    with open_storage(url) as storage:
        steps = storage.list_steps("r")
        assert [s.iteration for s in steps] == [1, 2, 3]
        assert steps[0].parameters == {"prompt": "v1"} and steps[0].scores["train"] == 0.0
        assert steps[0].usage["calls"] == 3 and len(steps[0].feedback) == 2
        state = storage.load_checkpoint("r").state
        assert state["n_iters"] == 3 and state["loader"]["cursor"] == 6
        assert state["optimizer"]["step_count"] == 3
    resumed = make().resume(
        ExactMatchGuide(), DATA, batch_size=2, num_epochs=2, storage=url, run_name="r"
    )
    uninterrupted = make().train(ExactMatchGuide(), DATA, batch_size=2, num_epochs=2)
    assert resumed.n_iters == uninterrupted.n_iters == 8
    assert resumed.final_parameters == uninterrupted.final_parameters
    assert resumed.train_scores == uninterrupted.train_scores
    assert resumed.usage["calls"] == uninterrupted.usage["calls"]


@needs_storage
def test_resume_with_another_algorithm_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    make().train(ExactMatchGuide(), DATA, batch_size=2, storage=url, run_name="r", max_steps=1)

    class Other(MinibatchAlgorithm):
        pass

    agent = Agent()
    with pytest.raises(CheckpointError, match="same algorithm"):
        Other(agent, Toy(agent.parameters(), ScriptedLLM(increment))).train(
            ExactMatchGuide(), DATA, batch_size=2, storage=url, run_name="r", resume=True
        )


@needs_storage
def test_reusing_a_run_name_without_resume_says_how_to_continue(tmp_path):
    from opto.utils.storage import RunExistsError

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    make().train(ExactMatchGuide(), DATA, batch_size=2, storage=url, run_name="r", max_steps=1)
    # the storage's own hint (load_if_exists=True) is no train() keyword
    with pytest.raises(RunExistsError, match=r"resume=True.*run_name") as caught:
        make().train(ExactMatchGuide(), DATA, batch_size=2, storage=url, run_name="r")
    assert "load_if_exists" not in str(caught.value)


def test_patience_stops_after_evaluations_without_improvement():
    result = make(ScriptedLLM(default="v9")).train(
        ExactMatchGuide(), DATA, batch_size=1, test_dataset=DATA, patience=2
    )
    assert result.stopped == "no_improvement" and result.n_iters == 2


def test_stop_file(tmp_path):
    stop = tmp_path / "STOP"
    stop.touch()
    result = make().train(ExactMatchGuide(), DATA, batch_size=2, stop_file=str(stop))
    assert result.stopped == "stop_file" and result.n_iters == 0


def test_llm_budget_stops_cleanly_after_the_last_complete_step():
    result = make().train(ExactMatchGuide(), DATA, batch_size=2, max_llm_calls=7)
    # a step costs 3 calls: the third step is refused its 7th call and rolled back
    assert result.stopped == "budget" and result.n_iters == 2
    assert result.final_parameters == {"prompt": "v2"}


def test_resumed_call_budget_counts_the_requests_already_sent():
    from opto.trainers.session import _remaining
    from opto.utils.usage import Budget

    budget = Budget(max_calls=10, max_usd=1.0)
    used = {"calls": 3, "cached_calls": 1, "requests": 5, "cost_usd": 0.25}
    assert _remaining(budget, used) == Budget(max_calls=5, max_usd=0.75)  # retries count
    older = {"calls": 3, "cached_calls": 1}  # a checkpoint from before requests were kept
    assert _remaining(budget, older).max_calls == 8


@needs_storage
def test_ctrl_c_checkpoints_and_returns(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    calls = []

    def interrupting(messages, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return increment(messages)

    result = make(ScriptedLLM(interrupting)).train(
        ExactMatchGuide(), DATA, batch_size=2, storage=url, run_name="r"
    )
    assert result.stopped == "interrupted" and result.n_iters == 1
    assert result.final_parameters == {"prompt": "v1"}
    with open_storage(url) as storage:
        assert storage.get_run("r").status.value == "interrupted"
        assert storage.load_checkpoint("r").state["loader"]["cursor"] == 2


class Opaque:
    """Feedback that JSON cannot hold."""

    def __repr__(self):
        return "<opaque>"


@needs_storage
def test_step_records_survive_values_json_cannot_hold(tmp_path):
    from opto.trainers import FunctionGuide

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    guide = FunctionGuide(lambda q, r, ref: (0.0, Opaque()))
    make().train(guide, DATA, batch_size=2, storage=url, run_name="r", max_steps=1)
    with open_storage(url) as storage:
        (step,) = storage.list_steps("r")
    assert step.feedback[0]["feedback"] == "<opaque>"


def test_alias_and_name_together_is_an_error():
    from opto.trainers.algorithms.base import UnknownTrainArgumentError

    with pytest.raises(UnknownTrainArgumentError, match="alias"):
        make().train(ExactMatchGuide(), DATA, eval_frequency=1, test_frequency=2)


def test_asyncio_executor_trains_like_threads():
    results = []
    for executor in ("threads", "asyncio"):
        agent = Agent()
        trainer = MinibatchAlgorithm(
            agent, Toy(agent.parameters(), ScriptedLLM(increment)), 4, executor=executor
        )
        results.append(trainer.train(ExactMatchGuide(), DATA, batch_size=4).final_parameters)
    assert results == [{"prompt": "v2"}, {"prompt": "v2"}]


def test_usd_budget_counts_priced_calls_only():
    llm = ScriptedLLM(increment, cost_per_call=0.1)
    result = make(llm).train(ExactMatchGuide(), DATA, batch_size=2, max_cost=0.25)
    # the agent's calls have no price; the optimizer's cost 0.1 each: the 4th is refused
    assert result.stopped == "budget" and result.n_iters == 3
    assert result.usage["cost_usd"] == pytest.approx(0.3)
