"""Reply formats as pieces: any OptoPrime-family optimizer takes a JSON or XML format, the
format owns prompt section, schema, example and parser, and the optimizers count their
LLM calls through the shared helper."""

from __future__ import annotations

import json

import pytest
from opto import trace
from opto.optimizers import OPRO, OptoPrime, OptoPrimeMulti, OptoPrimeV2, TextGrad
from opto.optimizers.compact_prompt import CompactReplyFormat
from opto.optimizers.opro import OPROv2
from opto.optimizers.optoprime_v2 import OptimizerPromptSymbolSet, ProblemInstanceV2
from opto.optimizers.reply_formats import JSONReplyFormat, ReplyGuide, XMLReplyFormat
from opto.utils.llm.errors import BadRequestError
from opto.utils.testing import ScriptedLLM


def step(optimizer, out, feedback="make it larger"):
    optimizer.zero_feedback()
    optimizer.backward(out, feedback)
    return optimizer.step()


def test_optoprime_takes_an_xml_reply_format():
    x = trace.node(3, trainable=True)
    reply = (
        f"<reasoning>more</reasoning><variable><name>{x.py_name}</name><value>8</value></variable>"
    )
    llm = ScriptedLLM([reply])
    optimizer = OptoPrime([x], llm=llm, reply_format=XMLReplyFormat(OptimizerPromptSymbolSet()))
    assert step(optimizer, x + 1) == {x: 8} and x.data == 8
    system, user = (m["content"] for m in llm.requests[0].messages)
    assert "XML/HTML format" in system and '"suggestion"' not in system
    assert "#Variables" in user  # the problem keeps OptoPrime's sections
    assert "response_format" not in llm.requests[0].options  # XML has no schema


def test_a_reply_format_must_be_a_reply_format():
    x = trace.node(3, trainable=True)
    with pytest.raises(TypeError, match="reply_format must be a ReplyFormat"):
        OptoPrime([x], llm=ScriptedLLM([]), reply_format="xml")
    with pytest.raises(TypeError, match="reply_format"):
        OptoPrimeV2([x], llm=ScriptedLLM([]), reply_format=JSONReplyFormat({}))


def test_the_json_format_reads_the_optimizers_keys_at_each_use():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM([json.dumps({"reasoning": "r", "changes": {x.py_name: 9}})])
    optimizer = OptoPrime([x], llm=llm)
    optimizer.json_keys["suggestion"] = "changes"
    assert step(optimizer, x + 1) == {x: 9}
    system = llm.requests[0].messages[0]["content"]
    assert '"changes": {<variable name>' in system
    schema = llm.requests[0].options["response_format"]["json_schema"]["schema"]
    assert "changes" in schema["required"]


def test_the_json_schema_lists_non_code_values_first_and_caps_the_reasoning():
    fmt = JSONReplyFormat({"reasoning": "why", "answer": None, "suggestion": "s"})
    option = fmt.response_format({"__code0": ("def f(): ...", True), "n": (1, False)}, 50, 1000)
    schema = option["json_schema"]["schema"]
    assert list(schema["properties"]["s"]["properties"]) == ["n", "__code0"]
    assert schema["properties"]["s"]["properties"]["n"] == {"type": "integer"}
    assert schema["properties"]["why"] == {"type": "string", "maxLength": 50}
    assert "answer" not in schema["properties"]


def test_a_suggestion_only_format_asks_for_shows_and_allows_just_the_suggestion():
    keys = {"reasoning": "why", "answer": "ans", "suggestion": "s"}
    fmt = CompactReplyFormat(keys, {"n": ["2", "3"]})
    section = fmt.prompt_section(ReplyGuide(reasoning_rule="explain it", question="#Q"))
    assert '"s": {<variable name>: <new value>, ...}' in section
    assert "why" not in section and "ans" not in section and "explain it" not in section
    example = fmt.example_reply("because", {"n": "2"})
    assert json.loads(example) == {"s": {"n": "2"}}
    assert fmt.parse(example).suggestion == {"n": "2"}
    option = fmt.response_format({"n": (1, False), "m": (1.5, False)}, 100, 10)
    schema = option["json_schema"]["schema"]
    assert list(schema["properties"]) == ["s"] and schema["required"] == ["s"]
    assert schema["properties"]["s"]["properties"] == {
        "n": {"type": "string", "enum": ["2", "3"]},
        "m": {"type": "number"},
    }
    # The same keys in the full JSON format keep the reasoning and the answer.
    full = JSONReplyFormat(keys)
    assert '"why": <your reasoning>' in full.prompt_section(ReplyGuide(question="#Q"))
    assert list(json.loads(full.example_reply("because", {"n": 2}))) == ["why", "ans", "s"]


