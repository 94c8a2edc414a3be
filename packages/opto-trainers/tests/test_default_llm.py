"""train(), its default LLMJudge and optimizers honour the default LLM set once with
`opto.utils.llm.configure`; without any LLM, train() fails before its first step."""

from __future__ import annotations

from collections.abc import Iterator

import opto_trainers_test_support as S
import pytest
from opto.trace import node
from opto.trainers import LLMJudge, train
from opto.utils.llm import LLMConfigurationError, configure, using
from opto.utils.llm.config import PROVIDER_DEFAULTS
from opto.utils.testing import ScriptedLLM

ENV = (
    "OPTO_LLM_MODEL",
    "TRACE_LITELLM_MODEL",
    "DEFAULT_LITELLM_MODEL",
    "TRACE_DEFAULT_LLM_BACKEND",
)


@pytest.fixture(autouse=True)
def no_llm_configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (*ENV, *(variable for variable, _ in PROVIDER_DEFAULTS)):
        monkeypatch.delenv(name, raising=False)
    configure(llm=None)
    yield
    configure(llm=None)


def judge_and_optimizer(messages, **kwargs) -> str:
    """Grades like a judge ("v2" is right) and proposes like the step optimizer."""
    text = messages[-1]["content"]
    if "Student answer" in text:
        return "Correct [TERMINATE]" if "Student answer:\nv2" in text else "Incorrect: go higher"
    return S.increment(messages)


def run(param):
    return train(
        model=param,
        train_dataset={"inputs": [None], "infos": ["v2"]},
        optimizer=S.StepOptimizer([param], None),  # no LLM given: the default is used
        logger="JSONLLogger",
        logger_kwargs={"path": "/dev/null"},
        num_epochs=3,
    )


def test_train_default_judge_and_optimizer_use_the_configured_llm():
    llm = configure(llm=ScriptedLLM(judge_and_optimizer))
    result = run(node("v0", trainable=True))
    assert result.train_scores == [0.0, 0.0, 1.0]
    assert result.final_parameters == {"parameter": "v3"}
    judged = [r for r in llm.requests if "Student answer" in r.last]
    assert len(judged) == 3 and len(llm.requests) == 6


def test_a_scoped_default_works_the_same():
    with using(ScriptedLLM(judge_and_optimizer)) as llm:
        result = run(node("v0", trainable=True))
    assert result.train_scores == [0.0, 0.0, 1.0] and llm.calls == 6


def test_train_without_any_llm_says_the_default_judge_needs_one(monkeypatch):
    monkeypatch.setattr("opto.utils.llm.factory.local_model_available", lambda: False)
    param = node("v0", trainable=True)
    with pytest.raises(LLMConfigurationError) as info:
        run(param)
    text = str(info.value)
    assert "LLMJudge (the default guide of train()) needs an LLM" in text
    assert "guide_kwargs" in text and "configure(llm=" in text
    assert param.data == "v0"  # failed before the first step


def test_an_explicit_judge_llm_wins_over_the_default():
    configure(llm=ScriptedLLM(lambda **_: "unused"))
    own = ScriptedLLM(lambda **_: "Correct [TERMINATE]")
    assert LLMJudge(llm=own).llm is own
