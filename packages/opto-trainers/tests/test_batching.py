"""`batch_run` and `async_run`: broadcasting, length errors, fresh module copies, context."""

import contextvars
import threading

import pytest
from opto import trace
from opto.trainers import BatchLengthError, ExactMatchGuide, async_run, batch_run, evaluate
from opto.trainers.batching import async_run as async_run_direct


def test_async_run_passes_args_and_kwargs_in_order():
    def f(a, b=0):
        return a * 10 + b

    results = async_run([f] * 4, [(i,) for i in range(4)], [{"b": i} for i in range(4)])
    assert results == [0, 11, 22, 33]
    assert async_run_direct is async_run


def test_async_run_without_arguments_and_sequential_mode():
    seen = []

    def f():
        seen.append(threading.get_ident())
        return len(seen)

    assert async_run([f, f, f], max_workers=1) == [1, 2, 3]
    assert set(seen) == {threading.get_ident()}


def test_async_run_rejects_mismatched_lists_and_bad_worker_counts():
    with pytest.raises(ValueError, match="one entry per run"):
        async_run([print, print], [(1,)])
    with pytest.raises(ValueError, match="max_workers"):
        async_run([print], max_workers=0)


def test_async_run_propagates_the_callers_context_and_errors():
    var = contextvars.ContextVar("var", default="unset")
    var.set("caller")
    barrier = threading.Barrier(3, timeout=60)

    def read():
        barrier.wait()  # all three calls in flight at once: really on threads
        return var.get(), threading.get_ident()

    results = async_run([read] * 3)
    assert [value for value, _ in results] == ["caller"] * 3
    assert len({ident for _, ident in results}) == 3

    def boom():
        raise KeyError("bad")

    with pytest.raises(KeyError, match="bad"):
        async_run([boom, var.get])


def test_async_run_keeps_used_nodes_of_concurrent_bundles_apart():
    @trace.bundle()
    def inner(x):
        return x + 1

    @trace.bundle(allow_external_dependencies=False)
    def outer(x):
        return inner(x).data * 2

    results = async_run([outer] * 8, [(trace.node(i),) for i in range(8)], max_workers=8)
    assert [r.data for r in results] == [2 * (i + 1) for i in range(8)]


def test_batch_run_broadcasts_scalars_and_batches_lists():
    @batch_run(max_workers=3)
    def f(a, b, scale=1):
        return (a + b) * scale

    assert f([1, 2, 3], 10) == [11, 12, 13]
    assert f(1, [1, 2], scale=[10, 100]) == [20, 300]
    assert f(1, 2) == [3]
    # texts and mappings are single values, not batches
    assert batch_run()(lambda s, d: s + str(d["k"]))("ab", {"k": 1}) == ["ab1"]


def test_batch_run_rejects_lists_of_different_lengths():
    @batch_run()
    def f(a, b):
        return a + b

    with pytest.raises(ValueError, match="All arguments and keyword arguments must have the same"):
        f([1, 2], [1, 2, 3])
    with pytest.raises(BatchLengthError):
        f([1], b=[1, 2])


@trace.model
class Counter:
    def __init__(self):
        self.param = trace.node(1, trainable=True)
        self.state = 0

    def forward(self, x):
        self.state += 1
        return self.param + x + self.state


def test_batch_run_gives_every_call_a_fresh_module_copy_with_shared_parameters():
    agent = Counter()
    outputs = batch_run(max_workers=5)(lambda module, x: module(x))(agent, [1, 2, 3, 4, 5])
    # every call saw state 0 -> 1 on its own copy: 1 + x + 1
    assert [o.data for o in outputs] == [3, 4, 5, 6, 7]
    assert agent.state == 0
    assert len(agent.param.children) == 5  # all graphs reach the shared parameter


def test_evaluate_isolates_agent_and_guide_state_per_call():
    agent = Counter()
    guide = ExactMatchGuide()
    scores = evaluate(agent, guide, [1, 2], [3, 0], num_samples=2, num_threads=2)
    assert scores == [[1.0, 1.0], [0.0, 0.0]]
    assert agent.state == 0


def test_threaded_runs_create_distinct_node_names():
    def make(i):
        return trace.node(i, name="threaded")

    nodes = async_run([make] * 100, [(i,) for i in range(100)], max_workers=8)
    assert len({n.name for n in nodes}) == 100
    assert [n.data for n in nodes] == list(range(100))
