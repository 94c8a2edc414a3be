"""The LLM protocol: response types, error mapping, retry policy and the call pipeline."""

from __future__ import annotations

import asyncio
import pickle
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opto.utils.llm import (
    AbstractModel,
    AuthenticationError,
    BadRequestError,
    ChatModel,
    ChatResponse,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    MalformedResponseError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    Usage,
)
from opto.utils.llm.errors import classify_exception, parse_retry_after
from opto.utils.llm.retry import acall_with_retry, call_with_retry
from opto.utils.llm.types import response_from_openai
from opto.utils.testing import ScriptedLLM

USER = [{"role": "user", "content": "hi"}]


# --- types -----------------------------------------------------------------------------------


def test_response_from_openai_dict_with_usage():
    raw = {
        "model": "m1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2},
    }
    r = response_from_openai(raw, cost_usd=0.5, latency_s=1.5)
    assert r.choices[0].message.content == "x" and r.model == "m1"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (4, 2, 6)
    assert r.usage.cost_usd == 0.5 and r.usage.latency_s == 1.5 and not r.cached
    assert r.raw is raw


def test_response_from_objects_and_strings():
    obj = SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content="hey"))])
    assert response_from_openai(obj).content == "hey"
    assert response_from_openai("plain").content == "plain"
    with pytest.raises(TypeError, match="choices"):
        response_from_openai(42)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(["choices", "message", "content", "usage", "prompt_tokens", "index",
                          "completion_tokens", "role", "finish_reason", "model"])  # fmt: skip
SHAPED = st.recursive(
    JSON, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FIELDS, inner, max_size=5),
    max_leaves=15,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(SHAPED)
def test_response_parsing_only_raises_type_error(raw):
    try:
        r = response_from_openai(raw)
    except TypeError:
        return
    assert isinstance(r, ChatResponse)
    assert all(c.message.content is None or isinstance(c.message.content, str) for c in r.choices)
    assert r.usage.prompt_tokens >= 0 and r.usage.completion_tokens >= 0
    assert isinstance(r.model, str)


def test_chat_response_round_trips_through_dict():
    r = ChatResponse.from_text(["a", "b"], model="m", usage=Usage(prompt_tokens=3, cost_usd=0.1))
    again = ChatResponse.from_dict(r.to_dict())
    assert again == r
    assert [c.index for c in again.choices] == [0, 1]


def test_any_callable_is_a_chat_model():
    assert isinstance(ScriptedLLM(["x"]), ChatModel)
    assert isinstance(lambda messages: None, ChatModel)


# --- errors ----------------------------------------------------------------------------------


def _exc(name: str, status: int | None = None, headers: dict | None = None) -> Exception:
    cls = type(name, (Exception,), {"__module__": "openai"})
    exc = cls("boom")
    exc.status_code = status
    exc.response = SimpleNamespace(headers=headers or {})
    return exc


@pytest.mark.parametrize(
    ("name", "status", "expected"),
    [
        ("APITimeoutError", None, LLMTimeoutError),
        ("APIConnectionError", None, LLMConnectionError),
        ("RateLimitError", 429, RateLimitError),
        ("InternalServerError", 500, ServerError),
        ("Whatever", 503, ServerError),
        ("AuthenticationError", 401, AuthenticationError),
        ("BadRequestError", 400, BadRequestError),
        ("APIError", None, LLMError),
    ],
)
def test_classify_by_type_and_status(name, status, expected):
    error = classify_exception(_exc(name, status), model="m")
    assert type(error) is expected and error.model == "m" and error.status == status


def test_wrapped_transport_errors_are_found_in_the_chain():
    wrapper = _exc("InternalServerError", 500)
    wrapper.__cause__ = _exc("ConnectError")
    assert type(classify_exception(wrapper)) is LLMConnectionError
    plain = _exc("InternalServerError", 500)
    plain.__context__ = ValueError("unrelated")
    assert type(classify_exception(plain)) is ServerError


def test_transient_flags():
    assert all(c.transient for c in (LLMTimeoutError, LLMConnectionError, RateLimitError,
                                     ServerError, MalformedResponseError))  # fmt: skip
    assert not AuthenticationError.transient and not BadRequestError.transient


