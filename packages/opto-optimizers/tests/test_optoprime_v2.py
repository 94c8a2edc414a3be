"""OptoPrimeV2: XML-style prompt sections and options, tolerant parsing, reference bugs
(B7, B16) pinned fixed, and an end-to-end loop driven by a prompt-reading scripted LLM."""

import json
import re

import attrs
import pytest
from opto import trace
from opto.optimizers import OptoPrimeV2
from opto.optimizers.optoprime_v2 import (
    OptimizerPromptSymbolSet,
    OptimizerPromptSymbolSet2,
    OptimizerPromptSymbolSetJSON,
    extract_xml_like_data,
)
from opto.optimizers.parsing import SuggestionParseError
from opto.trace.testing import one_step
from opto.utils.testing import ScriptedLLM


def xml_reply(reasoning="because", **values):
    blocks = "".join(
        f"<variable><name>{k}</name><value>{v}</value></variable>" for k, v in values.items()
    )
    return f"<reasoning>{reasoning}</reasoning>\n{blocks}"


def program(value=3, description="an int"):
    x = trace.node(value, trainable=True, description=description)
    return x, x + trace.node(1)


def stepped(optimizer, out, feedback="make it larger"):
    return one_step(optimizer, out, feedback)


def test_prompt_has_the_xml_sections_and_the_suggestion_question():
    x, out = program()
    llm = ScriptedLLM([xml_reply(**{x.py_name: "5"})])
    optimizer = OptoPrimeV2([x], llm=llm)
    stepped(optimizer, out)
    system, user = (m["content"] for m in llm.requests[0].messages)
    for title in (
        "# Instruction",
        "# Code",
        "# Documentation",
        "# Variables",
        "# Inputs",
        "# Others",
        "# Outputs",
        "# Feedback",
    ):
        assert f"\n{title}\n" in f"\n{user}"
    assert "# Constraints" not in user and "#Constraints" not in system
    assert f'<variable name="{x.py_name}" type="int">\n<value>\n3\n</value>' in user
    assert "<constraint>\nan int\n</constraint>" in user
    assert "make it larger" in user
    assert user.rstrip().endswith(
        f"What are your suggestions on variables {x.py_name}?\n\nYour response:"
    )
    assert "XML/HTML format" in system and "TERMINATE" in system
    assert "#Variables" in system and "(fixed)" in system
    options = llm.requests[0].options
    assert options["max_tokens"] == 8192
    assert "response_format" not in options


def test_long_inputs_are_truncated_but_variables_never():
    x = trace.node("v" * 300, trainable=True)
    y = trace.node("i" * 300)
    out = x + y
    llm = ScriptedLLM([xml_reply(**{x.py_name: "w"})])
    optimizer = OptoPrimeV2([x], llm=llm, initial_var_char_limit=50)
    stepped(optimizer, out)
    user = llm.requests[0].last
    assert "v" * 300 in user
    assert "i" * 50 + "...(skipped due to length limit)" in user
    assert "i" * 51 not in user
    assert optimizer.initial_var_char_limit == 50


def test_custom_truncation_function_is_used():
    x = trace.node("a", trainable=True)
    out = x + trace.node("long input")
    llm = ScriptedLLM([xml_reply(**{x.py_name: "b"})])
    optimizer = OptoPrimeV2([x], llm=llm, truncate_expression=lambda v, n: "<cut>")
    stepped(optimizer, out)
    assert "<value>\n<cut>\n</value>" in llm.requests[0].last
    assert x.data == "b"


def test_values_are_converted_to_the_parameter_type():  # B16: '2' == 2 failed upstream
    x, out = program()
    optimizer = OptoPrimeV2([x], llm=ScriptedLLM([xml_reply(**{x.py_name: " 7 "})]))
    update = stepped(optimizer, out)
    assert update == {x: 7} and x.data == 7 and isinstance(x.data, int)
    assert optimizer.last_step.applied == {x.py_name: 7}
    assert optimizer.last_step.reasoning == "because"


