"""Many threads and asyncio tasks tracing at once: unique names, right parents, no cross-talk."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading

import pytest
from opto.trace import stop_tracing
from opto.trace.bundle import bundle, trace_nodes
from opto.trace.errors import ExecutionError
from opto.trace.nodes import GRAPH, MessageNode, Node, node


@pytest.mark.usefixtures("fresh_graph")
def test_sixteen_threads_each_tracing_a_thousand_operations():
    results: dict[int, list[Node]] = {}
    barrier = threading.Barrier(16)

    def work(t: int) -> None:
        x = node(t, name="x")
        chain = [x]
        barrier.wait()
        for _ in range(1000):
            chain.append(chain[-1] + 1)
        results[t] = chain

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    names = [n.name for chain in results.values() for n in chain]
    assert len(names) == len(set(names)) == 16 * 1001
    assert GRAPH.count("add") == 16 * 1000 and GRAPH.count("x") == 16
    for t, chain in results.items():
        assert chain[-1].data == t + 1000
        for prev, cur in itertools.pairwise(chain):
            assert cur.parents[0] is prev
            assert cur.level == prev.level + 1


def test_threads_keep_separate_used_node_sets_and_tracing_state():
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    @bundle(_process_inputs=False)
    def reads_input(x):
        barrier.wait()  # every thread is inside a bundle at the same time
        return x.data * 2

    def work(t: int) -> None:
        try:
            if t % 2:
                with stop_tracing():
                    out = reads_input(node(t))
                    assert out.parents == []
            else:
                x = node(t)
                out = reads_input(x)
                assert out.parents == [x]
            assert out.data == 2 * t
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


@bundle(_process_inputs=False)
async def slow_double(x, i):
    await asyncio.sleep(0)
    value = x.data  # read after a task switch: must land in this task's used set
    await asyncio.sleep(0)
    return value * 2 + i


@bundle()
async def failing(x):
    await asyncio.sleep(0)
    raise ValueError(f"bad {x}")


@pytest.mark.usefixtures("fresh_graph")
def test_two_hundred_concurrent_asyncio_tasks():

    async def main():
        inputs = [node(k, name="inp") for k in range(200)]
        outputs = await asyncio.gather(*(slow_double(x, k) for k, x in enumerate(inputs)))
        return inputs, outputs

    inputs, outputs = asyncio.run(main())
    assert all(isinstance(o, MessageNode) for o in outputs)
    assert [o.data for o in outputs] == [3 * k for k in range(200)]
    for x, o in zip(inputs, outputs):
        assert o.parents[0] is x
        assert o.info["external_dependencies"] is None
    names = [o.name for o in outputs]
    assert len(set(names)) == 200


def test_async_errors_and_stop_tracing_per_task():
    async def traced_task(flag: asyncio.Event):
        await flag.wait()
        x = node(1)
        return await slow_double(x, 0), x

    async def untraced_task(flag: asyncio.Event):
        with stop_tracing():
            flag.set()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return await slow_double(node(1), 0)

    async def main():
        flag = asyncio.Event()
        return await asyncio.gather(traced_task(flag), untraced_task(flag))

    (traced, x), untraced = asyncio.run(main())
    assert traced.parents[0] is x
    assert untraced.parents == []

    async def boom():
        return await asyncio.gather(failing(node(1, name="a")), slow_double(node(2), 0))

    with pytest.raises(ExecutionError) as info:
        asyncio.run(boom())
    assert info.value.exception_node.parents[0].name.startswith("a:")


def test_trace_nodes_is_per_task():
    async def reader(n: Node, started: asyncio.Event, go: asyncio.Event):
        with trace_nodes() as used:
            started.set()
            await go.wait()
            n.data
        return used

    async def main():
        a, b = node(1), node(2)
        s1, s2, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
        t1 = asyncio.create_task(reader(a, s1, go))
        t2 = asyncio.create_task(reader(b, s2, go))
        await s1.wait()
        await s2.wait()
        go.set()
        return a, b, await t1, await t2

    a, b, used_a, used_b = asyncio.run(main())
    assert used_a == {a} and used_b == {b}


def test_children_of_a_shared_parameter_are_never_lost():
    shared = node(1, name="shared", trainable=True)
    outputs: list[list[Node]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait()
        for _ in range(500):
            outputs[t].append(shared + t)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to provoke races
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(interval)
    made = {id(o) for outs in outputs for o in outs}
    assert len(shared.children) == 4000
    assert {id(c) for c in shared.children} == made


def test_is_tracing_and_graph_trace_flag_are_context_local():
    from opto.trace._state import is_tracing

    seen = {}

    def other():
        seen["other"] = (is_tracing(), GRAPH.TRACE)

    assert is_tracing() and GRAPH.TRACE
    with stop_tracing():
        assert not is_tracing() and not GRAPH.TRACE
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen["other"] == (True, True)
    GRAPH.TRACE = False
    try:
        assert (node(1) + 1).parents == []
    finally:
        GRAPH.TRACE = True
    assert (node(1) + 1).parents != []
