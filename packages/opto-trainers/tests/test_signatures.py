"""Parameter lists declared once: `Trainer.evaluate` takes `evaluate`'s and `run_example`
`rollout`'s (`opto.utils.signatures.takes_parameters_of`); the search trainers'
constructors take `Trainer`'s plus their settings class's fields
(`opto.trainers.signatures.constructor_signature`)."""

import inspect

import opto_trainers_test_support as S
import pytest
from opto.trainers import ObjectiveConfig
from opto.trainers.algorithms import MinibatchAlgorithm
from opto.trainers.algorithms.priority_search import PrioritySearch
from opto.trainers.algorithms.ucb import UCBSearch
from opto.trainers.evaluation import evaluate, rollout, run_example
from opto.trainers.search.gepa import GEPAAlgorithmBase
from opto.trainers.search.gepa_variants import (
    GEPABeamPareto,
    GEPAUCBSearch,
    GEPAUCBSearchSettings,
)


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
    with pytest.raises(TypeError, match="positional arguments but"):
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


def _pieces():
    agent = S.Scale()
    return agent, S.NudgeOptimizer(agent.parameters(), S.ScriptedLLM(S.nudge))


def test_search_constructors_keep_their_positional_order_and_defaults():
    agent, optimizer = _pieces()
    logger = S.RecordingLogger()
    ucb = UCBSearch(agent, optimizer, 4, 2.5, logger, 3)
    assert (ucb.max_buffer_size, ucb.ucb_exploration_factor) == (4, 2.5)
    assert ucb.logger is logger and ucb.num_threads == 3 and ucb.buffer == []
    gepa_ucb = GEPAUCBSearch(agent, optimizer, 5, 1, None, logger, 2, seed=3)
    assert gepa_ucb.settings == GEPAUCBSearchSettings(
        max_buffer_size=5, ucb_exploration_factor=1.0, rng_seed=None
    )
    assert gepa_ucb.logger is logger and gepa_ucb.num_threads == 2 and gepa_ucb.seed == 3
    beam = GEPABeamPareto(agent, optimizer, 2, logger, seed=1)
    assert beam.num_threads == 2 and beam.rng_seed == 11 and not hasattr(beam, "max_buffer_size")
    base = GEPAAlgorithmBase(agent, optimizer, max_buffer_size=3, rng_seed=None)
    assert (base.max_buffer_size, base.rng_seed, base.buffer) == (3, None, [])
    assert GEPAUCBSearch(agent, optimizer).settings == GEPAUCBSearchSettings()
    assert GEPAUCBSearchSettings() == GEPAUCBSearchSettings(
        max_buffer_size=16, ucb_exploration_factor=0.8, rng_seed=7
    )
    plain = PrioritySearch(agent, optimizer, 2, logger, executor="serial", seed=4)
    assert plain.settings is None and plain.num_threads == 2 and plain.seed == 4


def test_search_constructors_refuse_unknown_or_misplaced_arguments():
    agent, optimizer = _pieces()
    with pytest.raises(TypeError, match=r"GEPABeamPareto\(\) .*'max_buffer_size'"):
        GEPABeamPareto(agent, optimizer, max_buffer_size=4)  # its beam is train(beam_width=)
    with pytest.raises(TypeError, match=r"UCBSearch\(\) .*'rng_seed'.*its parameters are"):
        UCBSearch(agent, optimizer, rng_seed=1)
    with pytest.raises(TypeError, match="positional arguments but"):
        GEPAAlgorithmBase(agent, optimizer, 1, None, 16)  # max_buffer_size is keyword-only
    with pytest.raises(ValueError, match="max_buffer_size must be a positive int"):
        UCBSearch(agent, optimizer, 0)
    with pytest.raises(ValueError, match="needs an optimizer"):
        UCBSearch(agent)


def test_search_constructor_signatures_list_the_settings():
    assert list(inspect.signature(UCBSearch).parameters) == [
        "agent",
        "optimizer",
        "max_buffer_size",
        "ucb_exploration_factor",
        "logger",
        "num_threads",
        "executor",
        "seed",
    ]
    gepa = inspect.signature(GEPAAlgorithmBase).parameters
    assert [p.name for p in gepa.values() if p.kind is p.KEYWORD_ONLY] == [
        "executor",
        "seed",
        "max_buffer_size",
        "rng_seed",
    ]
    assert gepa["max_buffer_size"].default == 16 and gepa["rng_seed"].default == 13
    assert inspect.signature(GEPABeamPareto).parameters["rng_seed"].default == 11


def test_constructor_settings_are_recorded_with_the_run():
    ucb, _, _ = S.make(UCBSearch, max_buffer_size=3, ucb_exploration_factor=2)
    ucb.train(S.TargetGuide(), S.DATA, num_search_iterations=1, eval_frequency=0)
    assert ucb._config["max_buffer_size"] == 3 and ucb._config["ucb_exploration_factor"] == 2.0
    beam, _, _ = S.make(GEPABeamPareto, rng_seed=5)
    beam.train(S.TargetGuide(), S.DATA, num_search_iterations=1, eval_frequency=0)
    assert beam._config["rng_seed"] == 5 and beam._config["beam_width"] == 16
    assert "max_buffer_size" not in beam._config
