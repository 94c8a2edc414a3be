"""Proposal-time code checks of optimizers: the gaps a name deny-list left open.

``forbidden_modules``/``forbidden_calls`` ask for a restriction, which turns on the
RestrictedPython-backed mode: routes around the names are rejected as proposals (the
reason reaches the LLM in the next step's feedback) and fail if they run anyway.
"""

from __future__ import annotations

import json

import pytest
from opto import trace
from opto.optimizers import OptoPrime
from opto.optimizers.conversion import ConversionError, convert_code
from opto.trace import ExecutionError
from opto.utils.testing import ScriptedLLM

OLD = "def scale(x, k=2, *, bias=0):\n    return x * k + bias\n"
DENY = {"forbidden_modules": {"os", "subprocess"}, "forbidden_calls": {"eval", "exec", "open"}}


pytestmark = pytest.mark.usefixtures("fresh_graph")


def _code(body: str) -> str:
    return f"def scale(x, k=2, *, bias=0):\n    {body}\n"


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        ("async def scale(x, k=2, *, bias=0):\n    return x\n", "must stay a def function"),
        (_code("yield x"), r"makes it a generator function \(def with yield\)"),
        (_code("yield from [x]"), "makes it a generator function"),
        (OLD + "\nclass scale:\n    pass\n", "only imports and the definition of scale"),
        (OLD + "\nscale = lambda x, k=2, *, bias=0: 0\n", "only imports and the definition"),
        (OLD + "\ndef scale(x, k=2, *, bias=0):\n    return 0\n", "defines scale twice"),
        ("print('defined')\n" + OLD, r"line 1 has \"print\('defined'\)\""),
        ("import os\nos.system('true')\n" + OLD, "line 2 has"),
        ("def scale(x, k=print('hi'), *, bias=0):\n    return x\n", "default value"),
        ("def scale(x, k=2, *, bias=[i for i in range(9)]):\n    return x\n", "default value"),
        ("def scale(x, k=2, *, bias=0) -> print('x'):\n    return x\n", "annotation"),
        ("@print\ndef scale(x, k=2, *, bias=0):\n    return x\n", "decorator"),
    ],
)
def test_proposal_gaps_are_closed(new, reason):
    with pytest.raises(ConversionError, match=reason):
        convert_code(OLD, new)


def test_async_cannot_replace_async_with_def():
    old = "async def scale(x):\n    return x\n"
    with pytest.raises(ConversionError, match="must stay an async def function"):
        convert_code(old, "def scale(x):\n    return x\n")
    assert convert_code(old, "async def scale(x):\n    return 2 * x\n")


def test_nested_generators_keep_a_plain_function():
    body = "def inner():\n        yield x\n    return list(inner())"
    assert convert_code(OLD, _code(body))
    assert convert_code(OLD, _code("return [v for v in (lambda: (yield))()]"))


def test_plain_defaults_and_annotations_are_fine():
    assert convert_code(OLD, "def scale(x: float, k=-2, *, bias=None) -> float:\n    return x\n")


BYPASSES = [
    "return __builtins__['__import__']('os').getcwd()",
    "return vars(__builtins__)['open']('f')",
    "return ().__class__.__base__.__subclasses__()",
    "return scale.__globals__['os']",
    "return vars(len.__self__)['op' + 'en']('f')",
    "import ctypes\n    return ctypes.CDLL(None)",
    "import io\n    return io.FileIO('f').read()",
    "import pty\n    return pty.spawn('sh')",
    "import operator\n    return operator.attrgetter('__globals__')(scale)",
]


@pytest.mark.parametrize("body", BYPASSES)
def test_routes_around_the_deny_lists_are_rejected(body):
    pytest.importorskip("RestrictedPython")
    with pytest.raises(ConversionError, match="not allowed"):
        convert_code(OLD, _code(body), **DENY)


def _reply(**suggestion: str) -> str:
    return json.dumps({"reasoning": "r", "answer": "", "suggestion": suggestion})


@trace.bundle(trainable=True)
def triple(v):
    """Triple it."""
    return v * 3


def test_a_rejected_proposal_is_feedback_for_the_next_step_and_runs_restricted():
    pytest.importorskip("RestrictedPython")
    original = triple.parameter.data
    name = triple.parameter.py_name
    bad = "def triple(v):\n    return getattr(v, '__cl' + 'ass__')\n"
    llm = ScriptedLLM([_reply(**{name: _code("return 1")}), _reply()])
    optimizer = OptoPrime([triple.parameter], llm=llm, **DENY)
    try:
        optimizer.backward(triple(trace.node(1)), "make it 4")
        optimizer.step()
        assert optimizer.last_step.rejected[name].startswith("the code must define")
        assert triple.parameter.data == original
        optimizer.zero_feedback()
        optimizer.backward(triple(trace.node(1)), "make it 4")
        optimizer.step()
        prompt = llm.requests[1].messages[1]["content"]
        assert "were rejected and not applied" in prompt
        assert f"- {name}: the code must define the function triple(v)" in prompt
        # Code that reaches the parameter without the check still runs restricted.
        triple.parameter._set(bad)
        with pytest.raises(ExecutionError, match="may not read the attribute '__class__'"):
            triple(trace.node(1))
    finally:
        triple.parameter._set(original)


def test_a_tampered_or_deeply_nested_optimizer_state_is_a_clear_error(tmp_path):
    optimizer = OptoPrime([triple.parameter], llm=ScriptedLLM([]))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="not an optimizer state file"):
        optimizer.load(deep)
    with pytest.raises(ValueError, match="optimizer state is malformed"):
        optimizer.load_state_dict({"steps": [1, 2]})
    with pytest.raises(ValueError, match="optimizer state is malformed"):
        optimizer.load_state_dict({"step_count": "many"})
