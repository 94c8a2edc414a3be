"""Every optimizer works behind the ``Optimizer`` base the same way: constructor
conventions, backward/step/bypassing, step records, JSON state, deepcopy, and separate
copies running in parallel threads on one shared LLM."""

import copy
import json
import re
import threading

import pytest
from opto import trace
from opto.optimizers import OPRO, Optimizer, OptoPrime, OptoPrimeMulti, OptoPrimeV2, TextGrad
from opto.optimizers.opro import OPROv2
from opto.trace.propagators import GraphPropagator
from opto.trace.testing import one_step
from opto.utils.testing import ScriptedLLM

OPTIMIZERS = [OptoPrime, OptoPrimeV2, OptoPrimeMulti, TextGrad, OPRO, OPROv2]


def universal(messages, **options):
    """Answers every optimizer's prompt in its format with the value the feedback asks for."""
    system = messages[0]["content"]
    text = "\n".join(m["content"] for m in messages)
    if "compare candidate responses" in system:
        return '{"reasoning": "the first", "best": 1}'
    name, value = re.findall(r"set (\w+) to (-?\d+)", text)[-1]  # the latest feedback
    if "gradient engine" in system:
        return f"set {name} to {value}"
    if "IMPROVED_VARIABLE" in system:
        return f"<IMPROVED_VARIABLE>{value}</IMPROVED_VARIABLE>"
    if "XML/HTML" in system:
        return (
            f"<reasoning>asked for {value}</reasoning>"
            f"<variable><name>{name}</name><value>{value}</value></variable>"
        )
    return json.dumps({"reasoning": f"asked for {value}", "suggestion": {name: int(value)}})


def feedback_step(optimizer, x, target, **kwargs):
    return one_step(optimizer, x + 1, f"set {x.py_name} to {target}", **kwargs)


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_same_constructor_conventions_and_step(cls):
    x = trace.node(0, trainable=True, description="a knob")
    llm = ScriptedLLM(universal)
    propagator = GraphPropagator()
    optimizer = cls([x], llm, propagator=propagator)
    assert isinstance(optimizer, Optimizer)
    assert optimizer.llm is llm and optimizer.propagator is propagator
    assert feedback_step(optimizer, x, 5) == {x: 5}
    assert x.data == 5
    record = optimizer.last_step
    assert record.applied == {x.py_name: 5} and record.llm_calls >= 1 and record.raw_reply
    assert record.usage is not None and record.usage.prompt_tokens > 0
    update = feedback_step(optimizer, x, 9, bypassing=True)
    assert update == {x: 9} and x.data == 5 and optimizer.last_step.bypassed


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_state_is_json_and_loads_into_a_working_optimizer(cls, tmp_path):
    x = trace.node(0, trainable=True)
    optimizer = cls([x], llm=ScriptedLLM(universal))
    feedback_step(optimizer, x, 3)
    state = optimizer.state_dict()
    assert json.loads(json.dumps(state)) == state
    fresh = cls([x], llm=ScriptedLLM(universal))
    fresh.load(optimizer.save(tmp_path / "state.json"))
    assert fresh.step_count == 1 and fresh.last_step.applied == {x.py_name: 3}
    feedback_step(fresh, x, 4)
    assert x.data == 4 and fresh.step_count == 2


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_deepcopy_shares_parameters_and_llm_but_not_state(cls):
    x = trace.node(0, trainable=True)
    llm = ScriptedLLM(universal)
    optimizer = cls([x], llm=llm)
    feedback_step(optimizer, x, 2)
    twin = copy.deepcopy(optimizer)
    assert twin.parameters[0] is x and twin.llm is llm
    feedback_step(twin, x, 6)
    assert x.data == 6 and twin.step_count == 2 and optimizer.step_count == 1


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_separate_copies_run_in_parallel_threads(cls):
    llm = ScriptedLLM(universal)  # one shared LLM, as trainers do
    template = cls([trace.node(0, trainable=True)], llm=llm)
    errors = []
    results = {}
    start = threading.Barrier(4, timeout=60)

    def worker(i):
        try:
            x = trace.node(0, trainable=True, name=f"knob{i}")
            optimizer = copy.deepcopy(template)
            optimizer.parameters = [x]
            start.wait()
            for target in (10 * i + 1, 10 * i + 2, 10 * i + 3):
                feedback_step(optimizer, x, target)
            results[i] = (x.data, optimizer.step_count, [r.applied for r in optimizer.steps])
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for i in range(4):
        value, count, applied = results[i]
        assert value == 10 * i + 3 and count == 3
        assert [list(a.values())[0] for a in applied] == [10 * i + 1, 10 * i + 2, 10 * i + 3]
        assert all(list(a)[0].startswith(f"knob{i}") for a in applied)


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_no_feedback_skips_without_calling_the_llm(cls):  # B12
    llm = ScriptedLLM(universal)
    optimizer = cls([trace.node(0, trainable=True)], llm=llm)
    assert optimizer.step() == {}
    assert llm.calls == 0 and optimizer.last_step.skipped


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_parameters_are_validated(cls):
    with pytest.raises(ValueError):
        cls([], llm=ScriptedLLM(universal))
    with pytest.raises(TypeError):
        cls([1], llm=ScriptedLLM(universal))


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_every_optimizer_over_real_http(cls):
    """The same loop through an OpenAI-compatible HTTP server on loopback (CustomLLM)."""
    pytest.importorskip("openai")
    from opto.utils.llm import CustomLLM
    from opto.utils.testing import OpenAIServer, ServerReply

    def answer(request):
        return ServerReply.ok(universal(request["messages"]))

    with OpenAIServer(default=answer) as server:
        llm = CustomLLM("fake-model", base_url=server.base_url, api_key="test", cache=False)
        x = trace.node(0, trainable=True)
        optimizer = cls([x], llm=llm)
        assert feedback_step(optimizer, x, 12) == {x: 12}
        assert optimizer.last_step.usage.prompt_tokens > 0
        assert all(r["model"] == "fake-model" for r in server.requests)


