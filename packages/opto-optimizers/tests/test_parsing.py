"""Tolerant parsing of JSON suggestion replies (the reference's observed outcomes, fixed)."""

from __future__ import annotations

import json
import pickle

import pytest
from opto.optimizers.parsing import (
    ParsedReply,
    SuggestionParseError,
    is_terminate,
    iter_json_objects,
    load_json_like,
    parse_suggestion_reply,
)


def suggestion(text: str) -> dict:
    return parse_suggestion_reply(text).suggestion


# --- the reply shapes of optimizers.md §3.7 ------------------------------------------------


def test_plain_json():
    reply = parse_suggestion_reply(
        '{"reasoning": "why", "answer": "42", "suggestion": {"x0": 5, "y0": "text"}}'
    )
    assert reply == ParsedReply(
        raw=reply.raw, suggestion={"x0": 5, "y0": "text"}, reasoning="why", answer="42"
    )


def test_fenced_json_with_language_tag():
    assert suggestion('Here:\n```json\n{"suggestion": {"a": 1}}\n```\nDone.') == {"a": 1}


def test_prose_around_json():
    assert suggestion('I think so. {"suggestion": {"a": [1, 2]}} Hope it helps.') == {"a": [1, 2]}


def test_trailing_commas_keep_value_types():
    # the reference's regex rescue turned 7 into '7'
    assert suggestion('{"suggestion": {"a": 7, "b": [1, 2,],},}') == {"a": 7, "b": [1, 2]}


def test_single_quoted_pseudo_json_and_python_literals():
    # the reference returned {} here
    assert suggestion("{'suggestion': {'a': 'x', 'b': True, 'c': None}}") == {
        "a": "x",
        "b": True,
        "c": None,
    }


def test_json_literals_with_trailing_comma_take_the_literal_path():
    assert suggestion('{"suggestion": {"a": true, "b": null, "c": -2.5,}}') == {
        "a": True,
        "b": None,
        "c": -2.5,
    }


def test_json_without_suggestion_key_is_the_suggestion_minus_reasoning_and_answer():
    reply = parse_suggestion_reply('{"reasoning": "r", "answer": "a", "x0": 3}')
    assert reply.suggestion == {"x0": 3} and reply.reasoning == "r" and reply.answer == "a"


def test_code_with_raw_newlines_and_braces_inside_the_string():
    # the reference's rescue regex stopped at the inner "}" and returned {}
    text = '{"suggestion": {"__code0": "def f(x):\n    return {1: x}\n"}}'
    assert suggestion(text) == {"__code0": "def f(x):\n    return {1: x}\n"}


def test_two_objects_the_one_with_the_suggestion_wins():
    text = 'First {"note": 1} then {"reasoning": "r", "suggestion": {"a": 2}}'
    assert suggestion(text) == {"a": 2}


def test_keys_are_stripped_and_blank_code_dropped():
    text = '{" suggestion ": {" a ": 1, "__code0": "  ", "__code1": null}}'
    assert suggestion(text) == {"a": 1}


def test_suggestion_given_as_a_json_string_is_decoded():
    assert suggestion('{"suggestion": "{\\"a\\": 1}"}') == {"a": 1}


def test_empty_or_null_suggestion_means_no_change():
    assert suggestion('{"suggestion": {}}') == {}
    assert suggestion('{"suggestion": null}') == {}
    assert suggestion('{"suggestion": ""}') == {}


def test_non_object_suggestion_is_an_error_with_the_raw_reply():
    text = '{"suggestion": [1, 2]}'
    with pytest.raises(SuggestionParseError, match="must be an object") as info:
        parse_suggestion_reply(text)
    assert info.value.raw == text


@pytest.mark.parametrize("text", ["", "no json here", "{broken", "[1, 2]", "{'a': f(x)}"])
def test_unparsable_replies_raise_suggestion_parse_error(text):
    with pytest.raises(SuggestionParseError) as info:
        parse_suggestion_reply(text)
    assert info.value.raw == text
    assert isinstance(info.value, ValueError)


def test_non_text_reply_raises_suggestion_parse_error():
    with pytest.raises(SuggestionParseError, match="must be text"):
        parse_suggestion_reply(None)  # type: ignore[arg-type]


def test_custom_keys_and_no_answer_key():
    text = '{"why": "r", "answer": "kept", "change": {"a": 1}}'
    reply = parse_suggestion_reply(
        text, reasoning_key="why", answer_key=None, suggestion_key="change"
    )
    assert reply.suggestion == {"a": 1} and reply.reasoning == "r"
    assert reply.answer is None


def test_non_string_reasoning_is_rendered_as_json():
    assert parse_suggestion_reply('{"reasoning": ["a", 1], "suggestion": {}}').reasoning == (
        '["a", 1]'
    )


def test_suggestion_parse_error_pickles_with_its_raw_reply():
    error = pickle.loads(pickle.dumps(SuggestionParseError("bad", raw="the reply")))
    assert str(error) == "bad" and error.raw == "the reply"


# --- TERMINATE -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["TERMINATE", "  TERMINATE\n", "TERMINATE.", "`TERMINATE`", '"TERMINATE"',
             "```\nTERMINATE\n```", "```text\nTERMINATE\n```"],
)  # fmt: skip
def test_terminate_only_as_the_whole_reply(text):
    assert is_terminate(text)
    reply = parse_suggestion_reply(text)
    assert reply.terminate and reply.suggestion == {}