def test_a_lossy_value_is_rejected_with_a_reason():
    x, out = program()
    optimizer = OptoPrimeV2([x], llm=ScriptedLLM([xml_reply(**{x.py_name: "3.9"})]))
    assert stepped(optimizer, out) == {}
    assert x.data == 3
    assert "not an integer" in optimizer.last_step.rejected[x.py_name]


def test_given_llm_is_used_without_building_a_default(monkeypatch):  # B7
    import opto.utils.llm

    def refuse(*args, **kwargs):
        raise AssertionError("a default LLM was built although llm= was given")

    monkeypatch.setattr(opto.utils.llm, "LLM", refuse, raising=False)
    x, _ = program()
    llm = ScriptedLLM([])
    assert OptoPrimeV2([x], llm=llm).llm is llm


def test_changed_code_is_shown_once_without_a_duplicated_header():  # B7
    @trace.bundle(trainable=True)
    def scale(a):
        """Scale a."""
        return a * 2

    code = scale.parameter
    new = "def scale(a: int):\n    return a * 3\n"
    code._set(new)
    out = scale(trace.node(2))
    llm = ScriptedLLM([xml_reply(**{code.py_name: "def scale(a: int):\n    return a * 4"})])
    optimizer = OptoPrimeV2([code], llm=llm)
    stepped(optimizer, out)
    user = llm.requests[0].last
    shown = re.search(
        r'<variable name="__code\d+" type="code">\n<value>\n(.*?)\n</value>', user, re.S
    )
    assert shown.group(1) == new.rstrip("\n")
    assert user.count("def scale(a: int)") == 1
    assert code.data == "def scale(a: int):\n    return a * 4\n"


def test_memory_rounds_keep_code_indentation():  # B7: memory dedented code
    @trace.bundle(trainable=True)
    def body(a):
        if a:
            return a + 1
        return 0

    code = body.parameter
    replies = [
        xml_reply(**{code.py_name: "def body(a):\n    if a:\n        return a + 2\n    return 0"}),
        "TERMINATE",
    ]
    llm = ScriptedLLM(replies)
    optimizer = OptoPrimeV2([code], llm=llm, memory_size=3)
    stepped(optimizer, body(trace.node(1)))
    stepped(optimizer, body(trace.node(1)), "still wrong")
    user = llm.requests[1].last
    round1 = re.search(r"<round 1>\n(.*?)</round 1>", user, re.S).group(1)
    assert "    if a:\n        return a + 1" in round1
    assert "<feedback>\nmake it larger\n</feedback>" in round1
    assert optimizer.last_step.terminated


@pytest.mark.parametrize("mask", [["# Code"], ["#Code"], ["code"]])
def test_mask_blanks_the_named_section(mask):  # B7: wrong mask titles
    x, out = program()
    llm = ScriptedLLM([xml_reply(**{x.py_name: "4"})])
    optimizer = OptoPrimeV2([x], llm=llm)
    one_step(optimizer, out, "fb", mask=mask)
    user = llm.requests[0].last
    assert "# Code\n\n\n# Documentation" in user
    assert "# Inputs\n<node" in user


def test_unparsable_reply_is_counted_and_logged(caplog):  # B7: "cannot extract" never fired
    x, out = program()
    optimizer = OptoPrimeV2([x], llm=ScriptedLLM(["I would change x to 5."]))
    assert stepped(optimizer, out) == {}
    assert optimizer.parse_failures == 1
    assert "no complete <variable> block" in optimizer.last_step.parse_error
    assert "could not parse" in caplog.text
    assert x.data == 3


def test_strict_extraction_raises_the_documented_error():
    x, out = program()
    optimizer = OptoPrimeV2(
        [x], llm=ScriptedLLM(["<reasoning>hm</reasoning>"]), ignore_extraction_error=False
    )
    with pytest.raises(SuggestionParseError) as info:
        stepped(optimizer, out)
    assert info.value.raw == "<reasoning>hm</reasoning>"


