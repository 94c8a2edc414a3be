"""Resuming is refused with another agent, changed hyperparameters (unless overridden) or
a run name that does not exist, with errors naming the difference."""

import logging

import opto_trainers_test_support as S
import pytest
from opto import trace
from opto.trainers import BeamSearch, MinibatchAlgorithm, PrioritySearch
from opto.trainers.resume_check import ResumeMismatchError, agent_signature, check_resume
from opto.utils.storage import RunNotFoundError, open_storage
from opto.utils.testing import ScriptedLLM

pytest.importorskip("sqlalchemy", reason="checkpoints need opto-utils[storage]")


@trace.model
class Renamed:
    """Like `Scale`, but its parameter is called `b`."""

    def __init__(self) -> None:
        self.b = trace.node(1, trainable=True, name="b")

    def forward(self, x):
        return self.b * x


@trace.model
class Texty:
    """Like `Scale`, but its parameter `a` holds a string."""

    def __init__(self) -> None:
        self.a = trace.node("1", trainable=True, name="a")

    def forward(self, x):
        return self.a


def trainer_for(agent, cls=MinibatchAlgorithm):
    return cls(agent, S.NudgeOptimizer(agent.parameters(), ScriptedLLM(S.nudge)), seed=0)


def first_run(tmp_path, cls=MinibatchAlgorithm, **kwargs):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    kwargs = {"batch_size": 2, "max_steps": 1, **kwargs}
    trainer_for(S.Scale(), cls).train(S.TargetGuide(), S.DATA, storage=url, run_name="r", **kwargs)
    return url


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        (Renamed, r"parameters \['a'\] are in the run but not in this agent; parameters \['b'\]"),
        (Texty, r"parameter 'a' is a str, the run's a int"),
    ],
)
def test_resuming_with_another_agent_is_refused_naming_the_difference(tmp_path, agent, message):
    url = first_run(tmp_path)
    trainer = trainer_for(agent())
    with pytest.raises(ResumeMismatchError, match=message):
        trainer.train(S.TargetGuide(), S.DATA, batch_size=2, storage=url, run_name="r", resume=True)
    assert trainer.n_iters == 0  # nothing was loaded


def test_changed_hyperparameters_are_refused_unless_overridden(tmp_path, caplog):
    url = first_run(tmp_path, PrioritySearch, num_proposals=1, num_candidates=2)

    def resume(max_steps=2, **kwargs):
        trainer = trainer_for(S.Scale(), PrioritySearch)
        return trainer.train(
            S.TargetGuide(), S.DATA, storage=url, run_name="r", resume=True, max_steps=max_steps,
            **kwargs,
        )  # fmt: skip

    with pytest.raises(ResumeMismatchError) as caught:
        resume(batch_size=1, num_proposals=3, num_candidates=2)
    text = str(caught.value)
    assert "batch_size: run 2, now 1" in text and "num_proposals: run 1, now 3" in text
    assert "num_candidates" not in text
    assert "resume_overrides=['batch_size', 'num_proposals']" in text
    with pytest.raises(ResumeMismatchError, match="num_proposals: run 1, now 3"):
        resume(batch_size=1, num_proposals=3, num_candidates=2, resume_overrides=["batch_size"])
    with caplog.at_level(logging.WARNING, logger="opto.trainers.resume_check"):
        result = resume(batch_size=1, num_proposals=3, num_candidates=2, resume_overrides=True)
    assert result.n_iters == 2  # continued after the first run's step
    assert "num_proposals changed: 1 -> 3" in caplog.text
    # the run's length may change without an override
    assert resume(batch_size=2, num_proposals=1, num_candidates=2, max_steps=3).n_iters == 3


def test_resume_with_an_unknown_run_name_is_an_error(tmp_path):
    url = first_run(tmp_path, BeamSearch, max_depth=1)
    trainer = trainer_for(S.Scale(), BeamSearch)
    with pytest.raises(RunNotFoundError, match=r"no run named 'typo'.*latest runs: \['r'\]"):
        trainer.train(S.TargetGuide(), S.DATA, storage=url, run_name="typo", resume=True)
    with open_storage(url) as storage:
        assert [run.name for run in storage.list_runs()] == ["r"]  # nothing was created


def test_check_resume_without_a_stored_signature_uses_the_checkpoint():
    state = {"parameters": {"a": 1}}
    config = {"algorithm": "X", "agent": agent_signature(Renamed())}
    with pytest.raises(ResumeMismatchError, match=r"\['a'\] are in the run"):
        check_resume("old", {"algorithm": "X"}, config, state)
    check_resume("old", {"algorithm": "X"}, {"algorithm": "X", "agent": {"a": "int"}}, state)
    with pytest.raises(TypeError, match="resume_overrides"):
        check_resume("old", {"k": 1}, {"k": 2}, None, "k")
    with pytest.raises(TypeError, match="resume_overrides must be True/False or a list"):
        trainer_for(S.Scale()).train(S.TargetGuide(), S.DATA, resume_overrides="batch_size")