def test_non_provider_exceptions_are_not_wrapped():
    assert classify_exception(ValueError("user bug")) is None
    assert isinstance(classify_exception(TimeoutError()), LLMTimeoutError)


def test_retry_after_parsing():
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after(None) is None
    error = classify_exception(_exc("RateLimitError", 429, {"retry-after": "3"}))
    assert error.retry_after == 3.0


# --- retry -----------------------------------------------------------------------------------


def _flaky(failures: list[Exception], result: str = "done"):
    calls = []

    def fn():
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return result

    return fn, calls


def test_retry_transient_then_succeed_with_backoff():
    sleeps: list[float] = []
    policy = RetryPolicy(max_retries=3, base_delay=1.0, jitter=0.0, sleep=sleeps.append)
    fn, calls = _flaky([ServerError("a"), LLMTimeoutError("b")])
    assert call_with_retry(fn, policy) == "done"
    assert len(calls) == 3 and sleeps == [1.0, 2.0]


def test_retry_honours_retry_after_and_caps_delays():
    sleeps: list[float] = []
    policy = RetryPolicy(base_delay=0.1, max_delay=5.0, jitter=0.0, sleep=sleeps.append)
    fn, _ = _flaky([RateLimitError("r", retry_after=3.0), RateLimitError("r", retry_after=60)])
    call_with_retry(fn, policy)
    assert sleeps == [3.0, 5.0]


def test_jitter_stays_within_bounds():
    policy = RetryPolicy(base_delay=2.0, jitter=0.5)
    delays = [policy.delay(1, ServerError("x")) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1


def test_non_transient_errors_are_not_retried():
    fn, calls = _flaky([AuthenticationError("no key")])
    with pytest.raises(AuthenticationError):
        call_with_retry(fn, RetryPolicy(sleep=lambda s: None))
    assert len(calls) == 1


def test_last_failure_is_typed_with_provider_cause():
    provider = _exc("InternalServerError", 500)
    fn, calls = _flaky([provider] * 3)
    with pytest.raises(ServerError) as info:
        call_with_retry(fn, RetryPolicy(max_retries=2, sleep=lambda s: None), model="m")
    assert info.value.__cause__ is provider and info.value.attempts == 3 and len(calls) == 3


def test_async_retry():
    sleeps: list[float] = []

    async def asleep(s: float) -> None:
        sleeps.append(s)

    state = {"n": 0}

    async def fn():
        state["n"] += 1
        if state["n"] < 3:
            raise LLMConnectionError("down")
        return "up"

    policy = RetryPolicy(base_delay=0.5, jitter=0.0, asleep=asleep)
    assert asyncio.run(acall_with_retry(fn, policy)) == "up"
    assert sleeps == [0.5, 1.0]


# --- AbstractModel pipeline ------------------------------------------------------------------


class Reply:
    def __init__(self, text: str) -> None:
        self.choices = [SimpleNamespace(message=SimpleNamespace(content=text))]


def test_factory_protocol_of_the_reference():
    built = []

    def factory():
        built.append(1)
        return lambda messages, **kw: Reply(f"{len(messages)}:{sorted(kw)}")

    llm = AbstractModel(factory)
    assert len(built) == 1
    assert llm(messages=USER, max_tokens=3).content == "1:['max_tokens']"
    assert llm(USER).content == "1:[]"  # positional messages work too
    assert llm.create(messages=USER).content == "1:[]"


def test_reset_freq_rebuilds_the_model(monkeypatch):
    built = []
    llm = AbstractModel(lambda: built.append(1) or (lambda **kw: "x"), reset_freq=10)
    llm(messages=USER)
    assert len(built) == 1  # still fresh
    later = llm._init_time + 11
    monkeypatch.setattr("opto.utils.llm.base.time.monotonic", lambda: later)
    llm(messages=USER)
    assert len(built) == 2


def test_pickling_rebuilds_from_the_factory():
    llm = AbstractModel(_module_factory, model="picklable")
    clone = pickle.loads(pickle.dumps(llm))
    assert clone(messages=USER).content == "rebuilt" and clone.model_name == "picklable"


def _module_factory():
    return lambda **kw: "rebuilt"


def test_subclass_without_complete_explains():
    with pytest.raises(NotImplementedError, match="_complete"):
        AbstractModel()(messages=USER)


def test_messages_are_required():
    with pytest.raises(TypeError, match="messages"):
        ScriptedLLM(["x"])()


def test_default_options_merge_and_rollout_id_is_not_sent():
    llm = ScriptedLLM(["a", "b"], temperature=0.2, max_tokens=50)
    llm(messages=USER, temperature=0.9, rollout_id=3)
    assert llm.requests[0].options == {"temperature": 0.9, "max_tokens": 50}


def test_empty_choices_are_retried_then_typed():
    llm = ScriptedLLM([[], "fine"])
    assert llm(messages=USER).content == "fine"
    with pytest.raises(MalformedResponseError, match="no choices"):
        ScriptedLLM([[]] * 10, retry=RetryPolicy(max_retries=1, sleep=lambda s: None))(
            messages=USER
        )


class PromptOnly(ScriptedLLM):
    supports_json_schema = False


SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": {"type": "object", "required": ["x"]}},
}


