"""Memory: nothing global keeps nodes alive; a traced op stays small."""

from __future__ import annotations

import gc
import tracemalloc
import weakref

from opto.trace.bundle import bundle
from opto.trace.errors import ExecutionError
from opto.trace.nodes import GRAPH, node
from opto.trace.propagators import GraphPropagator


@bundle()
def combine(a, b):
    return a * b + 1


@bundle()
def fails(a):
    raise ValueError("no")


def build_graph():
    x = node(1.0, name="x", trainable=True)
    y = x
    for i in range(50):
        y = combine(y + i, x)
    try:
        fails(y)
    except ExecutionError as e:
        err = e.exception_node
    return x, y, err


def test_dropping_a_graph_frees_every_node():
    refs = []
    for _ in range(5):
        x, y, err = build_graph()
        y.backward("fine", propagator=GraphPropagator())
        refs += [weakref.ref(x), weakref.ref(y), weakref.ref(err)]
        del x, y, err
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)


def test_registry_holds_no_nodes():
    x = node(1, name="lonely")
    ref = weakref.ref(x)
    del x
    gc.collect()
    assert ref() is None
    assert GRAPH.count("lonely") >= 1


def test_traced_op_costs_under_600_bytes():
    x = node(1)
    y = x + 1  # warm up: import operators, intern names
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        y = x
        for _ in range(2000):
            y = y + 1
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert y.data == 2001
    assert (after - before) / 2000 < 600
