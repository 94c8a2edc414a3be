"""OptoPrime with a scripted LLM: prompt sections, options, parsing/conversion in a step,
records, state, and the reference bugs of optimizers.md §13 pinned fixed."""

from __future__ import annotations

import copy
import json
import logging
import re
from typing import Any

import opto.utils.llm
import pytest
from opto import trace
from opto.optimizers import OptoPrime, OptoPrimeV1, SuggestionParseError
from opto.optimizers.optoprime import DEFAULT_JSON_KEYS, ProblemInstance
from opto.trace.propagators import FeedbackMismatchError
from opto.trace.testing import one_step
from opto.utils.llm.errors import BadRequestError
from opto.utils.llm.types import ChatResponse, Usage
from opto.utils.testing import ScriptedLLM

HEADERS = [
    "#Instruction",
    "#Code",
    "#Documentation",
    "#Variables",
    "#Constraints",
    "#Inputs",
    "#Others",
    "#Outputs",
    "#Feedback",
]


pytestmark = pytest.mark.usefixtures("fresh_graph")


def reply(reasoning: str = "because", **suggestion: Any) -> str:
    return json.dumps({"reasoning": reasoning, "answer": "", "suggestion": suggestion})


def program(value: Any = 3, description: str | None = "a positive int"):
    """out = x * b + 1 with x trainable; returns (x, b, out)."""
    x = trace.node(value, name="x", trainable=True, description=description)
    b = trace.node(2, name="b")
    out = x * b + 1
    return x, b, out


@trace.bundle()
def probe(value):
    """Look at the value."""
    return repr(value)


def setup(replies: Any = (), feedback: str = "make it 21", **kwargs: Any):
    x, _b, out = program()
    llm = kwargs.pop("llm", None) or ScriptedLLM(list(replies))
    opt = OptoPrime([x], llm=llm, **kwargs)
    opt.zero_feedback()
    opt.backward(out, feedback)
    return opt, llm, x


def user_prompt(llm: ScriptedLLM, index: int = 0) -> str:
    return llm.requests[index].messages[1]["content"]


def system_prompt(llm: ScriptedLLM, index: int = 0) -> str:
    return llm.requests[index].messages[0]["content"]


def section(prompt: str, header: str) -> str:
    """The text of one section of the (last) problem instance in ``prompt``."""
    instance = prompt.rsplit("Now you see problem instance:", 1)[-1]
    match = re.search(re.escape(header) + r"\n(.*?)(?:\n\n#\w+\n|\n=====)", instance, re.DOTALL)
    assert match, f"{header} not in prompt"
    return match.group(1)


# --- prompt anatomy --------------------------------------------------------------------------


def test_messages_are_system_then_user_and_every_section_is_in_order():
    opt, llm, _x = setup([reply(x0=10)])
    opt.step()
    messages = llm.requests[0].messages
    assert [m["role"] for m in messages] == ["system", "user"]
    system, user = system_prompt(llm), user_prompt(llm)
    positions = [user.index(header + "\n") for header in HEADERS]
    assert positions == sorted(positions)
    for header in HEADERS:
        assert header in system  # the representation prompt explains every part
    assert user.startswith("Now you see problem instance:")
    assert user.rstrip().endswith("Your response:")
    assert "TERMINATE" in system and '"suggestion"' in system and '"answer"' in system


def test_section_contents():
    opt, llm, _x = setup([reply(x0=10)])
    opt.step()
    user = user_prompt(llm)
    assert section(user, "#Instruction") == OptoPrime.default_objective.format(
        variables="#Variables", feedback="#Feedback"
    )
    assert (
        section(user, "#Code")
        == "multiply0 = multiply(x=x0, y=b0)\nadd0 = add(x=multiply0, y=int0)"
    )
    docs = section(user, "#Documentation")
    assert "[multiply] This is a multiply operator of x and y." in docs
    assert "[add] This is an add operator of x and y." in docs
    assert section(user, "#Variables") == "(int) x0=3"
    assert section(user, "#Constraints") == "(int) x0: a positive int"
    assert section(user, "#Inputs") == "(int) b0=2\n(int) int0=1"
    assert section(user, "#Others") == "(int) multiply0=6"
    assert section(user, "#Outputs") == "(int) add0=7"
    assert section(user, "#Feedback") == "make it 21"


