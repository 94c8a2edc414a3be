"""OptoPrimeMulti: generation techniques (concurrent where independent), selection
techniques, reference bugs (B8) pinned fixed, candidates and state, end-to-end loop."""

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opto import trace
from opto.optimizers import OptoPrimeMulti
from opto.optimizers.optoprimemulti import (
    Candidate,
    _chosen_index,
    _majority,
    _string_list,
    _weighted_order,
)
from opto.optimizers.parsing import SuggestionParseError
from opto.trace.testing import one_step
from opto.utils.llm import LLMFactory
from opto.utils.testing import ScriptedLLM
from opto.utils.usage import BudgetExceeded, track_usage

JUDGE = "compare candidate responses"


def suggest(name, value, reasoning="r"):
    return json.dumps({"reasoning": reasoning, "suggestion": {name: value}})


def by_temperature(name, judge='{"best": 1}'):
    """Candidate value = temperature * 10; the judge answers ``judge``."""

    def reply(messages, **options):
        if JUDGE in messages[0]["content"]:
            return judge
        return suggest(name, int(options["temperature"] * 10))

    return reply


def run(optimizer, out, feedback="make it larger", **kwargs):
    return one_step(optimizer, out, feedback, **kwargs)


def generated(llm):
    return [r for r in llm.requests if JUDGE not in r.messages[0]["content"]]


def test_temperature_spread_and_judge_pick():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM(by_temperature(x.py_name, '{"reasoning": "2 is best", "best": 2}'))
    optimizer = OptoPrimeMulti([x], llm=llm, num_responses=3)
    assert run(optimizer, x + 1) == {x: 5}
    assert [c.temperature for c in optimizer.candidates] == [1.0, 0.5, 0.0]
    assert [c.suggestion[x.py_name] for c in optimizer.candidates] == [10, 5, 0]
    assert optimizer.selected is optimizer.candidates[1]
    assert optimizer.last_step.llm_calls == 4


def test_judge_sees_the_problem_and_feedback_and_uses_max_tokens():  # B8
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM(by_temperature(x.py_name, "Candidate 3 is the best."))
    optimizer = OptoPrimeMulti([x], llm=llm, max_tokens=321)
    run(optimizer, x + 1, "the output must be 0")
    judge = next(r for r in llm.requests if JUDGE in r.messages[0]["content"])
    assert "the output must be 0" in judge.last and "#Variables" in judge.last
    assert "Candidate 3:" in judge.last
    assert judge.options["max_tokens"] == 321
    assert x.data == 0


def test_unusable_judge_reply_falls_back_to_the_last_candidate(caplog):
    x = trace.node(3, trainable=True)
    optimizer = OptoPrimeMulti([x], llm=ScriptedLLM(by_temperature(x.py_name, "all fine")))
    assert run(optimizer, x + 1) == {x: 0}
    assert "named no valid candidate" in caplog.text


def test_candidates_are_requested_concurrently():
    x = trace.node(3, trainable=True)
    barrier = threading.Barrier(3, timeout=60)

    def reply(messages, **options):
        barrier.wait()  # all three requests must be in flight at once
        return suggest(x.py_name, 7)

    optimizer = OptoPrimeMulti([x], llm=ScriptedLLM(reply), selection_technique="last_of_n")
    assert run(optimizer, x + 1) == {x: 7}
    assert len(optimizer.candidates) == 3


def test_concurrent_candidates_are_held_to_the_callers_budget():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM(by_temperature(x.py_name))
    optimizer = OptoPrimeMulti([x], llm=llm, num_responses=6, max_workers=6)
    with track_usage(max_calls=2) as scope, pytest.raises(BudgetExceeded, match="max_calls=2"):
        run(optimizer, x + 1)
    assert llm.calls == 2 and scope.requests == 2  # at most 2 requests left the process
    assert x.data == 3


def test_n_samples_asks_once_for_n_choices():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM([[suggest(x.py_name, 1), suggest(x.py_name, 2)]])
    optimizer = OptoPrimeMulti(
        [x],
        llm=llm,
        num_responses=2,
        generation_technique="n_samples",
        selection_technique="last_of_n",
    )
    assert run(optimizer, x + 1) == {x: 2}
    assert llm.calls == 1 and llm.requests[0].options["n"] == 2
    assert llm.requests[0].options["temperature"] == 1.0


def test_self_refinement_quotes_the_previous_candidate():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM([suggest(x.py_name, 1, "first"), suggest(x.py_name, 2, "second")])
    optimizer = OptoPrimeMulti(
        [x],
        llm=llm,
        num_responses=2,
        generation_technique="self_refinement",
        selection_technique="last_of_n",
    )
    run(optimizer, x + 1)
    second = llm.requests[1].messages[0]["content"]
    assert "<<<" in second and '"first"' in second
    assert all(r.options["temperature"] == 0.0 for r in llm.requests)
    assert x.data == 2