@pytest.mark.parametrize(
    "text", ["Do not TERMINATE yet", "TERMINATE now", "terminate", "TERMINATED", ""]
)
def test_terminate_inside_text_does_not_count(text):
    assert not is_terminate(text)


def test_terminate_in_the_reasoning_keeps_the_suggestion():
    # reference bug B2: the substring discarded a valid suggestion
    reply = parse_suggestion_reply('{"reasoning": "no need to TERMINATE", "suggestion": {"a": 3}}')
    assert not reply.terminate and reply.suggestion == {"a": 3}


# --- helpers -----------------------------------------------------------------------------


def test_load_json_like_accepts_json_python_and_repairs():
    assert load_json_like('{"a": 1}') == {"a": 1}
    assert load_json_like("{'a': (1, 2)}") == {"a": (1, 2)}
    assert load_json_like("[1, 2,]") == [1, 2]
    assert load_json_like('"line\nbreak"') == "line\nbreak"
    assert load_json_like("-3") == -3
    for bad in ["", "x", "{**a}", "1 + 2", "b'x'", "{[1]: 2}", "...", "-'a'", "\x00"]:
        with pytest.raises(ValueError):
            load_json_like(bad)


def test_iter_json_objects_finds_every_object_once():
    found = list(iter_json_objects('a {"x": 1} b {"y": {"z": 2}} c'))
    assert {"x": 1} in found and {"y": {"z": 2}} in found
    assert list(iter_json_objects("no objects")) == []


def test_braces_inside_strings_do_not_split_objects():
    text = 'pre {"a": "}{", "b": \'{\'} post'
    assert {"a": "}{", "b": "{"} in list(iter_json_objects(text))


# --- replies cut off at max_tokens ------------------------------------------------------------


def test_a_reply_cut_after_the_suggestion_keeps_the_complete_members():
    text = '{"reasoning": "r", "suggestion": {"x0": 2}, "answer": "The output is 5; it sh'
    reply = parse_suggestion_reply(text)
    assert reply.suggestion == {"x0": 2} and reply.reasoning == "r"
    assert parse_suggestion_reply('{"reasoning": "r", "suggestion": {"x0": 2}').suggestion == {
        "x0": 2
    }


@pytest.mark.parametrize(
    "text",
    [
        '{"reasoning": "a long thought that never en',
        '{"suggestion": {"x0": [1, 2',
        '{"reasoning": "r", "suggestion": {"x0": 2',
        '{"reasoning": "r", "suggestion": {"__code0": "", "x0": 3',
    ],
)
def test_a_reply_cut_before_any_complete_value_is_an_error_never_half_a_value(text):
    with pytest.raises(SuggestionParseError, match="cut off") as info:
        parse_suggestion_reply(text)
    assert info.value.raw == text


@pytest.mark.parametrize(
    ("text", "suggestion", "cut_off"),
    [
        # the value being written is dropped, whatever its type
        ('{"reasoning": "r", "suggestion": {"x0": 2, "y0": "half a val', {"x0": 2}, "y0"),
        ('{"reasoning": "r", "suggestion": {"x0": 2, "y0": [1, 2', {"x0": 2}, "y0"),
        ('{"reasoning": "r", "suggestion": {"x0": 2, "y0": "a\\"', {"x0": 2}, "y0"),
        # a number at the very end may be cut ("14" of "145"): dropped
        ('{"reasoning": "r", "suggestion": {"x0": 2, "y0": 14', {"x0": 2}, "y0"),
        # a closed string, list or object at the end is complete
        ('{"reasoning": "r", "suggestion": {"x0": 2, "y0": "done"', {"x0": 2, "y0": "done"}, ""),
        ('{"reasoning": "r", "suggestion": {"x0": 2, "y0": [1]  ', {"x0": 2, "y0": [1]}, ""),
        # cut inside the next name: no name known
        ('{"reasoning": "r", "suggestion": {"x0": 2, "y', {"x0": 2}, ""),
        # prose with braces before a fenced, cut reply; single quotes
        (
            'Sure {x}.\n```json\n{"reasoning": "r, {", "answer": "", "suggestion": '
            '{"x0": [1, 2], "d0": {"a": 1}, "__code0": "def f(x):\\n    return',
            {"x0": [1, 2], "d0": {"a": 1}},
            "__code0",
        ),
        ("{'reasoning': 'r', 'suggestion': {'x0': True, 'y0': 'ha", {"x0": True}, "y0"),
    ],
)
def test_a_reply_cut_inside_the_suggestion_keeps_the_completely_written_values(
    text, suggestion, cut_off
):
    reply = parse_suggestion_reply(text)
    assert reply.suggestion == suggestion
    assert reply.cut_off == cut_off
    assert reply.reasoning.startswith("r")


def test_a_complete_reply_has_no_cut_off():
    assert parse_suggestion_reply('{"reasoning": "r", "suggestion": {"x0": 2}}').cut_off is None
    assert parse_suggestion_reply('{"reasoning": "r", "suggestion": {"x0": 2}').cut_off is None


def test_surrogate_pair_escapes_decode_to_one_character_when_python_literal_parsing_is_used():
    # The trailing "#" makes the text invalid JSON but a valid Python expression (a comment).
    body = json.dumps({"reasoning": "", "suggestion": {"A": ["\U00010000"], "B": "\ud800"}})
    assert "\\ud800\\udc00" in body
    reply = parse_suggestion_reply(f"\n{body}\n#")
    assert reply.suggestion == {"A": ["\U00010000"], "B": "\ud800"}
