"""Hypothesis fuzzing of OptoPrimeV2's reply parsers: they never raise on text (except the
documented SuggestionParseError from ``parse_reply``), and replies written in the format
parse back to what was written."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opto import trace
from opto.optimizers import OptoPrimeV2
from opto.optimizers.optoprime_v2 import (
    OptimizerPromptSymbolSet,
    OptimizerPromptSymbolSet2,
    extract_reasoning_and_remainder,
    extract_top_level_blocks,
    extract_xml_like_data,
)
from opto.optimizers.parsing import SuggestionParseError
from opto.utils.testing import ScriptedLLM

TAGGY = st.lists(
    st.sampled_from(
        [
            "<",
            ">",
            "/",
            " ",
            "\n",
            "=",
            '"',
            "a",
            "x",
            "1",
            "variable",
            "name",
            "value",
            "reasoning",
            "<variable>",
            "</variable>",
            "<name>",
            "</name>",
            "<value>",
            "</value>",
            "<reasoning>",
            "</reasoning>",
            "TERMINATE",
            "é",
        ]
    ),
    max_size=40,
).map("".join)
ANY_TEXT = st.one_of(st.text(max_size=200), TAGGY)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
VALUES = st.text(
    alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=40
)


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT)
def test_extractors_never_raise_on_text(text):
    data = extract_xml_like_data(text)
    assert isinstance(data["reasoning"], str)
    assert all(isinstance(k, str) and k for k in data["variables"])
    assert all(isinstance(v, str) for v in data["variables"].values())
    assert isinstance(extract_top_level_blocks(text, "variable"), list)
    reasoning, rest = extract_reasoning_and_remainder(text)
    assert isinstance(reasoning, str) and isinstance(rest, str)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([OptimizerPromptSymbolSet(), OptimizerPromptSymbolSet2()]),
    st.text(alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",))),
    st.dictionaries(NAMES, VALUES, max_size=4),
)
def test_replies_in_the_format_parse_back(symbols, reasoning, variables):
    reply = symbols.example_output(reasoning, variables)
    data = symbols.output_response_extractor(reply)
    assert data["reasoning"] == reasoning.strip()
    assert data["variables"] == {k: v.strip() for k, v in variables.items()}


@pytest.fixture(scope="module")
def optimizer():
    x = trace.node(1, trainable=True)
    return OptoPrimeV2([x], llm=ScriptedLLM([]))


@settings(max_examples=200, deadline=None)
@given(text=ANY_TEXT)
def test_parse_reply_raises_only_the_documented_error(optimizer, text):
    try:
        parsed = optimizer.parse_reply(text)
    except SuggestionParseError as error:
        assert error.raw == text
    else:
        assert parsed.terminate or parsed.suggestion