def test_iterative_alternatives_lists_previous_candidates():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM([suggest(x.py_name, v) for v in (1, 2, 3)])
    optimizer = OptoPrimeMulti(
        [x],
        llm=llm,
        generation_technique="iterative_alternatives",
        selection_technique="last_of_n",
    )
    run(optimizer, x + 1)
    last = llm.requests[2].last
    assert "Candidate 1:" in last and "Candidate 2:" in last and "very different" in last
    assert x.data == 3


def test_multi_experts_from_the_list_and_from_the_llm():
    x = trace.node(3, trainable=True)
    seen = []

    def reply(messages, **options):
        system = messages[0]["content"]
        if messages[0]["role"] == "user":
            return '{"experts": ["Physicist"]}'
        seen.append(system.split(".")[0])
        return suggest(x.py_name, 4)

    listed = OptoPrimeMulti(
        [x],
        llm=ScriptedLLM(reply),
        generation_technique="multi_experts",
        experts_list=["Chemist", "Poet"],
        selection_technique="last_of_n",
    )
    run(listed, x + 1)
    assert sorted(seen) == ["You are a Chemist", "You are a Chemist", "You are a Poet"]
    seen.clear()
    asked = OptoPrimeMulti(
        [x],
        llm=ScriptedLLM(reply),
        generation_technique="multi_experts",
        selection_technique="last_of_n",
    )
    run(asked, x + 1)
    assert [c.expert for c in asked.candidates][0] == "Physicist"
    assert len({c.expert for c in asked.candidates}) == 3


def test_multi_llm_uses_profiles_with_weights():  # B8: llm_weights unused
    x = trace.node(3, trainable=True)
    heavy = ScriptedLLM(default=suggest(x.py_name, 1), model="heavy")
    light = ScriptedLLM(default=suggest(x.py_name, 2), model="light")
    optimizer = OptoPrimeMulti(
        [x],
        llm=ScriptedLLM([]),
        num_responses=4,
        generation_technique="multi_llm",
        llm_profiles=[heavy, light],
        llm_weights=[3, 1],
        selection_technique="last_of_n",
    )
    run(optimizer, x + 1)
    assert (heavy.calls, light.calls) == (3, 1)
    assert sorted(c.profile for c in optimizer.candidates) == ["heavy"] * 3 + ["light"]


def test_multi_llm_by_profile_name_falls_back_to_the_default(caplog):
    x = trace.node(3, trainable=True)
    LLMFactory.register_profile(
        "opto-test-scripted", backend=ScriptedLLM, default=suggest(x.py_name, 8)
    )
    default = ScriptedLLM(default=suggest(x.py_name, 9))
    optimizer = OptoPrimeMulti(
        [x],
        llm=default,
        num_responses=2,
        generation_technique="multi_llm",
        llm_profiles=["opto-test-scripted", "opto-test-missing"],
        selection_technique="last_of_n",
    )
    run(optimizer, x + 1)
    values = {c.profile: c.suggestion[x.py_name] for c in optimizer.candidates}
    assert values == {"opto-test-scripted": 8, "opto-test-missing": 9}
    assert "opto-test-missing" in caplog.text


def test_moa_synthesis_is_applied():
    x = trace.node(3, trainable=True)

    def reply(messages, **options):
        if "combines their best elements" in messages[0]["content"]:
            return suggest(x.py_name, 42)
        return suggest(x.py_name, 1)

    optimizer = OptoPrimeMulti([x], llm=ScriptedLLM(reply), selection_technique="moa")
    assert run(optimizer, x + 1) == {x: 42}
    assert optimizer.selected.source == "moa"


def test_majority_picks_the_largest_cluster():
    x = trace.node(3, trainable=True)
    replies = iter([suggest(x.py_name, 100), suggest(x.py_name, 7), suggest(x.py_name, 7)])
    lock = threading.Lock()

    def reply(messages, **options):
        with lock:
            return next(replies)

    optimizer = OptoPrimeMulti([x], llm=ScriptedLLM(reply), selection_technique="majority")
    assert run(optimizer, x + 1) == {x: 7}
    assert _majority(["aaaa", "zzzz", "qqqq"]) == 2  # no agreement: the last one
    assert _majority(["abcdefgh", "abcdefgx", "zzzz"]) in (0, 1)