def test_variables_without_description_have_no_constraint_line():
    x, _, out = program(description=None)
    llm = ScriptedLLM([reply()])
    opt = OptoPrime([x], llm=llm)
    opt.backward(out, "fb")
    opt.step()
    assert section(user_prompt(llm), "#Constraints") == ""


def test_code_parameters_are_shown_as_code_with_their_signature_constraint():
    @trace.bundle(trainable=True)
    def double(v):
        """Double it."""
        return v * 2

    x = trace.node(1, name="x")
    llm = ScriptedLLM([reply()])
    opt = OptoPrime([double.parameter], llm=llm)
    opt.backward(double(x), "fb")
    opt.step()
    user = user_prompt(llm)
    assert section(user, "#Variables").startswith("(code) __code0:def double(v):")
    assert section(user, "#Constraints").startswith("(code) __code0: The code should start with:")
    assert "eval0 = eval(v=x0, __code=__code0)" in section(user, "#Code")


def test_objective_replaces_the_instruction():
    opt, llm, _ = setup([reply()], objective="Make add0 equal 21.")
    opt.step()
    assert section(user_prompt(llm), "#Instruction") == "Make add0 equal 21."


def test_mask_blanks_sections_but_keeps_headers():
    opt, llm, _ = setup([reply()])
    opt.step(mask=["#Code", "#Others"])
    user = user_prompt(llm)
    assert section(user, "#Code") == "" and section(user, "#Others") == ""
    assert section(user, "#Variables") == "(int) x0=3"


def test_prompt_symbols_rename_headers_everywhere_and_only_headers():
    symbols = {"variables": "## Knobs", "feedback": "## Critique"}
    opt, llm, x = setup([reply()], prompt_symbols=symbols, feedback="#Variables is fine")
    opt.step()
    system, user = system_prompt(llm), user_prompt(llm)
    assert "## Knobs" in system and "#Variables" not in system
    assert "## Critique" in system
    assert section(user, "## Knobs") == "(int) x0=3"
    # user data is not rewritten (the reference's global string replace did rewrite it)
    assert section(user, "## Critique") == "#Variables is fine"
    assert "#Variables" not in section(user, "#Instruction")
    with pytest.raises(ValueError, match="unknown prompt_symbols keys"):
        OptoPrime([x], llm=llm, prompt_symbols={"variable": "x"})


