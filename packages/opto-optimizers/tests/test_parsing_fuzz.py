"""Hypothesis fuzzing of the reply parsers: only the documented errors, and lossless
recovery of suggestions wrapped the ways LLMs wrap them."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opto.optimizers.parsing import (
    SuggestionParseError,
    is_terminate,
    iter_json_objects,
    load_json_like,
    parse_suggestion_reply,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text made of the characters that matter to the parsers, plus anything else.
json_alphabet = st.sampled_from(list("{}[]\"',:`\\\n TERMINATE0123456789.-truefalsnul#"))
jsonish_text = st.text(alphabet=json_alphabet, max_size=200) | st.text(max_size=200)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
suggestions = st.dictionaries(names, json_values, max_size=5)
prose = st.text(alphabet=st.characters(blacklist_characters="{}`"), max_size=60)


@FUZZ
@given(jsonish_text)
def test_parse_suggestion_reply_raises_only_suggestion_parse_error(text):
    try:
        reply = parse_suggestion_reply(text)
    except SuggestionParseError as error:
        assert error.raw == text
    else:
        assert isinstance(reply.suggestion, dict)
        assert all(isinstance(key, str) and key for key in reply.suggestion)
        assert isinstance(reply.reasoning, str)
        assert reply.terminate == is_terminate(text)


@FUZZ
@given(jsonish_text)
def test_load_json_like_raises_only_value_error(text):
    try:
        load_json_like(text)
    except ValueError:
        pass


@FUZZ
@given(jsonish_text)
def test_iter_json_objects_yields_only_dicts(text):
    assert all(isinstance(obj, dict) for obj in iter_json_objects(text))


def test_deep_nesting_is_a_parse_error_not_a_crash():
    for text in ["[" * 100_000, "{" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000]:
        try:
            parse_suggestion_reply(text)
        except SuggestionParseError:
            pass


@FUZZ
@given(
    suggestions,
    st.text(max_size=40),
    prose,
    prose,
    st.sampled_from(["plain", "fence", "fence_json", "indent"]),
)
def test_wrapped_suggestions_are_recovered_exactly(suggestion, reasoning, before, after, style):
    body = json.dumps(
        {"reasoning": reasoning, "suggestion": suggestion},
        indent=2 if style == "indent" else None,
    )
    if style == "fence":
        body = f"```\n{body}\n```"
    elif style == "fence_json":
        body = f"```json\n{body}\n```"
    reply = parse_suggestion_reply(f"{before}\n{body}\n{after}")
    expected = {
        key: value
        for key, value in suggestion.items()
        if not (
            "__code" in key and (value is None or (isinstance(value, str) and not value.strip()))
        )
    }
    assert reply.suggestion == expected
    assert reply.reasoning == reasoning


@FUZZ
@given(suggestions)
def test_trailing_commas_and_single_quotes_are_recovered(suggestion):
    flat = {k: v for k, v in suggestion.items() if isinstance(v, (int, str, bool)) or v is None}
    python_text = repr({"suggestion": flat})[:-1] + ",}"
    assert parse_suggestion_reply(python_text).suggestion == {
        k: v for k, v in flat.items() if not ("__code" in k and (v is None or not str(v).strip()))
    }