def test_user_selector_overrides_the_technique():
    x = trace.node(3, trainable=True)
    seen = []

    def selector(candidates):
        seen.append([type(c) for c in candidates])
        return 0

    llm = ScriptedLLM(by_temperature(x.py_name))
    optimizer = OptoPrimeMulti([x], llm=llm, selector=selector)
    assert run(optimizer, x + 1) == {x: 10}
    assert seen == [[Candidate] * 3] and llm.calls == 3
    optimizer.selector = lambda candidates: {x.py_name: 11}
    assert run(optimizer, x + 1) == {x: 11}


def test_terminate_is_only_the_whole_reply_and_unparsable_candidates_are_skipped():  # B8
    x = trace.node(3, trainable=True)
    replies = ["TERMINATE", "no json here", suggest(x.py_name, 6, "not TERMINATE yet")]
    lock = threading.Lock()
    it = iter(replies)

    def reply(messages, **options):
        with lock:
            return next(it)

    optimizer = OptoPrimeMulti([x], llm=ScriptedLLM(reply), selection_technique="last_of_n")
    assert run(optimizer, x + 1) == {x: 6}
    assert sum(c.terminate for c in optimizer.candidates) == 1
    assert sum(c.parse_error is not None for c in optimizer.candidates) == 1


def test_all_terminate_ends_the_step_and_all_unparsable_is_a_parse_failure():
    x = trace.node(3, trainable=True)
    done = OptoPrimeMulti([x], llm=ScriptedLLM(default="TERMINATE"))
    assert run(done, x + 1) == {} and done.last_step.terminated
    bad = OptoPrimeMulti([x], llm=ScriptedLLM(default="nothing"))
    assert run(bad, x + 1) == {} and bad.last_step.parse_error
    strict = OptoPrimeMulti([x], llm=ScriptedLLM(default="nothing"), ignore_extraction_error=False)
    with pytest.raises(SuggestionParseError):
        run(strict, x + 1)


def test_failed_requests_are_recorded_and_total_failure_raises():
    x = trace.node(3, trainable=True)
    calls = []
    lock = threading.Lock()

    def flaky(messages, **options):
        with lock:
            calls.append(1)
            n = len(calls)
        if n == 1:
            raise ValueError("boom")
        return suggest(x.py_name, 5)

    from opto.utils.llm.retry import RetryPolicy

    optimizer = OptoPrimeMulti(
        [x],
        llm=ScriptedLLM(flaky, retry=RetryPolicy(max_retries=0)),
        selection_technique="last_of_n",
    )
    assert run(optimizer, x + 1) == {x: 5}
    assert sum(c.error is not None for c in optimizer.candidates) == 1
    broken = OptoPrimeMulti(
        [x], llm=ScriptedLLM([ValueError("down")] * 9, retry=RetryPolicy(max_retries=0))
    )
    with pytest.raises(Exception, match="down"):
        run(broken, x + 1)


def test_per_step_overrides_and_validation():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM(by_temperature(x.py_name))
    optimizer = OptoPrimeMulti([x], llm=llm, selection_technique="last_of_n")
    run(optimizer, x + 1, num_responses=2, temperature_min_max=[0.2, 0.4])
    assert [c.temperature for c in optimizer.candidates] == [0.4, 0.2]
    for bad in (
        {"generation_technique": "nope"},
        {"selection_technique": "nope"},
        {"num_responses": 0},
        {"temperature_min_max": [1.0, 0.5]},
        {"generation_technique": "multi_llm"},
        {"llm_profiles": ["a"], "llm_weights": [1, 2]},
    ):
        with pytest.raises(ValueError):
            OptoPrimeMulti([x], llm=llm, **bad)


def test_no_feedback_means_no_call_and_state_is_json(tmp_path):  # B8: executor of 0 workers
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM(by_temperature(x.py_name))
    optimizer = OptoPrimeMulti([x], llm=llm)
    assert optimizer.step() == {} and llm.calls == 0
    run(optimizer, x + 1)
    path = optimizer.save(tmp_path / "multi.json")
    fresh = OptoPrimeMulti([x], llm=ScriptedLLM([]))
    fresh.load(path)
    assert fresh.candidate_log == json.loads(json.dumps(optimizer.candidate_log))
    assert len(fresh.candidate_log[-1]["candidates"]) == 3
    assert optimizer.log[-1]["candidates"] and optimizer.log[-1]["response"]


def test_weighted_order_is_proportional():
    order = _weighted_order(["a", "b"], [2, 1], 6)
    assert order.count(0) == 4 and order.count(1) == 2