def test_terminate_only_when_it_is_the_whole_reply():
    x, out = program()
    reply = xml_reply("I will not TERMINATE yet", **{x.py_name: "6"})
    optimizer = OptoPrimeV2([x], llm=ScriptedLLM([reply, " TERMINATE\n"]))
    assert stepped(optimizer, out) == {x: 6}
    assert stepped(optimizer, x + 1) == {}
    assert optimizer.last_step.terminated and x.data == 6


def test_symbol_set_2_renames_tags_in_prompt_and_parsing():
    x, out = program()
    reply = f"<reason>r</reason><var><name>{x.py_name}</name><data>8</data></var>"
    llm = ScriptedLLM([reply])
    optimizer = OptoPrimeV2([x], llm=llm, optimizer_prompt_symbol_set=OptimizerPromptSymbolSet2())
    stepped(optimizer, out)
    system, user = (m["content"] for m in llm.requests[0].messages)
    assert f'<var name="{x.py_name}" type="int">\n<data>\n3\n</data>' in user
    assert "<const name=" in user
    assert "<reason>" in system and "<var>" in system
    assert x.data == 8


def test_custom_titles_and_tags_via_evolve():
    symbols = attrs.evolve(
        OptimizerPromptSymbolSet(), variables_section_title="# Knobs", variable_tag="knob"
    )
    x, out = program()
    llm = ScriptedLLM([xml_reply(**{x.py_name: "4"})])
    stepped(OptoPrimeV2([x], llm=llm, optimizer_prompt_symbol_set=symbols), out)
    system, user = (m["content"] for m in llm.requests[0].messages)
    assert "\n# Knobs\n<knob name=" in user
    assert "#Knobs" in system and "#Variables" not in system


