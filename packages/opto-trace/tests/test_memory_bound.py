"""Children are held weakly: a long-lived parameter keeps no output alive without backward."""

from __future__ import annotations

import gc
import threading
import tracemalloc
import weakref

from opto.trace import bundle, model, node
from opto.trace._children import SWEEP_MIN, ChildRefs
from opto.trace.nodes import Node


@bundle()
def respond(prompt, question):
    """Answer the question following the prompt."""
    return f"{prompt} {question}"


def _live_nodes() -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, Node))


def _kept_after(calls: int, prompt: Node) -> tuple[int, int]:
    """Bytes and nodes still allocated after ``calls`` dropped calls on ``prompt``."""
    gc.collect()
    nodes_before = _live_nodes()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for i in range(calls):
            respond(prompt, i)
            prompt + "!"
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    return kept, _live_nodes() - nodes_before


def test_parameter_keeps_bounded_memory_over_many_calls_without_backward():
    prompt = node("Be brief.", trainable=True)
    for i in range(100):  # warm up lazily created state
        respond(prompt, i)
    kept_2k, nodes_2k = _kept_after(2_000, prompt)
    kept_20k, nodes_20k = _kept_after(20_000, prompt)
    assert nodes_2k == 0 and nodes_20k == 0
    # Ten times the calls keep no more: the bound does not depend on the number of calls.
    assert kept_20k < 16 * 1024, kept_20k
    assert kept_20k <= kept_2k + 4 * 1024, (kept_2k, kept_20k)
    assert prompt.children == []


def test_model_calls_free_their_outputs():
    @model
    class Agent:
        def __init__(self):
            self.prompt = node("Be brief.", trainable=True)

        @bundle(trainable=True)
        def act(self, x):
            """Act on x."""
            return x + "!"

        def forward(self, x):
            return self.act(self.prompt + str(x))

    agent = Agent()
    refs = [weakref.ref(agent.forward(i)) for i in range(50)]
    gc.collect()
    assert all(r() is None for r in refs)
    assert agent.prompt.children == [] and agent.act.parameter.children == []


def test_child_list_is_swept_as_it_grows():
    p = node(1, trainable=True)
    keep = [p + i for i in range(3)]
    for i in range(10 * SWEEP_MIN):
        p + i  # dropped at once
    links = p._ch
    assert type(links) is ChildRefs
    assert len(links) < 2 * SWEEP_MIN + len(keep)
    assert [c.data for c in p.children] == [1, 2, 3]


def test_backward_reaches_parameters_through_dropped_intermediates():
    p = node(2, name="p", trainable=True)
    out = p * 3
    for _ in range(5):
        out = out + 1  # only the last output is held
    gc.collect()
    out.backward("too small")
    assert p.feedback and list(p.feedback)[0].data == 6


def test_children_lists_only_the_live_ones_and_is_leaf_follows():
    p = node(1, trainable=True)
    a = p + 1
    b = p + 2
    assert p.children == [a, b] and [c is d for c, d in zip(p.children, [a, b])] == [True] * 2
    assert not p.is_leaf
    del a
    gc.collect()
    assert len(p.children) == 1 and p.children[0] is b
    del b
    gc.collect()
    assert p.children == [] and p.is_leaf


def test_threads_sharing_a_parameter_keep_bounded_links():
    shared = node(1, trainable=True)

    def work() -> None:
        for i in range(2_000):
            shared + i

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    assert shared.children == []
    links = shared._ch
    assert links is None or type(links) is not ChildRefs or len(links) <= 4 * SWEEP_MIN


def test_backward_unlinks_each_held_output_from_a_shared_parameter():
    p = node(1, trainable=True)
    outputs = [p + i for i in range(3 * SWEEP_MIN)]
    for done, out in enumerate(reversed(outputs), start=1):
        out.backward("fb")
        assert len(p.children) == len(outputs) - done
    assert p.children == [] and len(p.feedback) == len(outputs)
