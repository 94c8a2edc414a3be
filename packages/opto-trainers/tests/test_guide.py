"""Guides: protocol, exact match, function adapter, LLM judge."""

import pytest
from opto.trainers import (
    AutoGuide,
    ExactMatchGuide,
    FunctionGuide,
    Guide,
    LLMJudge,
    exact_match_metric,
)
from opto.trainers.guide import GuideError, VerbalJudgeGuide
from opto.utils.testing import ScriptedLLM


def test_guide_protocol_delegates_to_get_feedback():
    class Half(Guide):
        def get_feedback(self, query, response, reference=None, **kw):
            return 0.5, f"{query}->{response} vs {reference}"

    guide = Half()
    assert guide("q", "r", "ref") == (0.5, "q->r vs ref")
    assert guide.metric("q", "r", "ref") == 0.5
    assert guide.get_score_dict("q", "r", "ref") == {"score": 0.5}
    assert AutoGuide is Guide
    with pytest.raises(NotImplementedError, match="get_feedback"):
        Guide()("q", "r")


def test_exact_match():
    guide = ExactMatchGuide()
    assert guide("q", "4", "4") == (1.0, "Correct.")
    score, feedback = guide("q", "5", "4")
    assert score == 0.0 and "'4'" in feedback
    assert ExactMatchGuide(normalize=True).metric("q", " Yes ", "yes") == 1.0
    assert exact_match_metric("q", 3, 3) == 1.0 and exact_match_metric("q", 3, 4) == 0.0


def test_function_guide_accepts_pairs_and_bare_scores():
    assert FunctionGuide(lambda q, r, ref: (0.3, "meh"))("q", "r", "x") == (0.3, "meh")
    assert FunctionGuide(lambda q, r, ref: r == ref)("q", "a", "a") == (1.0, "Correct.")
    assert FunctionGuide(lambda q, r, ref: 0.2)("q", "a", "a") == (0.2, "Incorrect.")
    with pytest.raises(GuideError, match="returned str"):
        FunctionGuide(lambda q, r, ref: "nope")("q", "a", "a")


def test_llm_judge_scores_on_its_correctness_template_and_formats():
    llm = ScriptedLLM(rules=[(r"Student answer:\n4", "fine. VERDICT-OK"), (r".", "Incorrect: add")])
    judge = LLMJudge(llm=llm, correctness_template="VERDICT-OK")
    assert judge("2+2?", "4", "4") == (1.0, "fine. VERDICT-OK")
    score, feedback = judge("2+2?", "5", "4")
    assert score == 0.0 and feedback == "Incorrect: add"
    assert "VERDICT-OK" in llm.requests[0].text  # the template reaches the prompt
    score, block = VerbalJudgeGuide(llm=llm)("2+2?", "5", "4")
    assert "Expert feedback: Incorrect: add" in block and "Reference: 4" in block
    with pytest.raises(GuideError, match="reference"):
        judge("q", "r", None)
    assert judge.copy().llm is llm


def test_guide_copies_share_llm_clients_but_not_state():
    class Counting(Guide):
        def __init__(self):
            self.llm = ScriptedLLM(default="x")
            self.seen = []

        def get_feedback(self, query, response, reference=None, **kw):
            self.seen.append(query)
            return 1.0, self.llm(messages=[{"role": "user", "content": "q"}]).content

    guide = Counting()
    twin = guide.copy()
    twin("q", "r")
    assert twin.llm is guide.llm and guide.seen == [] and twin.seen == ["q"]
