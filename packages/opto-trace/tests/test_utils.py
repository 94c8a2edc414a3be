"""opto.trace.utils helpers."""

from __future__ import annotations

import json

from opto.trace.nodes import node
from opto.trace.propagators import TraceGraph
from opto.trace.utils import (
    contain,
    dedent,
    escape_json_nested_quotes,
    for_all_methods,
    global_functions_list,
    parse_eqs_to_dict,
    remove_non_ascii,
    sum_feedback,
)


def test_contain_is_identity_membership():
    a, b = node(1), node(1)
    assert a == b and b in [a], "value equality would say yes"
    assert contain([a], a)
    assert not contain([a], b)


def test_sum_feedback_returns_zero_without_feedback():
    assert sum_feedback([node(1), node(2)]) == 0
    assert sum_feedback([]) == 0


def test_sum_feedback_sums_trace_graphs_of_all_nodes():
    x, y = node(1), node(2)
    x._add_feedback("k1", TraceGraph([(0, x)], "fb"))
    y._add_feedback("k2", TraceGraph([(0, y)], "fb"))
    total = sum_feedback([x, y])
    assert isinstance(total, TraceGraph)
    assert [n for _, n in total.graph] == [x, y]
    assert total.user_feedback == "fb"


def test_sum_feedback_adds_other_feedback():
    x = node(1)
    x._add_feedback("a", "one ")
    x._add_feedback("b", "two")
    assert sum_feedback([x]) == "one two"


def test_for_all_methods_decorates_plain_methods_only():
    calls = []

    def record(fn):
        def wrapper(*args, **kwargs):
            calls.append(fn.__name__)
            return fn(*args, **kwargs)

        return wrapper

    @for_all_methods(record)
    class Thing:
        def __init__(self):
            self.value = 1

        def get(self):
            return self.value

        def _helper(self):
            return 2

        def __len__(self):
            return 0

    thing = Thing()
    assert thing.get() == 1 and thing._helper() == 2 and len(thing) == 0
    assert calls == ["get", "_helper"]


def test_parse_eqs_to_dict():
    text = "x0 = 1\nx1=2\nx2=`2`\n__code0= def fun():\n    y = 3\n    return y\n\nabc_test1=test"
    assert parse_eqs_to_dict(text) == {
        "x0": "1",
        "x1": "2",
        "x2": "2",
        "__code0": "def fun():\n    y = 3\n    return y",
        "abc_test1": "test",
    }
    assert parse_eqs_to_dict("no equations here") == {}


def test_escape_json_nested_quotes_makes_llm_json_parse():
    broken = '{"reasoning": "He said "hi" to me", "answer": "ok"}'
    fixed = escape_json_nested_quotes(broken)
    assert json.loads(fixed) == {"reasoning": 'He said "hi" to me', "answer": "ok"}
    valid = '{"a": "x \\"y\\"", "b": ["c", "d"]}'
    assert escape_json_nested_quotes(valid) == valid


def test_remove_non_ascii_drops_control_characters():
    text = '{"a": "line\x00one\x07"}\n\tcafé'
    assert remove_non_ascii(text) == '{"a": "lineone"}\n\tcafé'


def test_dedent_strips_every_line():
    assert dedent("  a\n    b  \n c") == "a\nb\nc"


def test_global_functions_list_names_callable_builtins():
    assert {"print", "len", "sorted", "int", "ValueError"} <= set(global_functions_list)
    assert "__name__" not in global_functions_list