def test_json_symbol_set_asks_for_json_and_parses_it():  # B7: said XML, showed {{
    x, out = program()
    reply = json.dumps({"reasoning": "r", "suggestion": {x.py_name: 11}})
    llm = ScriptedLLM([reply])
    optimizer = OptoPrimeV2(
        [x], llm=llm, optimizer_prompt_symbol_set=OptimizerPromptSymbolSetJSON()
    )
    stepped(optimizer, out)
    system = llm.requests[0].messages[0]["content"]
    assert "XML/HTML" not in system and "{{" not in system and "JSON" in system
    schema = llm.requests[0].options["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]["suggestion"]["properties"]) == [x.py_name]
    assert x.data == 11


def test_json_set_without_json_object_format_sends_no_response_format():
    x, out = program()
    llm = ScriptedLLM([json.dumps({"suggestion": {x.py_name: 2}})])
    optimizer = OptoPrimeV2(
        [x],
        llm=llm,
        optimizer_prompt_symbol_set=OptimizerPromptSymbolSetJSON(),
        use_json_object_format=False,
    )
    stepped(optimizer, out)
    assert "response_format" not in llm.requests[0].options and x.data == 2


def test_example_and_memory_keep_the_current_problem():  # B17 does not affect V2
    x, out = program()
    llm = ScriptedLLM([xml_reply(**{x.py_name: "4"}), xml_reply(**{x.py_name: "5"})])
    optimizer = OptoPrimeV2([x], llm=llm, include_example=True, memory_size=2)
    stepped(optimizer, out, "first feedback")
    stepped(optimizer, x + 1, "second feedback")
    user = llm.requests[1].last
    assert "Here is an example" in user and "<reasoning>\nz = a + b - c" in user
    assert "Now you see problem instance" in user and "second feedback" in user
    assert "<round 1>" in user and "first feedback" in user


def test_extract_llm_suggestion_reference_api():
    x, _ = program()
    optimizer = OptoPrimeV2([x], llm=ScriptedLLM([]))
    reply = xml_reply("why", a="1", b="two")
    assert optimizer.extract_llm_suggestion(reply) == {"a": "1", "b": "two"}
    assert optimizer.extract_llm_suggestion(reply, return_only_suggestion=False) == {
        "reasoning": "why",
        "variables": {"a": "1", "b": "two"},
    }
    assert optimizer.extract_llm_suggestion("garbage") == {}
    with pytest.raises(SuggestionParseError):
        optimizer.extract_llm_suggestion("garbage", ignore_extraction_error=False)


def test_state_dict_is_json_and_round_trips(tmp_path):
    x, out = program()
    optimizer = OptoPrimeV2([x], llm=ScriptedLLM([xml_reply(**{x.py_name: "4"})]), memory_size=2)
    stepped(optimizer, out)
    path = optimizer.save(tmp_path / "v2.json")
    fresh = OptoPrimeV2([x], llm=ScriptedLLM([]), memory_size=2)
    fresh.load(path)
    assert fresh.state_dict() == json.loads(json.dumps(optimizer.state_dict()))
    assert fresh.step_count == 1 and len(fresh.memory) == 1


def test_symbol_set_must_be_a_symbol_set():
    x, _ = program()
    with pytest.raises(TypeError, match="OptimizerPromptSymbolSet"):
        OptoPrimeV2([x], llm=ScriptedLLM([]), optimizer_prompt_symbol_set={"node_tag": "n"})


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reasoning", "variables"),
    [
        (xml_reply("r", a="1"), "r", {"a": "1"}),
        (
            "noise <reasoning> r </reasoning> x <variable><name> a </name><value> 1 </value>"
            "</variable> trailing",
            "r",
            {"a": "1"},
        ),
        (
            "<variable><name>a</name><value><value>in</value></value></variable>",
            "",
            {"a": "<value>in</value>"},
        ),
        (
            "<variable><name>a</name><value>x<variable>y</variable></value></variable>",
            "",
            {"a": "x<variable>y</variable>"},
        ),
        ("<variable><name>a</name></variable><variable><value>1</value></variable>", "", {}),
        ("<variable><name> </name><value>1</value></variable>", "", {}),
        (
            "<variable><name>a</name><value>1</value></variable>"
            "<variable><name>a</name><value>2</value></variable>",
            "",
            {"a": "2"},
        ),
        (
            "<reasoning>unclosed <variable><name>a</name><value>3</value></variable>",
            "unclosed",
            {"a": "3"},
        ),
        ('<variable name="a" type="int"><value>4</value></variable>', "", {"a": "4"}),
        ("<VARIABLE><NAME>a</NAME><VALUE>5</VALUE></VARIABLE>", "", {"a": "5"}),
        ("<variable><name>__code0</name><value>  </value></variable>", "", {}),
        ("<variable><name>a</name><value></value></variable>", "", {"a": ""}),
        ("</variable><variable><name>a</name><value>1</value>", "", {}),
        ("", "", {}),
    ],
)
def test_extract_xml_like_data_cases(text, reasoning, variables):
    assert extract_xml_like_data(text) == {"reasoning": reasoning, "variables": variables}


def test_reasoning_tags_inside_reasoning_do_not_leak_variables():
    text = (
        "<reasoning>the old <variable><name>a</name><value>0</value></variable></reasoning>"
        "<variable><name>b</name><value>1</value></variable>"
    )
    assert extract_xml_like_data(text)["variables"] == {"b": "1"}


# --- end to end ---------------------------------------------------------------------------


