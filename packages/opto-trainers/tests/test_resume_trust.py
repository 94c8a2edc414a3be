"""Resuming from run storage treats the checkpoint as an untrusted file (trust_code)."""

import importlib.util

import opto_trainers_test_support as S
import pytest
from opto import trace
from opto.trace.code_policy import UntrustedCodeError
from opto.trainers import ExactMatchGuide, MinibatchAlgorithm
from opto.trainers.checkpoint import CheckpointError
from opto.utils.storage import open_storage
from opto.utils.testing import ScriptedLLM

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sqlalchemy") is None, reason="needs opto-utils[storage]"
)
DATA = {"inputs": list(range(4)), "infos": ["v9"] * 4}
TAMPERED = "def answer(self, prompt, x):\n    return 'tampered'\n"


@trace.model
class Coder:
    def __init__(self):
        self.prompt = trace.node("v0", trainable=True)

    @trace.bundle(trainable=True)
    def answer(self, prompt, x):
        return prompt

    def forward(self, x):
        return self.answer(self.prompt, x)


def _trainer():
    agent = Coder()
    return MinibatchAlgorithm(agent, S.StepOptimizer([agent.prompt], ScriptedLLM(S.increment)))


def _tamper(url, **changes):
    with open_storage(url) as storage:
        state = storage.load_checkpoint("r").state
        state["parameters"].update(changes)
        storage.save_checkpoint("r", state, iteration=state["n_iters"])


def _resume(url, trainer=None, **kwargs):
    trainer = trainer or _trainer()
    trainer.resume(ExactMatchGuide(), DATA, storage=url, run_name="r", max_steps=2, **kwargs)
    return trainer


def test_changed_code_in_a_checkpoint_runs_only_when_trusted(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    _trainer().train(ExactMatchGuide(), DATA, storage=url, run_name="r", max_steps=1)
    _tamper(url, answer=TAMPERED)
    trainer = _trainer()
    with pytest.raises(UntrustedCodeError, match=r"run 'r'.*'answer'.*trust_code=True"):
        _resume(url, trainer)
    assert trainer.agent.answer.parameter.data != TAMPERED
    trusted = _resume(url, trust_code=True)
    assert trusted.agent.answer.parameter.data == TAMPERED


def test_a_tampered_value_type_is_a_checkpoint_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    _trainer().train(ExactMatchGuide(), DATA, storage=url, run_name="r", max_steps=1)
    _tamper(url, prompt=["not", "a", "str"])
    with pytest.raises(CheckpointError, match="'prompt' holds a str, but the file has a list"):
        _resume(url)
