"""OPRO: a meta-prompt over (solution, score) history — scores kept and sorted, OPRO's
own system prompt (B6 fixed), history bounds, state, and an end-to-end loop."""

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opto import trace
from opto.optimizers import OPRO
from opto.optimizers.opro import score_from_feedback
from opto.trace.testing import one_step
from opto.utils.testing import ScriptedLLM


def suggestion(name, value):
    return json.dumps({"reasoning": "r", "suggestion": {name: value}})


def solutions(prompt):
    """(value, score) of each solution block in prompt order."""
    found = re.findall(r"Solution:\n\{\n  \"\w+\": (-?\d+)\n\}\nscore: (\S+)", prompt)
    return [(int(v), float(s)) for v, s in found]


def test_history_is_shown_sorted_by_score_with_the_current_last():
    x = trace.node(0, trainable=True, description="a knob")
    replies = [suggestion(x.py_name, v) for v in (5, 2, 9, 1)]
    llm = ScriptedLLM(replies)
    optimizer = OPRO([x], llm=llm)
    for score in (0.5, 0.9, 0.1, 0.7):
        one_step(optimizer, x + 0, f"score: {score}")
    prompt = llm.requests[-1].last
    assert solutions(prompt) == [(2, 0.1), (0, 0.5), (5, 0.9)]
    assert f'Current solution:\n{{\n  "{x.py_name}": 9\n}}\nscore: 0.7' in prompt
    assert f"(int) {x.py_name}: a knob" in prompt
    assert [e["score"] for e in optimizer.history] == [0.5, 0.9, 0.1, 0.7]
    assert x.data == 1


def test_minimize_sorts_the_other_way():
    x = trace.node(0, trainable=True)
    llm = ScriptedLLM([suggestion(x.py_name, v) for v in (1, 2, 3)])
    optimizer = OPRO([x], llm=llm, maximize=False)
    for score in (3, 1, 2):
        one_step(optimizer, x + 0, "loss", score=score)
    assert [s for _, s in solutions(llm.requests[-1].last)] == [3.0, 1.0]
    assert "lower scores are better" in llm.requests[-1].last


def test_explicit_score_wins_and_unscored_feedback_still_guides():
    x = trace.node(0, trainable=True)
    llm = ScriptedLLM([suggestion(x.py_name, 1), suggestion(x.py_name, 2)])
    optimizer = OPRO([x], llm=llm)
    one_step(optimizer, x + 0, "too small, score: 0.1", score=0.4)
    one_step(optimizer, x + 0, "closer")
    assert [e["score"] for e in optimizer.history] == [0.4, None]
    prompt = llm.requests[-1].last
    assert "score: 0.4\nfeedback: too small, score: 0.1" in prompt
    assert "Current solution:" in prompt and "feedback: closer" in prompt


def test_prompt_shows_the_best_max_num_solutions():
    x = trace.node(0, trainable=True)
    llm = ScriptedLLM([suggestion(x.py_name, v) for v in range(1, 7)])
    optimizer = OPRO([x], llm=llm, max_num_solutions=2, history_size=4)
    for score in (0.6, 0.2, 0.9, 0.3, 0.8, 0.1):
        one_step(optimizer, x + 0, str(score))
    assert len(optimizer.history) == 4
    assert [s for _, s in solutions(llm.requests[-1].last)] == [0.8, 0.9]


