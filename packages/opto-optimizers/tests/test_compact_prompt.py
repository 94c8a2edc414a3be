"""CompactOptoPrime: a short prompt for small models, with OptoPrime's reply handling."""

from __future__ import annotations

import json
from typing import Any

import opto.optimizers
import pytest
from opto import trace
from opto.optimizers import CompactOptoPrime, OptoPrime
from opto.utils.testing import ScriptedLLM

pytestmark = pytest.mark.usefixtures("fresh_graph")


def reply(**suggestion: Any) -> str:
    return json.dumps({"reasoning": "fix it", "answer": "", "suggestion": suggestion})


@trace.bundle(trainable=True)
def route(question):
    """Return the team for the question."""
    return "billing" if "invoice" in question else "tech"


def run(cls: type[OptoPrime], replies: list[str], **kwargs: Any):
    closing = trace.node(
        "Go away.", name="closing", trainable=True, description="The closing line."
    )
    team = route("Where is my invoice?")
    out = trace.operators.format("Our {t} team. {c}", t=team, c=closing)
    llm = ScriptedLLM(replies)
    optimizer = cls([closing, route.parameter], llm=llm, **kwargs)
    optimizer.zero_feedback()
    optimizer.backward(out, "Thank the customer.")
    optimizer.step()
    return optimizer, llm, closing


def test_the_compact_prompt_is_a_fraction_of_optoprimes_and_shows_what_a_small_model_needs():
    _, full_llm, _ = run(OptoPrime, [reply()])
    optimizer, llm, _ = run(CompactOptoPrime, [reply()])
    system, user = (m["content"] for m in llm.requests[0].messages)
    full = sum(len(m["content"]) for m in full_llm.requests[0].messages)
    assert len(system) + len(user) < full / 2
    assert system == CompactOptoPrime.compact_system_prompt
    assert user.startswith("Variables:\n")
    assert user.endswith(
        "\n\nFeedback:\nThank the customer.\n\n" + CompactOptoPrime.default_objective
    )
    # Non-code variables first, each with type, description and current value.
    name = optimizer.parameters[0].py_name
    assert f"{name} (str): The closing line.\nCurrent value: Go away.\n" in user
    assert user.index(f"{name} (str)") < user.index("(a Python function). Current value:")
    assert 'return "billing" if "invoice" in question else "tech"' in user
    assert "Outputs of the run:\n- Our billing team. Go away." in user
    for header in ("#Code", "#Documentation", "#Inputs", "#Others", "#Instruction"):
        assert header not in system + user
    # The reply schema is OptoPrime's: it names exactly the trainable variables.
    schema = llm.requests[0].options["response_format"]["json_schema"]["schema"]
    required = schema["properties"]["suggestion"]["required"]
    assert required == [name, route.parameter.py_name]


def test_a_compact_step_applies_the_reply_and_rejects_bad_code_like_optoprime():
    code = "def route(question) return 'tech'"  # does not compile
    optimizer, _, closing = run(
        CompactOptoPrime, [reply(closing0="Thank you for writing!", __code0=code)]
    )
    assert closing.data == "Thank you for writing!"
    record = optimizer.last_step
    assert set(record.applied) == {"closing0"}
    assert any("__code" in name for name in record.rejected)


def test_objective_and_memory_appear_in_the_compact_prompt():
    optimizer, llm, _ = run(
        CompactOptoPrime,
        [reply(closing0="Thanks!"), reply()],
        objective="Make the closing line friendly.",
        memory_size=2,
    )
    assert llm.requests[0].messages[1]["content"].endswith("Make the closing line friendly.")
    optimizer.zero_feedback()
    closing = optimizer.parameters[0]
    optimizer.backward(trace.operators.format("{c}", c=closing), "Shorter.")
    optimizer.step()
    second = llm.requests[1].messages[1]["content"]
    assert "Earlier values and their feedback:\n- " in second
    assert "Go away." in second and "Thank the customer." in second


def test_compact_optoprime_is_exported_lazily():
    assert opto.optimizers.CompactOptoPrime is CompactOptoPrime
    assert "CompactOptoPrime" in opto.optimizers.__all__
