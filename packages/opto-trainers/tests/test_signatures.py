"""Callables that take another's parameters: `Trainer.evaluate` (`evaluate`'s) and
`run_example` (`rollout`'s), through `signatures.takes_parameters_of`."""

import inspect

import opto_trainers_test_support as S
import pytest
from opto.trainers import ObjectiveConfig
from opto.trainers.algorithms import MinibatchAlgorithm
from opto.trainers.evaluation import evaluate, rollout, run_example
from opto.trainers.signatures import takes_parameters_of


def test_trainer_evaluate_takes_the_reference_arguments_positionally_and_by_keyword():
    trainer, agent, _ = S.make(MinibatchAlgorithm, a=3)
    xs, infos = S.DATA["inputs"], S.DATA["infos"]
    guide = S.TargetGuide()
    assert trainer.evaluate(agent, guide, xs, infos, 0.0, 2, 2, "test") == 1.0
    assert trainer.evaluate(agent=agent, guide=guide, xs=xs, infos=infos, num_threads=3) == 1.0
    flaky = S.FlakyScale(3)  # fails on x == 2: scored min_score
    assert trainer.evaluate(flaky, guide, xs, infos, min_score=0.0, max_errors=1) == 0.75
    metrics = trainer.evaluate(
        agent, S.MetricsGuide(), xs, infos, objective_config=ObjectiveConfig(mode="scalar")
    )
    assert metrics == {"closeness": 1.0, "size": 7.5}


def test_trainer_evaluate_refuses_a_wrong_argument_before_running():
    trainer, agent, _ = S.make(MinibatchAlgorithm)
    guide = S.TargetGuide()
    with pytest.raises(TypeError, match=r"Trainer.evaluate\(\) .*'inputs'"):
        trainer.evaluate(agent, guide, [1], [3], inputs=[1])
    with pytest.raises(TypeError, match="executor"):  # the trainer's own executor runs it
        trainer.evaluate(agent, guide, [1], [3], executor=None)
    with pytest.raises(TypeError, match="too many positional"):
        trainer.evaluate(agent, guide, [1], [3], None, 1, None, None, 5)


def test_signatures_show_the_shared_parameters():
    method = inspect.signature(MinibatchAlgorithm.evaluate)
    function = inspect.signature(evaluate)
    assert list(method.parameters)[:9] == [
        "self",
        "agent",
        "guide",
        "xs",
        *list(function.parameters)[3:8],
    ]
    assert list(method.parameters)[9:] == ["max_errors", "objective_config"]
    assert inspect.signature(run_example) == inspect.signature(rollout)
    assert run_example.__name__ == "run_example" and "failure policy" in run_example.__doc__


def test_run_example_applies_the_failure_policy_to_the_example_only():
    record = run_example(S.FlakyScale(3), S.BAD, S.TargetGuide(), 6, min_score=-1.0)
    assert record.error_kind == "exception" and record.score == -1.0
    assert "backend down" in record.error
    ok = run_example(S.Scale(3), 2, S.TargetGuide(), 6, score_dicts=True)
    assert ok.score == 1.0 and ok.score_dict == {"score": 1.0}
    # a wrong argument is the caller's error, not a failed example
    with pytest.raises(TypeError, match=r"run_example\(\) .*'score_dict'"):
        run_example(S.Scale(3), 2, S.TargetGuide(), 6, score_dict=True)


def test_takes_parameters_of_renames_drops_and_extends():
    def source(a, b=2, *, c=3):
        return a

    @takes_parameters_of(source, rename={"a": "first"}, drop=("c",), extra={"d": "int | None"})
    def wrapper(arguments):
        """Wrapped."""
        return arguments

    assert str(inspect.signature(wrapper)) == "(first, b=2, *, d: 'int | None' = None)"
    assert wrapper(1) == {"first": 1, "b": 2, "d": None}
    assert wrapper(first=1, b=5, d=4) == {"first": 1, "b": 5, "d": 4}
    assert wrapper.__doc__ == "Wrapped."
    with pytest.raises(TypeError, match=r"wrapper\(\) .*'c'"):
        wrapper(1, c=3)
