"""TextGrad: gradient/reduce/update calls along trainable paths only, text gradients in
prompts, any LLM of the protocol, reference bugs (B9) pinned fixed, and an end-to-end loop."""

import json
import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opto import trace
from opto.optimizers import TextGrad
from opto.optimizers.textgrad import _improved_value
from opto.trace.propagators import GraphPropagator
from opto.trace.testing import one_step
from opto.utils.testing import DummyLLM, ScriptedLLM
from opto.utils.usage import BudgetExceeded, track_usage


def by_role(gradient="increase it", reduce="combined: increase", update="5"):
    """An LLM answering by the kind of call (read from the system prompt)."""

    def reply(messages, **options):
        system = messages[0]["content"]
        if "gradient engine" in system:
            return gradient
        if "combine several pieces" in system:
            return reduce
        return f"<IMPROVED_VARIABLE>{update}</IMPROVED_VARIABLE>"

    return reply


def kind(request):
    system = request.messages[0]["content"]
    if "gradient engine" in system:
        return "gradient"
    return "reduce" if "combine several pieces" in system else "update"


def run(optimizer, out, feedback="should be 40", **kwargs):
    return one_step(optimizer, out, feedback, **kwargs)


def test_calls_follow_trainable_paths_and_carry_text_gradients():
    a = trace.node(3, trainable=True, description="a number")
    b = trace.node(2)
    d = (a + b) * a
    llm = ScriptedLLM(by_role())
    optimizer = TextGrad([a], llm=llm)
    assert run(optimizer, d) == {a: 5}
    kinds = [kind(r) for r in llm.requests]
    assert kinds.count("gradient") == 3 and kinds.count("reduce") == 1 and kinds[-1] == "update"
    texts = "\n".join(r.last for r in llm.requests)
    assert f"<VARIABLE>(int) {b.py_name}=" not in texts  # B9: no calls for constants
    assert "GradientInfo" not in texts and "object at 0x" not in texts  # B9: no reprs
    reduce_prompt = next(r.last for r in llm.requests if kind(r) == "reduce")
    assert reduce_prompt.count("<FEEDBACK>increase it</FEEDBACK>") == 2
    update_prompt = llm.requests[-1].last
    assert "<FEEDBACK>combined: increase</FEEDBACK>" in update_prompt
    assert "<CONSTRAINTS>a number</CONSTRAINTS>" in update_prompt
    first = llm.requests[0].last
    assert "<FEEDBACK>should be 40</FEEDBACK>" in first
    record = optimizer.last_step
    assert record.llm_calls == 5 and record.applied == {a.py_name: 5}
    assert optimizer.gradients == {a.py_name: "combined: increase"}


def test_concurrent_gradient_calls_are_held_to_the_callers_budget():
    params = [trace.node(i, trainable=True) for i in range(6)]
    out = params[0]
    for p in params[1:]:
        out = out + p
    llm = ScriptedLLM(by_role())
    optimizer = TextGrad(params, llm=llm, max_workers=6)
    with track_usage(max_calls=2) as scope, pytest.raises(BudgetExceeded, match="max_calls=2"):
        run(optimizer, out)
    assert llm.calls == 2 and scope.requests == 2  # at most 2 requests left the process
    assert [p.data for p in params] == list(range(6))


def test_feedback_on_a_parameter_itself_reaches_the_update_prompt():  # B9
    p = trace.node("draft", trainable=True)
    llm = ScriptedLLM(by_role(update="final"))
    optimizer = TextGrad([p], llm=llm)
    one_step(optimizer, p, "say final")
    assert llm.calls == 1
    assert "<FEEDBACK>say final</FEEDBACK>" in llm.requests[0].last
    assert p.data == "final"


def test_objective_and_propagator_are_used():  # B9: both were ignored
    propagator = GraphPropagator()
    a = trace.node(1, trainable=True)
    llm = ScriptedLLM(by_role(update="2"))
    optimizer = TextGrad([a], llm=llm, objective="Reach 2.", propagator=propagator)
    assert optimizer.propagator is propagator
    run(optimizer, a + 1)
    assert all("<OBJECTIVE>Reach 2.</OBJECTIVE>" in r.last for r in llm.requests)


@pytest.mark.parametrize(
    "make_llm",
    [
        lambda f: ScriptedLLM(f),
        lambda f: DummyLLM(f),
        lambda f: lambda messages, **kw: {"choices": [{"message": {"content": f(messages)}}]},
    ],
    ids=["scripted", "dummy", "plain-callable-dict"],
)
def test_works_with_any_llm_of_the_protocol(make_llm):  # B9: backend-dependent crash
    a = trace.node(3, trainable=True)
    optimizer = TextGrad([a], llm=make_llm(by_role(update="7")))
    assert run(optimizer, a * 2) == {a: 7}


def test_values_keep_their_type():  # B9: type(p.data)(text) made char lists
    items = trace.node([1, 2], trainable=True)
    optimizer = TextGrad([items], llm=ScriptedLLM(by_role(update="[3, 4]")))
    run(optimizer, items.len())
    assert items.data == [3, 4]
    bad = TextGrad([items], llm=ScriptedLLM(by_role(update="abc")))
    assert run(bad, items.len()) == {}
    assert "not a JSON or Python literal" in bad.last_step.rejected[items.py_name]
    assert items.data == [3, 4]


