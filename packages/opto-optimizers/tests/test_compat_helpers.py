"""Helpers and reply shapes that trace-opt code and tests rely on."""

import logging

import pytest
from opto import trace
from opto.optimizers import OptoPrime, optoprime_v2
from opto.optimizers import utils as optimizer_utils
from opto.optimizers.utils import extract_xml_like_data, print_color
from opto.utils.testing import ScriptedLLM


def test_print_color_prints_in_colour_and_logs(capsys, caplog):
    print_color("hello", "green")
    print_color("plain", "orange")  # unknown colours print without codes
    print_color(42)
    assert capsys.readouterr().out == "\033[92mhello\033[0m\nplain\n42\n"

    class TextLogger:
        def __init__(self):
            self.lines = []

        def log(self, message):
            self.lines.append(message)

    sink = TextLogger()
    print_color("to both", "red", logger=sink)
    assert sink.lines == ["to both"]
    with caplog.at_level(logging.INFO, logger="opto.test"):
        print_color("to logging", logger=logging.getLogger("opto.test"))
    assert "to logging" in caplog.text


def test_xml_helpers_are_importable_from_utils():
    for name in ("extract_xml_like_data", "extract_top_level_blocks",
                 "extract_first_top_level_block", "extract_reasoning_and_remainder"):  # fmt: skip
        assert getattr(optimizer_utils, name) is getattr(optoprime_v2, name)
    with pytest.raises(AttributeError):
        optimizer_utils.no_such_helper


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('```json\n{"reasoning": "r", "suggestion": {"int0": "7"}}\n```', {"int0": "7"}),
        ('First {"suggestion": {"int0": 3}} then more prose', {"int0": 3}),
        ('{"suggestion": {"int0": "4",}}', {"int0": "4"}),
        ('{"reasoning": "no suggestion key", "int0": 5}', {"int0": 5}),
        ('{"reasoning": "r", "suggestion": "set it", "int0": 6}', {"int0": 6}),
        ('{"suggestion": {"int0": 1, "__code1": "  "}}', {"int0": 1}),
        ("no json at all", {}),
    ],
)
def test_optoprime_accepts_the_reference_suggestion_shapes(reply, expected):
    x = trace.node(1, trainable=True, name="int")
    optimizer = OptoPrime([x], llm=ScriptedLLM([""]))
    assert optimizer.extract_llm_suggestion(reply) == expected


@pytest.mark.parametrize(
    ("text", "variables", "reasoning"),
    [
        ("<reasoning>r</reasoning><variable><name>a</name><value>1</value></variable>",
         {"a": "1"}, "r"),
        # an unclosed reasoning runs up to the next tag; the answer after it is still read
        ("<reasoning>never closed <variable><name>a</name><value>1</value></variable>",
         {"a": "1"}, "never closed"),
        ("<variable><name>a</name></variable>", {}, ""),
        ("<variable><value>1</value></variable>", {}, ""),
        ("<variable><name>  </name><value>1</value></variable>", {}, ""),
        ("<variable><name>a</name><value></value></variable>", {"a": ""}, ""),
        ("<variable><name>a</name><value>1</value></variable>"
         "<variable><name>a</name><value>2</value></variable>", {"a": "2"}, ""),
        ("noise <variable>\n <name> b </name>\n <value>\n x \n</value>\n</variable> tail",
         {"b": "x"}, ""),
        ("<variable><name>a</name><value><value>in</value></value></variable>",
         {"a": "<value>in</value>"}, ""),
        ("<variable><name>__code0</name><value>   </value></variable>", {}, ""),
        ("<reasoning></reasoning>", {}, ""),
        ("plain text", {}, ""),
    ],
)  # fmt: skip
def test_xml_like_data_on_malformed_replies(text, variables, reasoning):
    result = extract_xml_like_data(text)
    assert result == {"reasoning": reasoning, "variables": variables}
