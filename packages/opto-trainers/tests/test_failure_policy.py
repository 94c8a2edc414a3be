"""One failure policy in every trainer: an agent or guide that raises on some examples.

Every trainer records each failed example (with its input and the error) in the step's
`info["failures"]`, counts it against `max_errors` over the run's training and validation
rollouts, and goes on until the limit is passed; then `TooManyErrorsError` is raised, the
run is marked failed and its failures are logged as an event. A guide that returns a
score that is None or not a number is an error naming the guide.
"""

import opto_trainers_test_support as S
import pytest
from opto.trainers import (
    BasicSearchAlgorithm,
    BeamSearch,
    MinibatchAlgorithm,
    PrioritySearch,
    UCBSearch,
    evaluate,
)
from opto.trainers.evaluation import TooManyErrorsError
from opto.trainers.guide import GuideError
from opto.utils.storage import open_storage
from opto.utils.testing import ScriptedLLM

pytest.importorskip("sqlalchemy", reason="run storage needs opto-utils[storage]")

BAD = S.BAD
FlakyScale = S.FlakyScale
FlakyGuide = S.FlakyGuide


class NoneGuide(S.TargetGuide):
    """Returns a None score on x == BAD (a broken guide)."""

    def get_feedback(self, query, response, reference=None, **kwargs):
        if query == BAD:
            return None, "no idea"
        return super().get_feedback(query, response, reference)


TRAINERS = [
    (MinibatchAlgorithm, {"batch_size": 2, "num_epochs": 3}),
    (BasicSearchAlgorithm, {"batch_size": 2, "num_epochs": 3, "num_proposals": 2}),
    (BeamSearch, {"batch_size": 2, "max_depth": 3, "beam_width": 2, "num_proposals": 2}),
    (UCBSearch, {"num_search_iterations": 4, "train_batch_size": 2}),
    (PrioritySearch, {"batch_size": 2, "num_candidates": 2, "num_proposals": 2, "num_steps": 4}),
]
IDS = [cls.__name__ for cls, _ in TRAINERS]
FAILING = {"agent": (FlakyScale, S.TargetGuide), "guide": (S.Scale, FlakyGuide)}


def train(cls, kwargs, failing, url, **options):
    agent_class, guide_class = FAILING[failing]
    agent = agent_class()
    optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(S.nudge))
    trainer = cls(agent, optimizer, num_threads=4, seed=0)
    return trainer.train(guide_class(), S.DATA, storage=url, run_name="r", **kwargs, **options)


def stored_failures(url):
    with open_storage(url) as storage:
        return [step.info.get("failures", []) for step in storage.list_steps("r")]


@pytest.mark.parametrize("failing", ["agent", "guide"])
@pytest.mark.parametrize(("cls", "kwargs"), TRAINERS, ids=IDS)
def test_failures_are_recorded_counted_and_the_run_goes_on(cls, kwargs, failing, tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = train(cls, kwargs, failing, url, max_errors=None)
    per_step = stored_failures(url)
    assert len(per_step) == result.n_iters > 1  # the run went on to its end
    failures = [f for step in per_step for f in step]
    assert failures and all(f["x"] == BAD and f["info"] == 6 for f in failures)
    assert all("ConnectionError" in f["error"] and f["error_kind"] == "exception" for f in failures)
    assert {f["score"] for f in failures} <= {0, None}  # min_score (Minibatch's default: 0)

    # the same run with a limit: it goes on until the count passes the limit, then stops
    limit = len(per_step[0])  # the first step's failures are tolerated
    assert sum(map(len, per_step)) > limit
    limited = f"sqlite:///{tmp_path / 'limited.db'}"
    with pytest.raises(TooManyErrorsError, match=rf"max_errors={limit}") as caught:
        train(cls, kwargs, failing, limited, max_errors=limit)
    assert caught.value.errors > limit
    assert caught.value.failures and caught.value.failures[0]["x"] == BAD
    assert 1 <= len(stored_failures(limited)) < result.n_iters
    with open_storage(limited) as storage:
        assert storage.get_run("r").status == "failed"
        (event,) = storage.list_events("r", kind="too_many_errors")
        assert event.payload["failures"][0]["x"] == BAD


@pytest.mark.parametrize(("cls", "kwargs"), TRAINERS, ids=IDS)
def test_a_guide_returning_no_score_is_an_error_naming_it(cls, kwargs, tmp_path):
    agent = S.Scale()
    optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(S.nudge))
    trainer = cls(agent, optimizer, num_threads=4, seed=0)
    with pytest.raises(GuideError, match=r"guide NoneGuide returned the score None"):
        trainer.train(NoneGuide(), S.DATA, **kwargs)


def test_evaluate_records_and_counts_failures_and_rejects_bad_scores():
    seen = []
    scores = evaluate(
        FlakyScale(3),
        S.TargetGuide(),
        S.DATA["inputs"],
        S.DATA["infos"],
        min_score=0.0,
        max_errors=1,
        on_rollouts=seen.extend,
    )
    assert scores == [1.0, 0.0, 1.0, 1.0]
    (failed,) = [r for r in seen if r.error_kind == "exception"]
    assert failed.x == BAD and "ConnectionError: backend down for 2" in failed.error
    with pytest.raises(TooManyErrorsError, match="max_errors=0") as caught:
        evaluate(FlakyScale(3), S.TargetGuide(), [2, 2], [6, 6], max_errors=0)
    assert isinstance(caught.value.__cause__, ConnectionError)

    class TextGuide(S.TargetGuide):
        def get_feedback(self, query, response, reference=None, **kwargs):
            return "good", "fine"

    with pytest.raises(GuideError, match="guide TextGuide returned the score 'good'"):
        evaluate(S.Scale(3), TextGuide(), [1], [3])


def test_the_error_count_survives_a_resume(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    def run(**kwargs):
        agent = FlakyScale()
        optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(S.nudge))
        trainer = MinibatchAlgorithm(agent, optimizer, seed=0)
        return trainer.train(
            S.TargetGuide(), S.DATA, batch_size=2, num_epochs=2, storage=url, run_name="r",
            max_errors=1, **kwargs,
        )  # fmt: skip

    assert run(max_steps=2).n_iters == 2  # one epoch: x == 2 failed once
    with pytest.raises(TooManyErrorsError, match="2 examples failed"):
        run(resume=True)  # the second epoch's failure is the run's second