@pytest.fixture
def no_llm_configured(monkeypatch):
    """No LLM reachable through `LLM()`: no environment, no provider key, no local model."""
    from opto.utils.llm import factory

    for name in ("OPTO_LLM_MODEL", "TRACE_LITELLM_MODEL", "TRACE_DEFAULT_LLM_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(factory, "env_model", lambda: None)
    monkeypatch.setattr(factory, "provider_default_model", lambda: None)
    monkeypatch.setattr(factory, "local_model_available", lambda: False)


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_without_an_llm_construction_works_and_the_first_call_fails(cls, no_llm_configured):
    from opto.utils.llm.errors import LLMConfigurationError

    x = trace.node(0, trainable=True)
    optimizer = cls([x])  # no LLM needed to build, copy or save an optimizer
    twin = copy.deepcopy(optimizer)
    assert json.loads(json.dumps(twin.state_dict())) == twin.state_dict()
    with pytest.raises(LLMConfigurationError, match="No LLM is configured"):
        feedback_step(optimizer, x, 5)
    assert x.data == 0
    optimizer.llm = ScriptedLLM(universal)  # configured later: the optimizer works
    assert feedback_step(optimizer, x, 5) == {x: 5}


def test_the_default_llm_is_built_once_on_first_use(monkeypatch):
    from opto.utils.llm import factory

    built = []

    def fake_resolve(**kwargs):
        built.append(kwargs)
        return ScriptedLLM(universal)

    monkeypatch.setattr(factory, "resolve", fake_resolve)
    x = trace.node(0, trainable=True)
    optimizer = OptoPrime([x])
    assert built == []
    assert feedback_step(optimizer, x, 3) == {x: 3}
    assert feedback_step(optimizer, x, 4) == {x: 4}
    assert len(built) == 1


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_deepcopy_together_with_its_llm_keeps_them_paired(cls):
    x = trace.node(0, trainable=True)
    llm = ScriptedLLM(universal)
    optimizer = cls([x], llm=llm)
    for pair in ((optimizer, llm), (llm, optimizer)):
        copied = copy.deepcopy(pair)
        twin, twin_llm = copied if copied[0].__class__ is cls else copied[::-1]
        assert twin.llm is twin_llm
        assert feedback_step(twin, x, 7) == {x: 7}
    copied = copy.deepcopy({"opt": optimizer, "llm": llm})
    assert copied["opt"].llm is copied["llm"]
