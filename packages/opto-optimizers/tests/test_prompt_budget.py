"""The prompt of a large graph stays within max_section_chars; variables and feedback stay."""

from __future__ import annotations

import json
import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opto import trace
from opto.optimizers import OptoPrime, OptoPrimeV2
from opto.optimizers.prompt_budget import DEFAULT_MAX_SECTION_CHARS, fit_entries
from opto.utils.testing import ScriptedLLM

NODES = 3_000


def test_entries_that_fit_are_all_kept():
    text, omitted = fit_entries(["a", "b", "c"], str, 100)
    assert (text, omitted) == ("a\nb\nc", 0)
    assert fit_entries([f"line {i}" for i in range(10_000)], str, None)[1] == 0


def test_long_sections_keep_priority_first_and_last_entries_and_say_what_was_left_out():
    entries = [f"step{i} = f(x=step{i - 1})" for i in range(1, 5_000)]
    entries[2_500] = "step2500 = f(x=secret0)"
    text, omitted = fit_entries(entries, str, 1_000, priority=lambda line: "secret0" in line)
    assert len(text) <= 1_000
    lines = text.split("\n")
    assert lines[0] == entries[0] and lines[-1] == entries[-1]
    assert entries[2_500] in lines
    assert omitted == len(entries) - sum(1 for line in lines if not line.startswith("..."))
    markers = [line for line in lines if line.startswith("...")]
    assert len(markers) == 2  # one before and one after the kept priority line
    assert (
        markers[0].startswith("... (")
        and "of 4,999 entries omitted here: max_section_chars=1,000" in markers[0]
    )


def test_entries_are_rendered_lazily():
    rendered: list[int] = []

    def render(i: int) -> str:
        rendered.append(i)
        return "x" * 50

    fit_entries(range(100_000), render, 2_000)
    assert len(rendered) < 200


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=400), max_size=300),
    st.integers(min_value=100, max_value=5_000),
    st.sets(st.integers(min_value=0, max_value=299), max_size=20),
)
def test_fitted_sections_never_exceed_the_limit(lengths, limit, special):
    entries = [(i, "e" * n) for i, n in enumerate(lengths)]
    text, omitted = fit_entries(entries, lambda e: e[1], limit, priority=lambda e: e[0] in special)
    assert len(text) <= limit
    if not entries:
        assert (text, omitted) == ("", 0)
        return
    lines = text.split("\n")
    said = [re.match(r"\.\.\. \(([\d,]+) of", line) for line in lines]
    assert sum(int(m.group(1).replace(",", "")) for m in said if m) == omitted
    assert sum(1 for m in said if not m) == len(entries) - omitted


def test_a_single_entry_larger_than_the_budget_is_cut_not_dropped():
    text, omitted = fit_entries(["y" * 5_000], str, 500)
    assert omitted == 0 and len(text) <= 500 and text.startswith("yyy")


def _large_graph(nodes: int = NODES):
    prompt = trace.node("Be brief. " * 20, name="prompt", trainable=True, description="style")
    x = prompt
    for _ in range(nodes):
        x = x + "a"  # every intermediate value is a longer string
    return prompt, x


def _user_prompt(optimizer_cls, caplog, **options):
    prompt, out = _large_graph()
    llm = ScriptedLLM(default=json.dumps({"reasoning": "", "suggestion": {}}))
    optimizer = optimizer_cls([prompt], llm=llm, **options)
    optimizer.zero_feedback()
    optimizer.backward(out, "The answer is far too long.")
    with caplog.at_level(logging.WARNING, logger="opto.optimizers.prompt_budget"):
        optimizer.step()
    messages = llm.requests[-1].messages
    return prompt, messages[0]["content"], messages[1]["content"]


@pytest.mark.parametrize("optimizer_cls", [OptoPrime, OptoPrimeV2])
def test_large_graph_prompt_respects_the_default_budget(optimizer_cls, caplog):
    prompt, _system, user = _user_prompt(optimizer_cls, caplog)
    # Five budgeted sections at most, plus the fixed parts; unbudgeted it is ~6 MB.
    assert len(user) < 5 * DEFAULT_MAX_SECTION_CHARS + 10_000
    assert prompt.data in user  # the variable is shown whole...
    assert "The answer is far too long." in user  # ...and so is the feedback
    assert "entries omitted here" in user and "max_section_chars" in user
    assert f"x={prompt.py_name}" in user  # the code line that uses the variable is kept
    warnings = [r for r in caplog.records if "max_section_chars" in r.getMessage()]
    assert len(warnings) == 1, "one warning per step, naming what was left out"
    assert "code entries" in warnings[0].getMessage()


def test_no_limit_keeps_the_whole_graph(caplog):
    _, _, user = _user_prompt(OptoPrime, caplog, max_section_chars=None, max_value_chars=20)
    assert "entries omitted" not in user
    assert user.count(" = concat(") == NODES
    assert not caplog.records


@pytest.mark.parametrize("bad", [0, 10, -1, 1.5, "big", True])
def test_max_section_chars_is_validated(bad):
    with pytest.raises(ValueError, match="max_section_chars must be None"):
        OptoPrime([trace.node(1, trainable=True)], llm=ScriptedLLM(), max_section_chars=bad)
