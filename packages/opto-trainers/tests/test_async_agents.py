"""Agents with `async def forward` in `evaluate` and in every trainer, on every executor.

The async agent computes exactly what the sync `Scale` does (awaiting an async bundle on
the way), so every trainer must end where it ends with the sync agent, and its outputs
must be traced nodes that a backward reaches the parameter through.
"""

import asyncio
import threading

import opto_trainers_test_support as S
import pytest
from opto import trace
from opto.trace.nodes import Node
from opto.trainers import (
    BasicSearchAlgorithm,
    BeamSearch,
    MinibatchAlgorithm,
    PrioritySearch,
    UCBSearch,
    evaluate,
)
from opto.trainers.algorithms.minibatch import standard_optimization_step
from opto.trainers.executors import AsyncioExecutor, ThreadExecutor
from opto.trainers.runner import resolve
from opto.utils.testing import ScriptedLLM

AsyncScale = S.AsyncScale
LOOPS = S.LOOPS


@trace.bundle()
async def scaled(a, x):
    """Multiply x by a (asynchronously)."""
    await asyncio.sleep(0)
    return a * x


@trace.model
class AsyncBundleScale:
    """`a * x` through an async bundle awaited by an async forward."""

    def __init__(self, a: int = 1) -> None:
        self.a = trace.node(a, trainable=True, name="a")

    async def forward(self, x):
        return await scaled(self.a, x)


TRAINERS = [
    (MinibatchAlgorithm, {"batch_size": 2, "num_epochs": 2}),
    (BasicSearchAlgorithm, {"batch_size": 2, "num_epochs": 2, "num_proposals": 2}),
    (BeamSearch, {"batch_size": 2, "max_depth": 2, "beam_width": 2, "num_proposals": 2}),
    (UCBSearch, {"num_search_iterations": 3, "train_batch_size": 2}),
    (PrioritySearch, {"batch_size": 2, "num_candidates": 2, "num_proposals": 2, "num_steps": 3}),
]


def run(cls, agent, executor, kwargs):
    optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(S.nudge))
    trainer = cls(agent, optimizer, num_threads=4, seed=0, executor=executor)
    return trainer.train(S.TargetGuide(), S.DATA, test_dataset=S.DATA, **kwargs)


@pytest.mark.parametrize("executor", ["asyncio", "threads"])
@pytest.mark.parametrize(("cls", "kwargs"), TRAINERS, ids=[c.__name__ for c, _ in TRAINERS])
def test_every_trainer_trains_an_async_agent_like_a_sync_one(cls, kwargs, executor):
    expected = run(cls, S.Scale(), executor, kwargs)
    agent = AsyncScale()
    result = run(cls, agent, executor, kwargs)
    assert result.final_parameters == expected.final_parameters
    assert result.final_parameters != {"a": 1}  # it learned something
    assert result.train_scores == expected.train_scores
    assert result.test_scores == expected.test_scores
    assert result.test_scores[-1]["score"] > 0.0


@pytest.mark.parametrize(
    "executor", [None, ThreadExecutor(3), AsyncioExecutor(3)], ids=["serial", "threads", "asyncio"]
)
@pytest.mark.parametrize("agent_class", [AsyncScale, AsyncBundleScale])
def test_evaluate_scores_an_async_agent(executor, agent_class):
    agent = agent_class(3)
    scores = evaluate(agent, S.TargetGuide(), S.DATA["inputs"], S.DATA["infos"], executor=executor)
    assert scores == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(("executor", "loops"), [(AsyncioExecutor(4), 1), (ThreadExecutor(4), 4)])
def test_the_asyncio_executor_awaits_async_agents_on_its_own_loop(executor, loops):
    LOOPS.clear()
    agent = AsyncScale(3)
    evaluate(agent, S.TargetGuide(), S.DATA["inputs"], S.DATA["infos"], executor=executor)
    assert len(LOOPS) == 4
    # asyncio: one loop, the executor's; threads: each worker runs its call to completion
    assert len({id(loop) for loop in LOOPS}) == loops


@pytest.mark.parametrize("agent_class", [AsyncScale, AsyncBundleScale])
def test_async_output_is_traced_and_backward_reaches_the_parameter(agent_class):
    agent = agent_class(2)
    target, score, feedback = standard_optimization_step(agent, 3, S.TargetGuide(), 9)
    assert isinstance(target, Node) and target.data == 6
    assert score == pytest.approx(2 / 3) and feedback == "too small"
    optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(S.nudge))
    optimizer.zero_feedback()
    optimizer.backward(target, feedback)
    assert agent.a.feedback  # the feedback reached `a` through the async bundle


def test_resolve_works_under_a_running_loop_and_in_threads():
    async def value():
        await asyncio.sleep(0)
        return 5

    async def inside_loop():
        return resolve(value())  # sync code called from async code

    assert asyncio.run(inside_loop()) == 5
    out = []
    thread = threading.Thread(target=lambda: out.append(resolve(value())))
    thread.start()
    thread.join()
    assert out == [5] and resolve(7) == 7


@trace.model
class ThreadedAsyncScale(S.Scale):
    """An async agent that does its blocking work with `asyncio.to_thread`."""

    async def forward(self, x):
        product = await asyncio.to_thread(lambda: self.a.data * x)
        return self.a * (product // self.a.data)


def test_async_agents_using_to_thread_do_not_starve_the_asyncio_executor():
    # more calls in flight than the loop's default thread pool has threads
    xs = list(range(1, 41))
    executor = AsyncioExecutor(40)
    scores = evaluate(ThreadedAsyncScale(3), S.TargetGuide(), xs, [3 * x for x in xs],
                      executor=executor)  # fmt: skip
    assert scores == [1.0] * 40