def test_schema_goes_into_the_prompt_when_not_supported():
    llm = PromptOnly(["{}", "{}"])
    llm(messages=[{"role": "system", "content": "Be brief."}, *USER], response_format=SCHEMA_FORMAT)
    sent = llm.requests[0]
    assert "response_format" not in sent.options
    assert sent.messages[0]["content"].startswith("Be brief.")
    assert '"required": ["x"]' in sent.messages[0]["content"]
    llm(messages=USER, response_format={"type": "json_object"})  # not a schema: unchanged
    assert llm.requests[1].options["response_format"] == {"type": "json_object"}
    assert llm.requests[1].messages == tuple(USER)


def test_schema_passes_through_when_supported():
    llm = ScriptedLLM(["{}"])
    llm(messages=USER, response_format=SCHEMA_FORMAT)
    assert llm.requests[0].options["response_format"] == SCHEMA_FORMAT
    assert llm.requests[0].messages == tuple(USER)


def test_constructor_says_whether_schemas_are_enforced():
    llm = ScriptedLLM(["{}"], supports_json_schema=False)
    assert llm.supports_json_schema is False
    llm(messages=USER, response_format=SCHEMA_FORMAT)
    sent = llm.requests[0]
    assert "response_format" not in sent.options and "supports_json_schema" not in sent.options
    assert '"required": ["x"]' in sent.messages[0]["content"]


class Detecting(ScriptedLLM):
    """A backend that finds out itself whether schemas are enforced (here: no)."""

    detections = 0

    def _detect_json_schema(self) -> bool:
        type(self).detections += 1
        return False


def test_backend_detection_is_asked_once_and_the_constructor_wins():
    Detecting.detections = 0
    llm = Detecting(["{}", "{}"])
    llm(messages=USER, response_format=SCHEMA_FORMAT)
    llm(messages=USER, response_format=SCHEMA_FORMAT)
    assert Detecting.detections == 1
    assert all("response_format" not in r.options for r in llm.requests)
    forced = Detecting(["{}"], supports_json_schema=True)
    forced(messages=USER, response_format=SCHEMA_FORMAT)
    assert forced.requests[0].options["response_format"] == SCHEMA_FORMAT
    assert Detecting.detections == 1


def test_pydantic_response_format_becomes_a_json_schema():
    pydantic = pytest.importorskip("pydantic")

    class Answer(pydantic.BaseModel):
        x: int

    llm = ScriptedLLM(["{}"])
    llm(messages=USER, response_format=Answer)
    sent = llm.requests[0].options["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Answer"
    assert sent["json_schema"]["schema"]["properties"]["x"]["type"] == "integer"


def test_user_exceptions_propagate_unchanged():
    def broken(**kw):
        raise KeyError("bug in user code")

    with pytest.raises(KeyError):
        AbstractModel(lambda: broken)(messages=USER)


def test_latency_is_measured():
    r = ScriptedLLM(["x"])(messages=USER)
    assert r.usage.latency_s > 0
