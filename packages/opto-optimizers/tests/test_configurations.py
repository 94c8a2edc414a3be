"""OptoPrime's variants are configurations: an OptoPrime given the same prompt builder,
reply format and proposer behaves as the variant does; strategies own their settings and
state, travel with copies and forks, and reach ``step()``'s keyword arguments."""

import copy
import json
import threading

import pytest
from opto import trace
from opto.optimizers import OPRO, CompactOptoPrime, OptoPrime, OptoPrimeMulti
from opto.optimizers.candidates import CandidateSearch
from opto.optimizers.compact_prompt import CompactPrompt, CompactReplyFormat
from opto.optimizers.opro import OPROPrompt
from opto.optimizers.optoprime import DEFAULT_JSON_KEYS
from opto.optimizers.prompts import ProblemPrompt
from opto.optimizers.proposals import SingleReply
from opto.optimizers.utils import Delegated
from opto.trace.testing import one_step
from opto.utils.testing import ScriptedLLM
from opto.utils.usage import BudgetExceeded, track_usage


def suggest(name, value):
    return json.dumps({"reasoning": "r", "suggestion": {name: value}})


def test_optoprime_with_a_candidate_search_is_optoprimemulti():
    x = trace.node(3, trainable=True)
    barrier = threading.Barrier(3, timeout=60)

    def reply(messages, **options):
        barrier.wait()  # the three candidates are requested at once
        return suggest(x.py_name, int(options["temperature"] * 10))

    search = CandidateSearch(num_responses=3, selection_technique="last_of_n")
    optimizer = OptoPrime([x], llm=ScriptedLLM(reply), proposer=search)
    assert one_step(optimizer, x + 1, "larger") == {x: 0}
    assert [c.temperature for c in search.candidates] == [1.0, 0.5, 0.0]
    assert optimizer.last_step.llm_calls == 3 and optimizer.last_step.raw_reply
    assert len(optimizer.state_dict()["candidate_log"]) == 1


def test_a_candidate_search_holds_a_configured_optimizer_to_the_callers_budget():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM(lambda messages, **options: suggest(x.py_name, 7))
    optimizer = OptoPrime([x], llm=llm, proposer=CandidateSearch(num_responses=5, max_workers=5))
    with track_usage(max_calls=2) as scope, pytest.raises(BudgetExceeded):
        one_step(optimizer, x + 1, "larger")
    assert llm.calls == 2 and scope.requests == 2 and x.data == 3


def test_step_options_reach_the_strategy_that_names_them():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM(lambda messages, **options: suggest(x.py_name, 4))
    search = CandidateSearch(num_responses=3, selection_technique="last_of_n")
    optimizer = OptoPrime(
        [x], llm=llm, proposer=search, prompt_builder=OPROPrompt(), json_keys={"answer": None}
    )
    one_step(optimizer, x + 1, "larger", num_responses=2, score=0.25, unknown=1)
    assert len(search.candidates) == 2 and llm.calls == 2
    assert optimizer.prompt_builder.history.buffer[0]["score"] == 0.25
    assert "Current solution:" in llm.requests[0].last


def test_optoprime_with_opros_prompt_sends_opros_prompts():
    def prompts(make):
        x = trace.node(1, name="knob", trainable=True, description="a knob")
        llm = ScriptedLLM([suggest(x.py_name, 2)])
        one_step(make([x], llm), x * 2, "score: 0.5")
        return [m["content"].replace(x.py_name, "X") for m in llm.requests[0].messages]

    opro = prompts(lambda params, llm: OPRO(params, llm=llm))
    configured = prompts(
        lambda params, llm: OptoPrime(
            params, llm=llm, prompt_builder=OPROPrompt(), json_keys={"answer": None}
        )
    )
    assert configured == opro
    assert "scores better" in opro[0] and "score: 0.5" in opro[1]


def test_optoprime_with_the_compact_pieces_sends_compact_prompts():
    def request(configured):
        x = trace.node("hi", name="greeting", trainable=True)
        llm = ScriptedLLM([suggest(x.py_name, "hello")])
        if configured:
            choices = {x.py_name: ["hello", "hey"]}
            reply_format = CompactReplyFormat(DEFAULT_JSON_KEYS, choices)
            optimizer = OptoPrime(
                [x], llm=llm, prompt_builder=CompactPrompt(choices), reply_format=reply_format
            )
        else:
            optimizer = CompactOptoPrime([x], llm=llm, choices={x: ["hello", "hey"]})
        one_step(optimizer, x + "!", "say hello")
        sent = json.dumps([llm.requests[0].messages, llm.requests[0].options["response_format"]])
        return json.loads(sent.replace(x.py_name, "X"))

    messages, response_format = request(configured=False)
    assert request(configured=True) == [messages, response_format]
    assert "Choose the new value from:\n- hello\n- hey" in messages[1]["content"]
    schema = response_format["json_schema"]["schema"]
    assert list(schema["properties"]) == ["suggestion"]
    assert schema["properties"]["suggestion"]["properties"]["X"]["enum"] == ["hello", "hey"]


