"""Restricted execution of trainable code: every known bypass route fails with a clear error.

Each route is tried twice: as a proposal (``check_code`` against the original, the check
optimizers and loaders run) and as code that reaches execution anyway (set directly on
the parameter), where the RestrictedPython guards must stop it.
"""

from __future__ import annotations

import json
import sys

import pytest
from opto import trace
from opto.trace import ExecutionError
from opto.trace.code_policy import (
    CodePolicy,
    CodePolicyError,
    check_code,
    code_spec,
    restrict_code,
)

pytest.importorskip("RestrictedPython", reason="the sandbox extra is not installed")

POLICY = CodePolicy(forbidden_modules={"os", "subprocess"}, forbidden_calls={"system"})


@trace.bundle(trainable=True, code_policy=POLICY)
def probe(x):
    """Return x doubled."""
    return x * 2


ORIGINAL = code_spec(probe.parameter).original

# Routes a name deny-list misses; each body is the function's body.
BYPASSES = {
    "builtins subscript": "return __builtins__['__import__']('os').getcwd()",
    "vars of builtins": "return vars(__builtins__)['open']('/etc/passwd').read()",
    "subclasses walk": "return ().__class__.__base__.__subclasses__()",
    "function globals": "return probe.__globals__['sys']",
    "builtin __self__": "return len.__self__.open",
    "getattr by string": "return getattr(getattr(x, '__cl' + 'ass__'), 'mro')()",
    "getattr to a module": "import json\n    return getattr(json, 'codecs').open('/etc/passwd')",
    "frame walk": "g = (i for i in [1])\n    return g.gi_frame.f_back.f_globals",
    "frame walk by string": "g = (i for i in [1])\n    return getattr(g, 'gi_' + 'frame')",
    "ctypes": "import ctypes\n    return ctypes.CDLL(None).system(b'true')",
    "io.FileIO": "import io\n    return io.FileIO('/etc/passwd').read()",
    "pty": "import pty\n    return pty.spawn('sh')",
    "operator.attrgetter": "import operator\n    return operator.attrgetter('__globals__')(probe)",
    "importlib": "import importlib\n    return importlib.import_module('o' + 's')",
    "str.format walk": "return '{0.__class__.__mro__}'.format(x)",
    "dunder item": "return {'__builtins__': 1}['__builtins__']",
    "module attribute write": "import math\n    math.pi = 3\n    return math.pi",
    "forbidden call by string": "import json\n    return getattr(json, 'sys' + 'tem')",
}


def _code(body: str) -> str:
    return f"def probe(x):\n    {body}\n"


@pytest.mark.parametrize("route", sorted(BYPASSES))
def test_each_bypass_fails_when_it_runs(route):
    probe.parameter._set(_code(BYPASSES[route]))
    try:
        with pytest.raises(ExecutionError) as caught:
            probe(trace.node(3))
    finally:
        probe.parameter._set(ORIGINAL)
    text = str(caught.value)
    assert "restricted code may not" in text or "not allowed" in text or "not defined" in text


@pytest.mark.parametrize(
    "route",
    sorted(
        set(BYPASSES)
        - {
            "getattr by string",
            "getattr to a module",
            "frame walk by string",
            "dunder item",
            "forbidden call by string",
            "module attribute write",
            "str.format walk",
        }
    ),
)
def test_each_statically_visible_bypass_is_rejected_as_a_proposal(route):
    with pytest.raises(CodePolicyError, match="not allowed"):
        check_code(_code(BYPASSES[route]), original=ORIGINAL, policy=POLICY)


def test_the_original_runs_and_allowed_code_works():
    assert probe(trace.node(3)).data == 6
    probe.parameter._set(
        "import math\nimport json\n\ndef probe(x):\n"
        "    total = 0\n    for a, b in [(1, 2)]:\n        total += a + b\n"
        "    return json.dumps([math.floor(x), total, sorted({3, 1}), max(x, 1)])\n"
    )
    try:
        assert json.loads(probe(trace.node(3)).data) == [3, 3, [1, 3], 3]
    finally:
        probe.parameter._set(ORIGINAL)


def test_an_allowlist_limits_imports():
    policy = CodePolicy(allowed_imports={"math"})
    check_code(
        "import math\n\ndef probe(x):\n    return math.pi\n", original=ORIGINAL, policy=policy
    )
    with pytest.raises(CodePolicyError, match="imports json"):
        check_code("import json\n\ndef probe(x):\n    return 1\n", original=ORIGINAL, policy=policy)


def test_a_restriction_added_later_applies_to_execution():
    @trace.bundle(trainable=True)
    def later(x):
        return x + 1

    later.parameter._set("import os\n\ndef later(x):\n    return os.getcwd()\n")
    assert isinstance(later(trace.node(1)).data, str)  # unrestricted: runs
    restrict_code(later.parameter, CodePolicy(forbidden_modules={"os"}))
    later._compiled = None
    with pytest.raises(ExecutionError, match="restricted code may not import os"):
        later(trace.node(1))


def test_restriction_survives_a_deep_copy():
    import copy

    clone = copy.deepcopy(probe)
    assert code_spec(clone.parameter).policy == POLICY
    clone.parameter._set(_code(BYPASSES["ctypes"]))
    with pytest.raises(ExecutionError, match="restricted code may not import ctypes"):
        clone(trace.node(1))


def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "RestrictedPython", None)
    with pytest.raises(ImportError, match=r"opto-trace\[sandbox\]"):
        check_code(_code("return x"), original=ORIGINAL, policy=POLICY)


@trace.model
class Coder:
    """An agent with trainable code (pickled by reference from this module)."""

    @trace.bundle(trainable=True)
    def act(self, x):
        return x + 1

    def forward(self, x):
        return self.act(x)


def test_restriction_survives_pickling_a_used_agent():
    # What a Ray worker gets: an agent that already ran, whose optimizer restricted its code.
    import pickle

    agent = Coder()
    agent.forward(trace.node(1)).backward("more")
    (parameter,) = agent.parameters()
    restrict_code(parameter, CodePolicy(forbidden_modules={"os"}))
    copy = pickle.loads(pickle.dumps(agent))
    (copied,) = copy.parameters()
    assert code_spec(copied) == code_spec(parameter)
    assert copy.forward(trace.node(1)).data == 2
    copied._set("import os\n\ndef act(self, x):\n    return os.getcwd()\n")
    with pytest.raises(ExecutionError, match="restricted code may not import os"):
        copy.forward(trace.node(1))