def test_code_parameters_are_checked():
    @trace.bundle(trainable=True)
    def double(x):
        return x * 2

    code = double.parameter
    new = "def double(x):\n    import os\n    return x * 3"
    optimizer = TextGrad([code], llm=ScriptedLLM(by_role(update=new)), forbidden_modules={"os"})
    assert run(optimizer, double(trace.node(2))) == {}
    assert "imports os" in optimizer.last_step.rejected[code.py_name]
    ok = TextGrad([code], llm=ScriptedLLM(by_role(update="def double(x):\n    return x * 3")))
    run(ok, double(trace.node(2)))
    assert double(trace.node(2)).data == 6


def test_reply_without_tags_is_rejected_with_a_reason(caplog):
    a = trace.node(1, trainable=True)
    llm = ScriptedLLM(lambda messages, **kw: "I think 3")
    optimizer = TextGrad([a], llm=llm)
    assert run(optimizer, a + 1) == {}
    assert "no <IMPROVED_VARIABLE>" in optimizer.last_step.rejected[a.py_name]
    assert optimizer.last_step.parse_error
    assert "TextGrad" in caplog.text


def test_unclosed_tag_runs_to_the_end_of_the_reply():
    a = trace.node(1, trainable=True)
    optimizer = TextGrad([a], llm=ScriptedLLM(lambda m, **kw: "sure <improved_variable> 9"))
    assert run(optimizer, a + 1) == {a: 9}


def test_terminate_keeps_the_value():
    a = trace.node(1, trainable=True)
    optimizer = TextGrad([a], llm=ScriptedLLM(lambda m, **kw: "TERMINATE"))
    assert run(optimizer, a + 1) == {}
    assert optimizer.last_step.terminated and a.data == 1


def test_no_feedback_means_no_llm_call():  # B12
    a = trace.node(1, trainable=True)
    llm = ScriptedLLM([])
    optimizer = TextGrad([a], llm=llm)
    assert optimizer.step() == {}
    assert llm.calls == 0 and "backward" in optimizer.last_step.skipped


def test_parents_of_a_node_are_asked_concurrently():
    a = trace.node(1, trainable=True)
    b = trace.node(2, trainable=True)
    barrier = threading.Barrier(2, timeout=60)

    def reply(messages, **kw):
        if "gradient engine" in messages[0]["content"]:
            barrier.wait()  # both gradient calls must be in flight at once
            return "change"
        return "<IMPROVED_VARIABLE>3</IMPROVED_VARIABLE>"

    optimizer = TextGrad([a, b], llm=ScriptedLLM(reply), max_workers=2)
    assert run(optimizer, a + b) == {a: 3, b: 3}


def test_log_keeps_every_call_and_state_is_json(tmp_path):  # B9: last-only log
    a = trace.node(3, trainable=True)
    optimizer = TextGrad([a], llm=ScriptedLLM(by_role()))
    run(optimizer, (a + 1) * a)
    assert [call["kind"] for call in optimizer.log[0]["calls"]].count("gradient") == 3
    path = optimizer.save(tmp_path / "tg.json")
    fresh = TextGrad([a], llm=ScriptedLLM([]))
    fresh.load(path)
    assert fresh.state_dict() == json.loads(json.dumps(optimizer.state_dict()))
    assert fresh.gradients == optimizer.gradients


def test_invalid_max_workers():
    with pytest.raises(ValueError, match="max_workers"):
        TextGrad([trace.node(1, trainable=True)], llm=ScriptedLLM([]), max_workers=0)


def test_loop_drives_a_program_to_its_target():
    def reader(messages, **kw):
        system, user = messages[0]["content"], messages[-1]["content"]
        feedback = re.search(r"<FEEDBACK>(.*?)</FEEDBACK>", user, re.S).group(1)
        if "gradient engine" in system:
            return feedback  # pass the direction through the multiply
        value = int(re.search(r'type="int">\n(-?\d+)\n</VARIABLE>', user).group(1))
        step = int(re.search(r"by (\d+)", feedback).group(1))
        new = value + step if "increase" in feedback else value - step
        return f"<IMPROVED_VARIABLE>{new}</IMPROVED_VARIABLE>"

    x = trace.node(0, trainable=True, description="the input to tune")
    optimizer = TextGrad([x], llm=ScriptedLLM(reader))
    for _ in range(10):
        out = x * 4 + 2
        if out.data == 50:
            break
        gap = (50 - out.data) // 4
        verb = "increase" if gap > 0 else "decrease"
        run(optimizer, out, f"{verb} the input by {abs(gap)}; the output should be 50")
    assert x.data == 12


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(
            st.sampled_from(["<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>", "x", " ", "<", ">"]),
            max_size=20,
        ).map("".join),
    )
)
def test_improved_value_parser_never_raises(text):
    value = _improved_value(text)
    assert value is None or isinstance(value, str)