def test_json_keys_rename_the_reply_and_do_not_leak_to_other_instances():
    # reference bug B1: json_keys mutated the class-level defaults
    x, _, out = program()
    llm = ScriptedLLM(['{"why": "r", "change": {"x0": 4}}'])
    opt = OptoPrime(
        [x], llm=llm, json_keys={"reasoning": "why", "answer": None, "suggestion": "change"}
    )
    opt.backward(out, "fb")
    assert opt.step() == {x: 4}
    system = system_prompt(llm)
    assert '"why"' in system and '"change"' in system and '"answer"' not in system
    schema = llm.requests[0].options["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == ["why", "change"]
    assert dict(DEFAULT_JSON_KEYS) == {
        "reasoning": "reasoning",
        "answer": "answer",
        "suggestion": "suggestion",
    }
    assert OptoPrime([x], llm=llm).json_keys == dict(DEFAULT_JSON_KEYS)
    assert OptoPrime.default_json_keys is DEFAULT_JSON_KEYS
    with pytest.raises(TypeError):  # the class-level defaults are read-only
        OptoPrime.default_json_keys["answer"] = None  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown json_keys"):
        OptoPrime([x], llm=llm, json_keys={"reason": "r"})
    with pytest.raises(ValueError, match="non-empty"):
        OptoPrime([x], llm=llm, json_keys={"suggestion": ""})


def test_include_example_shows_a_valid_consistent_example():
    # reference bug B15: the example reply was invalid JSON with inconsistent numbers
    opt, llm, _ = setup([reply()], include_example=True)
    opt.step()
    user = user_prompt(llm)
    assert user.startswith("Here is an example of a problem instance and a response:")
    example = user.split("Now you see problem instance:")[0]
    example_reply = json.loads(example[example.rindex("\n{\n") : example.rindex("}") + 1])
    a = example_reply["suggestion"]["a"]
    b, c = 1, 5
    assert a + b - c == 10  # the example's feedback asks for z = a + b - c = 10
    assert str(a) in example_reply["reasoning"]
    assert section(user, "#Variables") == "(int) x0=3"  # the real problem follows


def test_memory_shows_earlier_steps_and_keeps_the_current_problem():
    # reference bug B17: with include_example the current problem vanished from step 2 on
    x, _, _out = program()
    llm = ScriptedLLM([reply(x0=5), reply(x0=9), reply(x0=10)])
    opt = OptoPrime([x], llm=llm, memory_size=1, include_example=True)
    for feedback in ["first", "second", "third"]:
        one_step(opt, lambda: x * 2 + 1, feedback)
    first, second, third = (user_prompt(llm, i) for i in range(3))
    assert "earlier steps" not in first
    assert section(second, "#Feedback") == "second"
    assert section(second, "#Variables") == "(int) x0=5"
    memory = second.split("oldest first.\n", 1)[1].split("\n\nYour response:")[0]
    assert json.loads(memory) == {"variables": {"x0": 3}, "feedback": "first"}
    assert '"feedback": "first"' not in third and '"feedback": "second"' in third  # FIFO of 1
    assert second.rstrip().endswith("Your response:")
    with pytest.raises(ValueError, match="memory_size"):
        OptoPrime([x], llm=llm, memory_size=-1)


def test_memory_holds_values_json_cannot_encode():
    x = trace.node({1, 2}, name="s", trainable=True)
    llm = ScriptedLLM([reply(), reply()])
    opt = OptoPrime([x], llm=llm, memory_size=2)
    for _ in range(2):
        one_step(opt, lambda: probe(x), "fb")
    assert '"s0": [\n' in user_prompt(llm, 1)


def test_highlight_variables_asks_for_the_variables_before_the_final_line():
    opt, llm, _ = setup([reply()], highlight_variables=True)
    opt.step()
    assert user_prompt(llm).endswith("What are your suggestions on variables x0?\n\nYour response:")


def test_max_value_chars_truncates_everything_but_the_variables():
    long_text = "v" * 300
    x = trace.node(long_text, name="x", trainable=True)
    b = trace.node("w" * 300, name="b")
    llm = ScriptedLLM([reply()])
    opt = OptoPrime([x], llm=llm, max_value_chars=50)
    opt.backward(x + b, "fb")
    opt.step()
    user = user_prompt(llm)
    assert section(user, "#Variables") == f"(str) x0={long_text}"
    assert section(user, "#Inputs") == "(str) b0=" + "w" * 50 + "...(skipped due to length limit)"
    assert "...(skipped" in section(user, "#Outputs")


def test_max_prompt_tokens_shortens_values_then_drops_memory(caplog):
    x = trace.node("s", name="x", trainable=True)
    big = trace.node("z" * 8000, name="big")
    budgets = {"roomy": 10**6, "tight": 1200}
    prompts = {}
    for label, budget in budgets.items():
        llm = ScriptedLLM(default=reply())
        opt = OptoPrime([x], llm=llm, memory_size=3, max_value_chars=-1, max_prompt_tokens=budget)
        for step in range(3):
            one_step(opt, lambda: x + big, f"feedback {step} " + "f" * 1000)
        prompts[label] = user_prompt(llm, 2)
        for request in llm.requests:
            assert sum(len(m["content"]) for m in request.messages) / 4 <= budget
    assert "z" * 8000 in prompts["roomy"] and "feedback 0" in prompts["roomy"]
    tight = prompts["tight"]
    assert "z" * 8000 not in tight and "...(skipped due to length limit)" in tight
    assert "feedback 0" not in tight  # oldest memory dropped
    assert section(tight, "#Feedback").startswith("feedback 2")  # current problem kept
    x.zero_feedback()
    tiny = OptoPrime([x], llm=llm, max_prompt_tokens=10)
    tiny.backward(x + "!", "fb")
    with caplog.at_level(logging.WARNING, logger="opto.optimizers.optoprime"):
        tiny.step()
    assert "exceeds max_prompt_tokens=10" in caplog.text


def test_a_custom_token_counter_is_used_for_the_budget():
    x = trace.node("start", name="x", trainable=True)
    big = trace.node(" ".join(["word"] * 2000), name="big")
    llm = ScriptedLLM([reply()])
    words = lambda text: len(text.split())
    opt = OptoPrime([x], llm=llm, max_prompt_tokens=600, token_counter=words)
    opt.backward(x + big, "fb")
    opt.step()
    assert sum(words(m["content"]) for m in llm.requests[0].messages) <= 600
    assert "word word" in user_prompt(llm)


# --- LLM options -----------------------------------------------------------------------------


def test_llm_options_max_tokens_and_json_schema_naming_exactly_the_variables():
    x = trace.node(3, name="x", trainable=True)
    flag = trace.node(True, name="flag", trainable=True)
    unused = trace.node(1.5, name="unused", trainable=True)
    llm = ScriptedLLM([reply()])
    opt = OptoPrime([x, flag, unused], llm=llm, max_tokens=321)
    opt.backward(x + flag, "fb")
    opt.step()
    options = llm.requests[0].options
    assert options["max_tokens"] == 321
    schema = options["response_format"]["json_schema"]["schema"]
    assert options["response_format"]["type"] == "json_schema"
    suggestion = schema["properties"]["suggestion"]
    assert suggestion["properties"] == {"x0": {"type": "integer"}, "flag0": {"type": "boolean"}}
    assert suggestion["required"] == ["x0", "flag0"]
    assert suggestion["additionalProperties"] is False


def test_reasoning_length_is_capped_in_the_schema_so_replies_finish():
    opt, llm, _ = setup([reply(), reply(), reply()])
    opt.step()
    properties = llm.requests[0].options["response_format"]["json_schema"]["schema"]["properties"]
    assert properties["reasoning"] == {"type": "string", "maxLength": 1000}
    assert properties["answer"] == {"type": "string", "maxLength": 1000}
    opt.max_tokens = 300
    opt.step()
    properties = llm.requests[1].options["response_format"]["json_schema"]["schema"]["properties"]
    assert properties["reasoning"]["maxLength"] == 300  # never more than the reply budget
    opt.reasoning_max_chars = None
    opt.step()
    properties = llm.requests[2].options["response_format"]["json_schema"]["schema"]["properties"]
    assert properties["reasoning"] == {"type": "string"}


def test_use_json_object_format_false_sends_no_response_format():
    opt, llm, _ = setup([reply()], use_json_object_format=False)
    opt.step()
    assert "response_format" not in llm.requests[0].options


def test_default_llm_is_built_only_when_none_is_given(monkeypatch):
    built: list[int] = []

    def fake_llm(*args: Any, **kwargs: Any) -> ScriptedLLM:
        built.append(1)
        return ScriptedLLM([reply()])

    monkeypatch.setattr(opto.utils.llm, "LLM", fake_llm)
    x, _, _ = program()
    OptoPrime([x], llm=ScriptedLLM([]))
    assert built == []  # reference bug B7: a default LLM was built even when one was given
    assert isinstance(OptoPrime([x]).llm, ScriptedLLM)
    assert built == [1]
    with pytest.raises(TypeError, match="callable"):
        OptoPrime([x], llm="gpt-4o")


def test_a_plain_callable_returning_an_openai_shaped_object_works():
    class Message:
        content = reply(x0=8)

    class Choice:
        message = Message()

    class Response:
        choices = [Choice()]

    seen: list[dict[str, Any]] = []

    def llm(messages: list[dict[str, str]], **options: Any) -> Response:
        seen.append(options)
        return Response()

    opt, _, x = setup(llm=llm)
    assert opt.step() == {x: 8} and x.data == 8
    assert seen[0]["max_tokens"] == 4096


def test_the_reference_dummy_llm_works_unchanged():
    from opto.utils.llm import DummyLLM

    def answer(*args: Any, **kwargs: Any) -> str:
        assert "#Feedback" in kwargs["messages"][1]["content"]
        return reply(x0="6")

    opt, _, x = setup(llm=DummyLLM(answer))
    assert opt.step() == {x: 6} and x.data == 6


def test_usage_of_the_reply_is_recorded():
    usage = Usage(prompt_tokens=100, completion_tokens=20, cost_usd=0.01)
    response = ChatResponse.from_text(reply(x0=4), usage=usage)
    opt, _llm, _x = setup([response])
    opt.step()
    record = opt.last_step
    assert (record.usage.prompt_tokens, record.usage.completion_tokens) == (100, 20)
    assert record.usage.cost_usd == 0.01
    assert record.llm_calls == 1 and opt.llm_calls == 1


def test_a_transport_error_propagates_after_one_call():
    # reference bug B14: any error triggered a second full call without response_format
    opt, llm, x = setup([RuntimeError("socket closed")])
    with pytest.raises(RuntimeError, match="socket closed"):
        opt.step()
    assert llm.calls == 1
    assert opt.last_step.error == "RuntimeError: socket closed"
    assert x.data == 3


def test_a_rejected_response_format_is_retried_once_without_it(caplog):
    opt, llm, x = setup([BadRequestError("response_format unsupported"), reply(x0=6)])
    with caplog.at_level(logging.WARNING, logger="opto.optimizers.optoprime"):
        assert opt.step() == {x: 6}
    assert [("response_format" in r.options) for r in llm.requests] == [True, False]
    assert opt.last_step.llm_calls == 2
    assert "retrying without response_format" in caplog.text


def test_verbose_logs_the_prompt_and_reply_instead_of_printing(caplog, capsys):
    opt, _llm, _x = setup([reply(x0=4)])
    with caplog.at_level(logging.INFO, logger="opto.optimizers.optoprime"):
        opt.step(verbose=True)
    assert "Prompt:" in caplog.text and "LLM response:" in caplog.text
    assert capsys.readouterr().out == ""


# --- parsing and conversion inside a step ----------------------------------------------------


def test_a_reply_updates_the_parameter_and_the_record_says_what_happened():
    opt, _llm, x = setup(
        [
            'Sure!\n```json\n{"reasoning": "double it", "answer": "", "suggestion": {"x0": "10", "ghost": 1},}\n```'
        ]
    )
    update = opt.step()
    assert update == {x: 10} and x.data == 10 and type(x.data) is int
    record = opt.last_step
    assert record.reasoning == "double it"
    assert record.suggestion == {"x0": "10", "ghost": 1}
    assert record.applied == {"x0": 10}
    assert record.rejected == {"ghost": "not a variable of this optimizer"}
    assert record.system_prompt.startswith("You improve a program")
    assert record.raw_reply.startswith("Sure!")


def test_alias_names_with_a_colon_match():
    opt, _, x = setup([reply(**{"x:0": 12})])
    assert opt.step() == {x: 12}


def test_lossy_int_suggestion_is_rejected_and_the_old_value_kept():
    opt, _, x = setup([reply(x0="3.9")])
    assert opt.step() == {}
    assert x.data == 3
    assert "rounding" in opt.last_step.rejected["x0"]


@pytest.mark.parametrize(
    ("value", "suggested", "expected"),
    [(True, "no", False), ([1], "[2, 3]", [2, 3]), ({"a": 1}, {"b": 2}, {"b": 2}), (0.5, "2", 2.0)],
)
def test_typed_conversion_in_a_step(value, suggested, expected):
    x = trace.node(value, name="v", trainable=True)
    llm = ScriptedLLM([reply(v0=suggested)])
    opt = OptoPrime([x], llm=llm)
    opt.backward(probe(x), "fb")
    opt.step()
    assert x.data == expected and type(x.data) is type(expected)


def test_prose_containing_def_is_not_reformatted():
    # reference bug B3: "def" anywhere triggered black ("undefined" -> "undefined\n")
    x = trace.node("start", name="msg", trainable=True)
    llm = ScriptedLLM([reply(msg0="undefined default")])
    opt = OptoPrime([x], llm=llm)
    opt.backward(x + "!", "fb")
    opt.step()
    assert x.data == "undefined default"


def test_non_trainable_parameters_are_never_updated():
    frozen = trace.node(1, name="frozen", trainable=False)
    x, _, out = program()
    llm = ScriptedLLM([reply(x0=5, frozen0=9)])
    opt = OptoPrime([x], llm=llm)
    opt.backward(out + frozen, "fb")
    opt.step()
    assert frozen.data == 1 and x.data == 5
    assert opt.last_step.rejected == {"frozen0": "not a variable of this optimizer"}


def test_terminate_reply_changes_nothing_but_terminate_in_reasoning_does():
    # reference bug B2
    opt, _llm, x = setup(["TERMINATE", reply("we could TERMINATE but", x0=7)])
    assert opt.step() == {} and opt.last_step.terminated and x.data == 3
    opt.zero_feedback()
    opt.backward(x * 2, "fb")
    assert opt.step() == {x: 7} and not opt.last_step.terminated


def test_unparsable_replies_are_counted_logged_and_do_not_update(caplog):
    opt, _llm, x = setup(["I have no idea", "still none"])
    with caplog.at_level(logging.WARNING, logger="opto.optimizers.optoprime"):
        assert opt.step() == {}
    assert opt.parse_failures == 1
    assert "no JSON object" in opt.last_step.parse_error
    assert "could not parse the LLM reply (1 failures so far)" in caplog.text
    assert x.data == 3
    opt.step()
    assert opt.parse_failures == 2


def test_strict_mode_raises_suggestion_parse_error_with_the_raw_reply():
    opt, _, _x = setup(["I have no idea"], ignore_extraction_error=False)
    with pytest.raises(SuggestionParseError) as info:
        opt.step()
    assert info.value.raw == "I have no idea"
    assert opt.parse_failures == 1 and opt.last_step.parse_error


def test_extract_llm_suggestion_reference_api():
    # reference bug B4: UnboundLocalError, AttributeError, ignore flag could not be overridden
    opt, _, _x = setup()
    assert opt.extract_llm_suggestion(reply(x0=1)) == {"x0": 1}
    assert opt.extract_llm_suggestion("garbage", return_only_suggestion=False) == {
        "reasoning": "",
        "variables": {},
    }
    assert opt.extract_llm_suggestion(
        '{"r": "why", "s": {"a": 1}}', suggestion_tag="s", reasoning_tag="r",
        return_only_suggestion=False,
    ) == {"reasoning": "why", "variables": {"a": 1}}  # fmt: skip
    with pytest.raises(SuggestionParseError):
        opt.extract_llm_suggestion("garbage", ignore_extraction_error=False)
    assert opt.extract_llm_suggestion('{"suggestion": {"__code0": 5}}') == {"__code0": 5}


def test_code_suggestions_are_checked_then_run():
    @trace.bundle(trainable=True)
    def combine(a, b):
        """Combine two numbers."""
        return a * b

    x = trace.node(3, name="x")
    bad_signature = "def combine(a):\n    return a\n"
    unsafe = "import os\n\ndef combine(a, b):\n    return os.getpid()\n"
    good = "def combine(a, b):\n    return a + b\n"
    llm = ScriptedLLM([reply(__code0=bad_signature), reply(__code0=unsafe), reply(__code0=good)])
    opt = OptoPrime([combine.parameter], llm=llm, forbidden_modules={"os", "subprocess"})
    results = []
    for _ in range(3):
        opt.zero_feedback()
        out = combine(x, 4)
        opt.backward(out, "should be 7")
        opt.step()
        results.append(dict(opt.last_step.rejected))
    assert "signature must stay combine(a, b)" in results[0]["__code0"]
    assert "imports os" in results[1]["__code0"]
    assert results[2] == {}
    assert combine(x, 4).data == 7
    assert {"signature", "imports os"} <= {
        word for r in results[:2] for word in ("signature", "imports os") if word in r["__code0"]
    }


def test_code_value_that_is_not_a_string_is_rejected_not_a_crash():
    @trace.bundle(trainable=True)
    def ident(a):
        return a

    llm = ScriptedLLM([reply(__code0=42)])
    opt = OptoPrime([ident.parameter], llm=llm)
    opt.backward(ident(1), "fb")
    assert opt.step() == {}
    assert "string" in opt.last_step.rejected["__code0"]


# --- guard rails (B12) -----------------------------------------------------------------------


def test_no_feedback_means_no_llm_call(caplog):
    x, _, _ = program()
    llm = ScriptedLLM([])
    opt = OptoPrime([x], llm=llm)
    with caplog.at_level(logging.WARNING, logger="opto.optimizers.optoprime"):
        assert opt.step() == {}
    assert llm.calls == 0
    assert "backward" in opt.last_step.skipped
    assert "no trainable parameter received feedback" in caplog.text


def test_different_feedback_on_two_parameters_is_a_clear_error():
    a = trace.node(1, name="a", trainable=True)
    b = trace.node(2, name="b", trainable=True)
    opt = OptoPrime([a, b], llm=ScriptedLLM([]))
    opt.backward(a + 1, "first")
    opt.backward(b + 1, "second")
    with pytest.raises(FeedbackMismatchError, match="combine the outputs"):
        opt.step()


def test_summarize_splits_roots_into_variables_and_inputs():
    opt, _, _x = setup()
    summary = opt.summarize()
    assert list(summary.variables) == ["x0"]
    assert set(summary.inputs) == {"b0", "int0"}
    assert summary.user_feedback == "make it 21"


# --- logs and state --------------------------------------------------------------------------


def test_logs_are_json_and_can_be_disabled():
    opt, llm, _ = setup([reply(x0=4)])
    opt.step()
    assert json.loads(json.dumps(opt.log)) == [
        {
            "system_prompt": system_prompt(llm),
            "user_prompt": user_prompt(llm),
            "response": reply(x0=4),
        }
    ]
    assert "#Feedback\nmake it 21" in opt.summary_log[0]["problem_instance"]
    quiet, _, _ = setup([reply()], log=False)
    quiet.step()
    assert quiet.log is None and quiet.summary_log is None


def test_state_round_trip_keeps_memory_logs_and_counters(tmp_path):
    opt, _llm, x = setup([reply(x0=4), "junk"], memory_size=2)
    opt.step()
    opt.zero_feedback()
    opt.backward(x * 2, "again")
    opt.step()
    path = opt.save(tmp_path / "optoprime.json")
    state = json.loads(path.read_text())
    assert state["memory"] == [
        {"variables": {"x0": 3}, "feedback": "make it 21"},
        {"variables": {"x0": 4}, "feedback": "again"},
    ]
    assert state["parse_failures"] == 1 and state["llm_calls"] == 2
    fresh = OptoPrime([x], llm=ScriptedLLM([reply(x0=11)]), memory_size=2)
    fresh.load(path)
    assert list(fresh.memory) == state["memory"] and fresh.parse_failures == 1
    assert fresh.log == opt.log and fresh.step_count == 2
    fresh.zero_feedback()
    fresh.backward(x * 3, "third")
    fresh.step()  # reference bug B5: a loaded optimizer was unusable
    assert x.data == 11
    assert '"feedback": "again"' in user_prompt(fresh.llm)


def test_deepcopy_shares_parameters_and_llm_but_not_memory():
    opt, llm, x = setup([reply(x0=4), reply(x0=5)], memory_size=2)
    opt.step()
    clone = copy.deepcopy(opt)
    assert clone.parameters[0] is x and clone.llm is llm
    clone.zero_feedback()
    clone.backward(x * 2, "clone feedback")
    clone.step()
    assert len(clone.memory) == 2 and len(opt.memory) == 1
    assert x.data == 5


def test_problem_instance_renders_in_reference_order():
    text = str(ProblemInstance(instruction="i", feedback="f"))
    assert text.startswith("#Instruction\ni\n\n#Code\n\n\n#Documentation")
    assert text.endswith("#Outputs\n\n\n#Feedback\nf")


def test_optoprime_v1_is_optoprime():
    assert OptoPrimeV1 is OptoPrime


# --- replies cut off at max_tokens -----------------------------------------------------------


def _scale_program():
    """A trainable function and a trainable int: out = scale(x, k)."""

    @trace.bundle(trainable=True)
    def scale(a, k):
        """Scale a by k."""
        return a * k

    k = trace.node(2, name="k", trainable=True)
    x = trace.node(3, name="x")
    return scale, k, x


def test_the_schema_asks_for_non_code_values_before_code():
    scale, k, x = _scale_program()
    llm = ScriptedLLM([reply(k0=3)])
    opt = OptoPrime([scale.parameter, k], llm=llm)
    out = scale(x, 2) + k  # the trace lists __code0 before k0
    opt.backward(out, "should be 9")
    assert list(opt.summarize().variables) == ["__code0", "k0"]
    opt.step()
    suggestion = llm.requests[0].options["response_format"]["json_schema"]["schema"]["properties"][
        "suggestion"
    ]
    assert list(suggestion["properties"]) == ["k0", "__code0"]
    assert suggestion["required"] == ["k0", "__code0"]


def test_a_reply_cut_inside_the_code_applies_the_complete_values_and_rejects_the_cut_one():
    scale, k, x = _scale_program()
    cut = '{"reasoning": "k should be 3", "answer": "", "suggestion": {"k0": 3, "__code0": "def sc'
    llm = ScriptedLLM([cut])
    opt = OptoPrime([scale.parameter, k], llm=llm)
    old_code = scale.parameter.data
    opt.backward(scale(x, k), "should be 9")
    update = opt.step()
    assert {p.py_name: v for p, v in update.items()} == {"k0": 3}
    assert k.data == 3 and scale.parameter.data == old_code
    record = opt.last_step
    assert record.parse_error is None and record.applied == {"k0": 3}
    assert record.reasoning == "k should be 3"
    assert "cut off" in record.rejected["__code0"] and "max_tokens" in record.rejected["__code0"]
    assert opt.parse_failures == 0


def test_a_reply_cut_before_any_complete_value_is_still_a_parse_failure():
    scale, k, x = _scale_program()
    llm = ScriptedLLM(['{"reasoning": "k should be 3", "suggestion": {"k0": 3'])
    opt = OptoPrime([scale.parameter, k], llm=llm)
    opt.backward(scale(x, k), "should be 9")
    assert opt.step() == {}
    assert "cut off" in opt.last_step.parse_error and k.data == 2