def test_xml_extraction_honours_tag_overrides():
    x = trace.node(3, trainable=True)
    optimizer = OptoPrimeV2([x], llm=ScriptedLLM([]))
    reply = "<why>short</why><var><name>a</name><value>1</value></var>"
    assert optimizer.extract_llm_suggestion(reply) == {}
    assert optimizer.extract_llm_suggestion(reply, suggestion_tag="var") == {"a": "1"}
    full = optimizer.extract_llm_suggestion(
        reply, suggestion_tag="var", reasoning_tag="why", return_only_suggestion=False
    )
    assert full == {"reasoning": "short", "variables": {"a": "1"}}


def test_each_format_writes_its_own_section_from_one_guide():
    guide = ReplyGuide(terminate_when="all is well", variables="#Knobs")
    json_section = JSONReplyFormat({"reasoning": "r", "answer": "a", "suggestion": "s"})
    xml_section = XMLReplyFormat(OptimizerPromptSymbolSet())
    text = json_section.prompt_section(guide)
    assert "If all is well, reply with just TERMINATE." in text
    assert '"a"' not in text  # no question in the guide: no answer field asked for
    text = xml_section.prompt_section(guide)
    assert "If all is well, just output TERMINATE." in text and "#Knobs" in text
    custom = XMLReplyFormat(OptimizerPromptSymbolSet(), custom_instruction="Reply in haiku.")
    assert custom.prompt_section(guide) == "Reply in haiku."


def test_opro_and_oprov2_share_the_wording_in_their_formats():
    x = trace.node(3, trainable=True)
    json_system = OPRO([x], llm=ScriptedLLM([])).system_prompt()
    xml_system = OPROv2([x], llm=ScriptedLLM([])).system_prompt()
    for system in (json_system, xml_system):
        assert "why the new solution should score better" in system
        assert "If no solution can do better" in system
    assert '"answer"' not in json_system and "XML/HTML" in xml_system


def test_problem_instance_v2_renders_with_given_titles():
    instance = ProblemInstanceV2(variables="v", feedback="f")
    titles = {key: f"== {key} ==" for key in instance.titles}
    assert "== variables ==\nv" in instance.render(titles)
    assert "# Variables\nv" in instance.render()


def test_every_optimizer_counts_a_rejected_response_format_as_a_call():
    x = trace.node(3, trainable=True)
    reply = json.dumps({"reasoning": "r", "suggestion": {x.py_name: 4}})
    multi = OptoPrimeMulti(
        [x], llm=ScriptedLLM([BadRequestError("no schema"), reply]), num_responses=1
    )
    assert step(multi, x + 1) == {x: 4}
    assert multi.last_step.llm_calls == 2 and multi.llm_calls == 2
    assert multi.state_dict()["llm_calls"] == 2


def test_llm_calls_is_part_of_every_optimizers_state():
    p = trace.node("draft", trainable=True)
    optimizer = TextGrad(
        [p], llm=ScriptedLLM(default="<IMPROVED_VARIABLE>final</IMPROVED_VARIABLE>")
    )
    step(optimizer, p, "say final")
    state = optimizer.state_dict()
    assert state["llm_calls"] == 1
    fresh = TextGrad([p], llm=ScriptedLLM([]))
    fresh.load_state_dict(state)
    assert fresh.llm_calls == 1


def test_a_copied_optimizers_format_follows_the_copys_keys():
    import copy

    x = trace.node(3, trainable=True)
    original = OptoPrime([x], llm=ScriptedLLM([]))
    clone = copy.deepcopy(original)
    clone.json_keys["suggestion"] = "changes"
    assert '"changes"' in clone.output_format_prompt()
    assert '"changes"' not in original.output_format_prompt()


def test_optoprime_v2_is_optoprime_configured_with_xml_pieces():
    from opto.optimizers.optoprime_v2 import XMLProblemView
    from opto.optimizers.problem import LineProblemView

    x = trace.node(3, trainable=True, description="an int")
    y = trace.node("y" * 50)
    plain = OptoPrime([x], llm=ScriptedLLM([]))
    v2 = OptoPrimeV2([x], llm=ScriptedLLM([]))
    assert isinstance(plain.problem_view, LineProblemView)
    assert isinstance(v2.problem_view, XMLProblemView)
    assert isinstance(v2.reply_format, XMLReplyFormat)
    v2.truncate_expression = lambda value, limit: "CUT"  # reaches the view
    v2.backward(x + y.data.count("y") + len(y.data), "fb")
    instance = v2.problem_instance(v2.summarize(), mask=["# Documentation"])
    assert "CUT" in instance.others or "CUT" in instance.inputs or "CUT" in instance.outputs
    assert instance.documentation == ""  # masked by its title
    assert "<constraint>\nan int\n</constraint>" in instance.variables  # never cut