def test_loop_drives_a_program_to_its_target():
    """Candidates step by different amounts; the judge reads #Feedback and picks the
    candidate closest to the target."""
    import re

    def reply(messages, **options):
        user = messages[-1]["content"]
        target = int(re.search(r"should be (-?\d+)", user).group(1))
        if JUDGE in messages[0]["content"]:
            values = [int(v) for v in re.findall(r'"suggestion": \{"\w+": (-?\d+)\}', user)]
            best = min(range(len(values)), key=lambda i: abs(values[i] * 2 - target))
            return json.dumps({"best": best + 1})
        name, value = re.search(r"\(int\) (\w+)=(-?\d+)", user.split("\n#Variables\n")[1]).groups()
        step = 1 + int(options["temperature"] * 8)
        direction = 1 if int(value) * 2 < target else -1
        return suggest(name, int(value) + direction * step)

    x = trace.node(0, trainable=True)
    optimizer = OptoPrimeMulti([x], llm=ScriptedLLM(reply), num_responses=3)
    for _ in range(10):
        out = x * 2
        if out.data == 46:
            break
        run(optimizer, out, f"the output is {out.data}; it should be 46")
    assert x.data == 23


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.integers(min_value=1, max_value=5))
def test_judge_and_expert_parsers_never_raise(text, count):
    index = _chosen_index(text, count)
    assert index is None or 0 <= index < count
    experts = _string_list(text)
    assert all(isinstance(e, str) and e for e in experts)


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ('{"best": 2}', 1),
        ('{"best": "3"}', 2),
        ("Candidate #1 wins", 0),
        ("2", 1),
        ('{"best": 9}', None),
        ("none", None),
        ('{"best": true}', None),
    ],
)
def test_chosen_index_cases(text, index):
    assert _chosen_index(text, 3) == index


def test_reference_call_llm_and_select_candidate_forms():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM([["a", "b"]])
    optimizer = OptoPrimeMulti([x], llm=llm, selection_technique="last_of_n")
    assert optimizer.call_llm("sys", "user", num_responses=2, temperature=0.3) == ["a", "b"]
    assert llm.requests[0].options["n"] == 2 and llm.requests[0].options["temperature"] == 0.3
    chosen = optimizer.select_candidate([suggest(x.py_name, 1), "junk", suggest(x.py_name, 2)])
    assert chosen.suggestion == {x.py_name: 2}
    with pytest.raises(ValueError, match="down"):
        OptoPrimeMulti([x], llm=ScriptedLLM([ValueError("down")])).call_llm("s", "u")


def test_a_selected_candidate_cut_off_in_its_suggestion_records_the_cut_value():
    x = trace.node(3, trainable=True)
    y = trace.node("a", trainable=True)
    cut = f'{{"reasoning": "r", "suggestion": {{"{x.py_name}": 7, "{y.py_name}": "a long str'
    optimizer = OptoPrimeMulti(
        [x, y], llm=ScriptedLLM(lambda messages, **options: cut), selection_technique="last_of_n"
    )
    assert run(optimizer, x + 1) == {x: 7}
    assert optimizer.selected.cut_off == y.py_name
    assert "cut off" in optimizer.last_step.rejected[y.py_name]
    assert y.data == "a"


def test_the_constructor_takes_the_candidate_search_settings_declared_once(caplog):
    import inspect
    import logging

    from opto.optimizers.candidates import CandidateSearch

    shown = inspect.signature(OptoPrimeMulti).parameters
    settings = inspect.signature(CandidateSearch).parameters
    assert list(shown)[:3] == ["parameters", "llm", "args"] and list(shown)[-1] == "kwargs"
    assert list(shown)[3:-1] == list(settings)  # every setting, with its default and type
    for name, setting in settings.items():
        assert shown[name].kind is shown[name].KEYWORD_ONLY
        assert (shown[name].default, shown[name].annotation) == (
            setting.default,
            setting.annotation,
        )
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM([])
    # OptoPrime's keywords pass on, next to the settings, in any order
    optimizer = OptoPrimeMulti(
        [x], llm, num_responses=5, objective="the objective", max_workers=2, max_tokens=77
    )
    assert (optimizer.objective, optimizer.max_tokens) == ("the objective", 77)
    assert (optimizer.search.num_responses, optimizer.search.max_workers) == (5, 2)
    assert optimizer.search.generation_technique == "temperature_variation"
    assert optimizer.llm is llm and optimizer.parameters == [x]
    with pytest.raises(ValueError, match="max_workers"):  # the search checks its settings
        OptoPrimeMulti([x], llm, max_workers=0)
    # other positional arguments and unknown keywords are OptoPrime's: logged and ignored,
    # like every optimizer's
    with caplog.at_level(logging.WARNING, logger="opto.optimizers.optimizer"):
        OptoPrimeMulti([x], llm, "stray", num_respnses=4)
    assert "'stray'" in caplog.text and "num_respnses" in caplog.text