def test_loop_drives_a_program_to_its_target():
    """The scripted LLM reads the variable and the feedback from the prompt, like a model."""

    def reader(messages, **options):
        user = messages[-1]["content"]
        name, value = re.search(
            r'<variable name="(\w+)" type="int">\n<value>\n(-?\d+)\n</value>', user
        ).groups()
        feedback = user.split("# Feedback\n", 1)[1].split("\n", 1)[0]
        low, high = (int(v) for v in re.search(r"range \[(-?\d+), (-?\d+)\]", feedback).groups())
        if "too small" in feedback:
            low = int(value) + 1
        elif "too large" in feedback:
            high = int(value) - 1
        else:
            return "TERMINATE"
        return xml_reply(f"search in [{low}, {high}]", **{name: str((low + high) // 2)})

    x = trace.node(0, trainable=True, description="an integer to find")
    optimizer = OptoPrimeV2([x], llm=ScriptedLLM(reader))
    target, low, high = 37, -100, 100
    for _ in range(12):
        out = x * 3
        if out.data == target * 3:
            break
        verdict = "too small" if out.data < target * 3 else "too large"
        if verdict == "too small":
            low = x.data + 1
        else:
            high = x.data - 1
        stepped(
            optimizer, out, f"{verdict}: the output should be {target * 3}; range [{low}, {high}]"
        )
    assert x.data == target
    assert all(record.parse_error is None for record in optimizer.steps)


@pytest.mark.parametrize("option", ["prompt_symbols", "max_value_chars", "highlight_variables"])
def test_options_fixed_by_v2_are_refused_with_a_hint(option):
    x, _ = program()
    with pytest.raises(TypeError, match="optimizer_prompt_symbol_set"):
        OptoPrimeV2([x], llm=ScriptedLLM([]), **{option: None})


def test_prompt_budget_shortens_inputs():
    x = trace.node("a", trainable=True)
    out = x + trace.node("i" * 3000)
    llm = ScriptedLLM([xml_reply(**{x.py_name: "b"})])
    optimizer = OptoPrimeV2([x], llm=llm, max_prompt_tokens=700)
    stepped(optimizer, out)
    assert "i" * 2000 not in llm.requests[0].last
    assert "...(skipped due to length limit)" in llm.requests[0].last


def test_custom_output_format_via_a_symbol_set_subclass():
    @attrs.frozen(kw_only=True)
    class LineFormat(OptimizerPromptSymbolSet):
        custom_output_format_instruction: str = "Reply with lines NAME := VALUE."

        def output_response_extractor(self, reply):
            pairs = re.findall(r"^(\w+) := (.*)$", reply, re.M)
            return {"reasoning": "", "variables": dict(pairs)}

        def example_output(self, reasoning, variables):
            return "\n".join(f"{k} := {v}" for k, v in variables.items())

    x, out = program()
    llm = ScriptedLLM([f"{x.py_name} := 12"])
    optimizer = OptoPrimeV2([x], llm=llm, optimizer_prompt_symbol_set=LineFormat())
    assert stepped(optimizer, out) == {x: 12}
    assert llm.requests[0].messages[0]["content"].endswith("Reply with lines NAME := VALUE.")


@pytest.mark.parametrize(
    ("tail", "cut"),
    [
        ("<variable><name>{f}</name><value>0.", "{f}"),
        ("<variable><name>{f}</name><value>0.7</value>", "{f}"),
        ("<variable><na", "<the value after the last complete one>"),
    ],
)
def test_a_reply_cut_off_in_a_variable_block_applies_the_complete_ones_and_records_the_cut(
    tail, cut
):
    k = trace.node(2, name="k", trainable=True)
    f = trace.node(0.5, name="f", trainable=True)
    cut = cut.format(f=f.py_name)
    reply = (
        f"<reasoning>r</reasoning><variable><name>{k.py_name}</name><value>4</value></variable>"
        + tail.format(f=f.py_name)
    )
    optimizer = OptoPrimeV2([k, f], llm=ScriptedLLM([reply]))
    optimizer.backward(k * f, "bigger")
    assert optimizer.step() == {k: 4}
    assert f.data == 0.5
    assert list(optimizer.last_step.rejected) == [cut]
    assert "cut off" in optimizer.last_step.rejected[cut]


def test_a_complete_xml_reply_rejects_nothing():
    k = trace.node(2, name="k", trainable=True)
    reply = f"<reasoning>r</reasoning><variable><name>{k.py_name}</name><value>4</value></variable>"
    optimizer = OptoPrimeV2([k], llm=ScriptedLLM([reply]))
    optimizer.backward(k * 2, "bigger")
    assert optimizer.step() == {k: 4} and optimizer.last_step.rejected == {}