def test_strategies_must_be_strategies():
    x = trace.node(3, trainable=True)
    with pytest.raises(TypeError, match="prompt_builder must be a PromptBuilder"):
        OptoPrime([x], llm=ScriptedLLM([]), prompt_builder="opro")
    with pytest.raises(TypeError, match="proposer must be a ProposalStrategy"):
        OptoPrime([x], llm=ScriptedLLM([]), proposer=lambda *a: None)
    optimizer = OptoPrime([x], llm=ScriptedLLM([]))
    assert isinstance(optimizer.prompt_builder, ProblemPrompt)
    assert isinstance(optimizer.proposer, SingleReply)


def test_variant_settings_are_their_strategys_under_the_old_names():
    x = trace.node(3, trainable=True)
    multi = OptoPrimeMulti([x], llm=ScriptedLLM([]), num_responses=4)
    multi.num_responses = 2
    assert multi.proposer.num_responses == 2 and multi.search is multi.proposer
    opro = OPRO([x], llm=ScriptedLLM([]), max_num_solutions=3)
    opro.maximize = False
    assert opro.prompt_builder.maximize is False and opro.max_num_solutions == 3
    assert opro.history is opro.prompt_builder.history


def test_delegated_many_installs_one_delegated_attribute_per_name():
    class Part:
        size = 1
        label = "a"

    @Delegated.many("part", "size", "label")
    class Whole:
        def __init__(self):
            self.part = Part()

    whole = Whole()
    whole.size = 5
    assert whole.part.size == 5 and whole.label == "a"
    assert isinstance(Whole.size, Delegated) and (Whole.size.part, Whole.size.name) == (
        "part",
        "size",
    )
    twin = copy.deepcopy(whole)
    twin.label = "b"
    assert twin.part.label == "b" and whole.label == "a"
    for variant, part, names in [
        (OptoPrimeMulti, "proposer", ["num_responses", "selector", "candidate_log"]),
        (OPRO, "prompt_builder", ["history", "max_num_solutions", "maximize"]),
    ]:
        assert all(getattr(variant, name).part == part for name in names)


def test_delegated_many_refuses_names_it_would_break():
    with pytest.raises(TypeError, match="'not a name' is not an attribute name"):
        Delegated.many("part", "not a name")(type("Whole", (), {}))
    with pytest.raises(TypeError, match="Whole already defines 'size'"):
        Delegated.many("part", "size")(type("Whole", (), {"size": 3}))


def test_copies_and_forks_own_their_strategy_state_but_share_the_selector():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM(lambda messages, **options: suggest(x.py_name, 5))

    def selector(candidates):
        return candidates[0]

    multi = OptoPrimeMulti([x], llm=llm, selector=selector)
    one_step(multi, x + 1, "larger")
    twin = copy.deepcopy(multi)
    assert twin.selector is selector and twin.proposer is not multi.proposer
    assert twin.candidate_log == multi.candidate_log
    assert twin.candidate_log is not multi.candidate_log
    y = trace.node(3, trainable=True)
    opro = OPRO([x], llm=ScriptedLLM([suggest(x.py_name, 1)]))
    one_step(opro, x + 0, "score: 1")
    fork = opro.fork([y])
    fork.history.add({"variables": {}, "feedback": "", "score": None})
    assert len(opro.history) == 1 and len(fork.history) == 2


def test_optoprimemulti_keeps_the_summary_log_beside_the_log():
    x = trace.node(3, trainable=True)
    llm = ScriptedLLM(lambda messages, **options: suggest(x.py_name, 5))
    multi = OptoPrimeMulti([x], llm=llm, selection_technique="last_of_n")
    one_step(multi, x + 1, "larger")
    assert len(multi.log) == len(multi.summary_log) == 1
    assert multi.log[0]["candidates"] and multi.summary_log[0]["user_feedback"] == "larger"


def test_candidate_search_settings_are_checked_when_built_and_when_set():
    x = trace.node(3, trainable=True)
    with pytest.raises(ValueError, match="unknown technique 'best'"):
        CandidateSearch(selection_technique="best")
    with pytest.raises(ValueError, match="needs llm_profiles"):
        CandidateSearch(generation_technique="multi_llm")
    multi = OptoPrimeMulti([x], llm=ScriptedLLM([]))
    with pytest.raises(ValueError, match="num_responses must be a positive int"):
        multi.num_responses = 0
    with pytest.raises(ValueError, match="max_workers must be at least 1"):
        multi.max_workers = 0
    multi.temperature_min_max = [0.2, 0.4]
    assert multi.temperature_min_max == (0.2, 0.4) and multi.num_responses == 3


@pytest.mark.parametrize("variant", [OptoPrime, OPRO, CompactOptoPrime, OptoPrimeMulti])
def test_every_variant_offers_what_the_strategies_read(variant):
    import inspect

    from opto.optimizers.prompts import PromptHost
    from opto.optimizers.proposals import ProposalHost

    optimizer = variant([trace.node(3, trainable=True)], llm=ScriptedLLM([]))
    for protocol in (PromptHost, ProposalHost):
        members = set(protocol.__annotations__) | {
            name for name in vars(protocol) if not name.startswith("__") and name != "_is_protocol"
        }
        members -= {"_abc_impl", "_is_runtime_protocol"}
        for name in sorted(members):
            inspect.getattr_static(optimizer, name)  # AttributeError names what is missing