def test_system_prompt_is_opros_own():  # B6: the V1 format shadowed OPRO's
    x = trace.node(0, trainable=True)
    llm = ScriptedLLM([suggestion(x.py_name, 1)])
    one_step(OPRO([x], llm=llm), x + 0, "score 1")
    system = llm.requests[0].messages[0]["content"]
    assert "solutions tried earlier" in system and '"suggestion"' in system
    assert "#Code" not in system and "#Others" not in system and '"answer"' not in system
    schema = llm.requests[0].options["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]) == {"reasoning", "suggestion"}


def test_conversion_and_state_round_trip(tmp_path):
    x = trace.node(0, trainable=True)
    optimizer = OPRO([x], llm=ScriptedLLM([suggestion(x.py_name, "3.5")]))
    assert one_step(optimizer, x + 0, "score: 2") == {}
    assert "not an integer" in optimizer.last_step.rejected[x.py_name]
    path = optimizer.save(tmp_path / "opro.json")
    fresh = OPRO([x], llm=ScriptedLLM([]))
    fresh.load(path)
    assert fresh.buffer == [{"variables": {x.py_name: 0}, "feedback": "score: 2", "score": 2.0}]


def test_invalid_max_num_solutions():
    with pytest.raises(ValueError, match="max_num_solutions"):
        OPRO([trace.node(1, trainable=True)], llm=ScriptedLLM([]), max_num_solutions=0)


@pytest.mark.parametrize(
    ("feedback", "score"),
    [
        ("0.75", 0.75),
        ("Score: 3", 3.0),
        ("the reward = -2.5 today", -2.5),
        ("accuracy is 0.9", 0.9),
        ("no number", None),
        ("inf", None),
        (5, 5.0),
        (True, None),
        (None, None),
    ],
)
def test_score_from_feedback(feedback, score):
    assert score_from_feedback(feedback) == score


@given(st.one_of(st.text(), st.integers(), st.floats(), st.none()))
def test_score_from_feedback_never_raises(feedback):
    score = score_from_feedback(feedback)
    assert score is None or isinstance(score, float)


def test_loop_climbs_to_the_best_score():
    """The scripted LLM reads the sorted history and proposes past the best solution."""

    def reader(messages, **kw):
        prompt = messages[-1]["content"]
        entries = re.findall(r"\{\n  \"(\w+)\": (-?\d+)\n\}\nscore: (\S+)", prompt)
        name = entries[0][0]
        best = max(entries, key=lambda e: float(e[2]))
        return suggestion(name, int(best[1]) + 3)

    x = trace.node(0, trainable=True)
    optimizer = OPRO([x], llm=ScriptedLLM(reader))
    for _ in range(15):
        score = -abs(x.data - 21)
        if score == 0:
            break
        one_step(optimizer, x + 0, f"score: {score}")
    assert x.data == 21


def test_oprov2_asks_for_xml_with_consistent_titles():  # B10
    from opto.optimizers.opro import OPROv2

    x = trace.node(0, trainable=True, description="a knob")
    reply = f"<reasoning>r</reasoning><variable><name>{x.py_name}</name><value>4</value></variable>"
    llm = ScriptedLLM([reply])
    optimizer = OPROv2([x], llm=llm)
    assert one_step(optimizer, x + 0, "score: 1") == {x: 4}
    system, user = (m["content"] for m in llm.requests[0].messages)
    assert "XML/HTML" in system and "#Solution" in system
    assert user.startswith("#ProblemContext\n") and "\n#Solution\n(int)" in user
    assert "#Variables" not in system + user and "#Code" not in system
    assert "response_format" not in llm.requests[0].options
    assert optimizer.history.buffer[0]["score"] == 1.0
    bad = OPROv2([x], llm=ScriptedLLM(["no tags"]))
    assert one_step(bad, x + 0, "score: 1") == {} and bad.parse_failures == 1


def test_max_prompt_tokens_shortens_the_solutions_shown():
    x = trace.node("w" * 4000, trainable=True)
    replies = [suggestion(x.py_name, "v" * 4000), suggestion(x.py_name, "short")]
    llm = ScriptedLLM(replies)
    optimizer = OPRO([x], llm=llm, max_prompt_tokens=800)
    one_step(optimizer, x + "", "score: 0.1")
    one_step(optimizer, x + "", "score: 0.2")
    system, user = (m["content"] for m in llm.requests[-1].messages)
    assert "w" * 1000 not in user and "...(skipped due to length limit)" in user
    assert len(system + user) <= 800 * 4


def test_a_mask_leaves_out_the_instruction_variables_or_feedback_of_the_meta_prompt():
    x = trace.node(0, trainable=True, description="a knob")
    llm = ScriptedLLM([suggestion(x.py_name, 1), suggestion(x.py_name, 2)])
    optimizer = OPRO([x], llm=llm)
    one_step(optimizer, x + 0, "too small, score: 0.1")
    full = llm.requests[-1].last
    assert "#Instruction" in full and "feedback: too small" in full and "a knob" in full
    one_step(optimizer, x + 0, "closer, score: 0.2", mask=["#Instruction", "#Feedback"])
    masked = llm.requests[-1].last
    assert "#Instruction" not in masked and optimizer.objective not in masked
    assert "feedback:" not in masked and "score: 0.1" in masked and "a knob" in masked
    assert optimizer.meta_prompt(optimizer.summarize(), -1, mask=["variables"]).count("knob") == 0
