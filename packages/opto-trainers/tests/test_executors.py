"""Executors: order, concurrency up to max_workers, context propagation, nesting, errors."""

import asyncio
import contextvars
import threading
import time

import opto_trainers_test_support as S
import pytest
from opto import trace
from opto.optimizers import Optimizer
from opto.trace import node
from opto.trainers import BasicSearchAlgorithm, ExactMatchGuide
from opto.trainers.executors import (
    AsyncioExecutor,
    SerialExecutor,
    ThreadExecutor,
    make_executor,
)

VAR = contextvars.ContextVar("VAR", default="unset")


@pytest.mark.parametrize("executor", [ThreadExecutor(4), AsyncioExecutor(4)])
def test_tasks_are_held_to_the_callers_budget(executor):
    from opto.utils.testing import ScriptedLLM
    from opto.utils.usage import BudgetExceeded, track_usage

    llm = ScriptedLLM(default="ok")

    def ask(_):
        llm(messages=[{"role": "user", "content": "hi"}], cache=False)

    with track_usage(max_calls=2) as scope, pytest.raises(BudgetExceeded):
        executor.map(ask, range(8))
    assert llm.calls == 2 and scope.requests == 2


class Gauge:
    """Records the largest number of calls in flight at once.

    Each call waits (up to `patience` seconds, given up for good after one miss) until
    `fill` calls are in flight, so an executor that runs calls concurrently shows it even
    when a loaded machine starts its threads late; then it lingers briefly, so one that
    admits too many calls shows that too.
    """

    def __init__(self, fill=1, patience=30.0):
        self.now = self.peak = 0
        self.fill, self.patience = fill, patience
        self.lock = threading.Condition()

    def __call__(self, x):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.lock.notify_all()
            if not self.lock.wait_for(lambda: self.peak >= self.fill, self.patience):
                self.fill = 1  # never filled: the assertions below report it
        time.sleep(0.02)
        with self.lock:
            self.now -= 1
        return x * 2


@pytest.mark.parametrize("executor", [SerialExecutor(), ThreadExecutor(3), AsyncioExecutor(3)])
def test_map_keeps_order_and_caps_concurrency(executor):
    gauge = Gauge(fill=executor.max_workers)
    with executor:
        assert executor.map(gauge, range(9)) == [x * 2 for x in range(9)]
    assert gauge.peak == executor.max_workers


def test_context_reaches_workers_and_nested_map_runs_inline():
    VAR.set("outer")
    with ThreadExecutor(2) as executor:
        seen = executor.map(lambda _: VAR.get(), range(4))
        nested = executor.map(lambda i: executor.map(lambda j: i * 10 + j, range(3)), range(4))
    assert seen == ["outer"] * 4
    assert nested == [[i * 10 + j for j in range(3)] for i in range(4)]


def test_errors_propagate():
    def boom(x):
        if x == 2:
            raise KeyError("two")
        return x

    for executor in (SerialExecutor(), ThreadExecutor(2), AsyncioExecutor(2)):
        with pytest.raises(KeyError):
            executor.map(boom, range(4))


def test_asyncio_executor_awaits_coroutines():
    async def twice(x):
        await asyncio.sleep(0.001)
        return 2 * x

    assert AsyncioExecutor(4).map(twice, [1, 2, 3]) == [2, 4, 6]


def test_make_executor():
    assert isinstance(make_executor(), SerialExecutor)
    assert isinstance(make_executor(num_threads=1), SerialExecutor)
    assert make_executor(num_threads=5).max_workers == 5
    assert isinstance(make_executor("asyncio", 2), AsyncioExecutor)
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("gpu")
    with pytest.raises(ValueError, match="num_threads"):
        make_executor(num_threads=0)


@trace.model
class EchoAgent:
    def __init__(self):
        self.prompt = node("v0", trainable=True)

    def forward(self, x):
        return self.prompt + ""


class Next(Optimizer):
    def _step(self, **kwargs):
        (p,) = self.parameters
        return {p: "v" + str(int(p.data[1:]) + 1)}


def test_out_of_process_executor_gets_plain_tasks_and_same_result():
    data = {"inputs": [1, 2, 3, 4], "infos": ["v1"] * 4}
    results = []
    for executor in (ThreadExecutor(4), S.PicklingExecutor()):
        agent = EchoAgent()
        trainer = BasicSearchAlgorithm(agent, Next(agent.parameters()), executor=executor)
        result = trainer.train(ExactMatchGuide(), data, batch_size=2, num_epochs=2, num_proposals=2)
        results.append((result.final_parameters, result.train_scores, result.history[-1]["scores"]))
    assert results[0] == results[1]
    # v1 wins the first step; the second step's v2 scores lower, so v1 stays.
    assert results[0][0] == {"prompt": "v1"}
