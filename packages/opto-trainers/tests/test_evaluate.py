"""evaluate: shapes, ExecutionError feedback, counted failures, max_errors, isolation."""

import pytest
from opto import trace
from opto.trace import bundle, node
from opto.trainers import ExactMatchGuide, Guide, TooManyErrorsError, evaluate
from opto.trainers.evaluation import run_rollouts
from opto.trainers.executors import ThreadExecutor
from opto.utils.usage import BudgetExceeded


@bundle()
def divide(a, b):
    """Divide a by b."""
    return a / b


@trace.model
class Divider:
    def __init__(self):
        self.k = node(12, trainable=True)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return divide(self.k, x)


def test_scores_shapes_and_state_isolation():
    agent = Divider()
    scores = evaluate(agent, ExactMatchGuide(), [1, 2, 3], [12.0, 6.0, 5.0], num_threads=3)
    assert scores == [1.0, 1.0, 0.0]
    assert agent.calls == 0  # every call ran on its own copy of the agent's state
    repeated = evaluate(agent, ExactMatchGuide(), [1, 2], [12.0, 1.0], num_samples=3)
    assert repeated == [[1.0] * 3, [0.0] * 3]
    with pytest.raises(ValueError, match="one info per input"):
        evaluate(agent, ExactMatchGuide(), [1], [1, 2])


def test_execution_error_becomes_feedback_from_the_exception_node():
    rollouts = run_rollouts([Divider()], [0], [1.0], ExactMatchGuide(), min_score=-1)
    (r,) = rollouts
    assert r.error_kind == "execution" and r.score == -1
    assert "ZeroDivisionError" in str(r.feedback)
    assert r.target is not None and r.target.info is not None
    assert evaluate(Divider(), ExactMatchGuide(), [0, 1], [1.0, 12.0], min_score=0) == [0, 1.0]


class Flaky(Guide):
    def get_feedback(self, query, response, reference=None, **kw):
        if query in (2, 3):
            raise ConnectionError("judge unreachable")
        return 1.0, "ok"


def test_other_failures_score_min_score_and_stop_past_max_errors():
    agent = Divider()
    assert evaluate(agent, Flaky(), [1, 2, 3, 4], [0] * 4, min_score=0.0, max_errors=2) == [
        1.0,
        0.0,
        0.0,
        1.0,
    ]
    with pytest.raises(TooManyErrorsError, match="max_errors=1") as info:
        evaluate(agent, Flaky(), [1, 2, 3, 4], [0] * 4, min_score=0.0, max_errors=1)
    assert isinstance(info.value.__cause__, ConnectionError) and info.value.errors == 2


def test_budget_exceeded_is_never_swallowed():
    class Broke(Guide):
        def get_feedback(self, query, response, reference=None, **kw):
            raise BudgetExceeded("no money", limit="calls", budget=0, used=0)

    with pytest.raises(BudgetExceeded):
        evaluate(Divider(), Broke(), [1, 2], [0, 0], min_score=0.0)


def test_rollouts_on_a_thread_executor_keep_order():
    with ThreadExecutor(4) as executor:
        results = run_rollouts(
            [Divider()] * 8,
            list(range(1, 9)),
            [12 / i for i in range(1, 9)],
            ExactMatchGuide(),
            executor=executor,
        )
    assert [r.x for r in results] == list(range(1, 9))
    assert all(r.score == 1.0 for r in results)


def test_a_guide_that_does_not_return_a_pair_is_named():
    from opto.trainers.guide import GuideError

    class Bare(Guide):
        def forward(self, task, response, info=None, **kw):
            return 1.0

    with pytest.raises(GuideError, match=r"Bare returned 1.0; .*FunctionGuide"):
        run_rollouts([Divider()], [1], [12.0], Bare())


def test_rollout_from_target_keeps_node_for_backward_and_unwraps_values():
    from opto.trainers.evaluation import Rollout
    from opto.trainers.sampler import Rollout as ModuleRollout

    out = node(3)
    traced = Rollout.from_target(out, x=1, info=2, score=1.0)
    assert (traced.output, traced.target, traced.x, traced.info) == (3, out, 1, 2)

    plain = ModuleRollout.from_target("text", x=1, info=None, module=None, feedback="ok")
    assert type(plain) is ModuleRollout
    assert (plain.output, plain.target, plain.feedback) == ("text", None, "ok")
