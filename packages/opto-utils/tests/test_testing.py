"""ScriptedLLM, DummyLLM and the local OpenAI-compatible server behave as documented."""

from __future__ import annotations

import asyncio
import json
import pickle
import urllib.error
import urllib.request

import pytest
from opto.utils.llm import ChatResponse, RateLimitError
from opto.utils.testing import (
    DummyLLM,
    OpenAIServer,
    ScriptedLLM,
    ScriptExhausted,
    ServerReply,
)

USER = [{"role": "user", "content": "hello"}]


def test_scripted_replies_in_order_and_records_requests():
    llm = ScriptedLLM(["one", "two"])
    assert llm(messages=USER).choices[0].message.content == "one"
    assert llm(messages=USER, temperature=0.5).content == "two"
    assert llm.calls == 2 and llm.remaining == 0
    assert llm.requests[1].options == {"temperature": 0.5}
    assert llm.requests[0].messages[0]["content"] == "hello"


def test_scripted_exhaustion_raises_unless_default():
    llm = ScriptedLLM(["only"])
    llm(messages=USER)
    with pytest.raises(ScriptExhausted, match="ran out of replies"):
        llm(messages=USER)
    assert ScriptedLLM([], default="fallback")(messages=USER).content == "fallback"


def test_scripted_function_of_the_request():
    llm = ScriptedLLM(lambda messages, **options: f"{messages[-1]['content']}|{options['n']}")
    assert llm(messages=USER, n=2).content == "hello|2"


def test_scripted_rules_match_regex_before_the_script():
    llm = ScriptedLLM(
        ["scripted"],
        rules=[
            (r"capital of (\w+)", lambda m: f"capital:{m.group(1)}"),
            ("ping", "pong"),
        ],
    )
    assert llm(messages=[{"role": "user", "content": "ping"}]).content == "pong"
    question = [{"role": "user", "content": "what is the capital of France?"}]
    assert llm(messages=question).content == "capital:France"
    assert llm(messages=USER).content == "scripted"


def test_scripted_multiple_choices_and_chat_responses():
    canned = ChatResponse.from_text("canned", model="m")
    llm = ScriptedLLM([["a", "b"], canned])
    reply = llm(messages=USER, n=2)
    assert [c.message.content for c in reply.choices] == ["a", "b"]
    assert llm(messages=USER).content == "canned"


def test_scripted_exception_is_retried_when_transient():
    llm = ScriptedLLM([RateLimitError("slow down"), "after retry"])
    assert llm(messages=USER).content == "after retry"
    assert llm.calls == 2


def test_scripted_async():
    llm = ScriptedLLM(["x", "y"])

    async def main() -> list[str]:
        return [(await llm.acall(messages=USER)).content for _ in range(2)]

    assert asyncio.run(main()) == ["x", "y"]


def test_scripted_usage_estimates_tokens_and_cost():
    reply = ScriptedLLM(["a reply of some length"], cost_per_call=0.25)(messages=USER)
    assert reply.usage.prompt_tokens >= 1 and reply.usage.completion_tokens >= 1
    assert reply.usage.cost_usd == 0.25


def test_scripted_llm_pickles():
    llm = ScriptedLLM(["a", "b"])
    llm(messages=USER)
    clone = pickle.loads(pickle.dumps(llm))
    assert clone(messages=USER).content == "b"


def test_dummy_llm_reference_api():
    seen = {}

    def reply(*args, **kwargs):
        seen.update(kwargs)
        return "dummy says hi"

    llm = DummyLLM(reply)
    response = llm(messages=USER, max_tokens=10)
    assert response.choices[0].message.content == "dummy says hi"
    assert seen["messages"] == USER and seen["max_tokens"] == 10


def _post(url: str, body: dict) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_server_scripted_replies_and_recording(openai_server: OpenAIServer):
    assert openai_server.base_url.startswith("http://127.0.0.1:")
    openai_server.enqueue(
        ServerReply.error(429, retry_after=2),
        ServerReply.error(500),
        ServerReply.malformed(),
        ServerReply.empty_choices(),
        ServerReply.ok(["a", "b"], prompt_tokens=11, completion_tokens=2),
    )
    status, headers, _ = _post(openai_server.base_url, {"model": "m", "messages": USER})
    assert status == 429 and headers["Retry-After"] == "2"
    assert _post(openai_server.base_url, {"messages": USER})[0] == 500
    status, _, body = _post(openai_server.base_url, {"messages": USER})
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)
    assert json.loads(_post(openai_server.base_url, {})[2])["choices"] == []
    payload = json.loads(_post(openai_server.base_url, {})[2])
    assert [c["message"]["content"] for c in payload["choices"]] == ["a", "b"]
    assert payload["usage"] == {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
    # the queue is used up: the default reply follows
    assert (
        json.loads(_post(openai_server.base_url, {})[2])["choices"][0]["message"]["content"] == "ok"
    )
    assert openai_server.requests[0]["model"] == "m"
    assert openai_server.requests[0]["_path"] == "/v1/chat/completions"


def test_server_default_can_be_a_function_of_the_request():
    with OpenAIServer(lambda req: ServerReply.ok(req["messages"][-1]["content"].upper())) as s:
        body = json.loads(_post(s.base_url, {"messages": USER})[2])
    assert body["choices"][0]["message"]["content"] == "HELLO"


def test_server_requires_start():
    with pytest.raises(RuntimeError, match="not running"):
        OpenAIServer().base_url


@pytest.mark.parametrize("bad", [None, {"choices": [{"message": {"content": "x"}}]}, 42])
def test_scripted_reply_of_an_unsupported_type_is_a_clear_error(bad):
    # A dict used to become one choice per key ("choices") and None a bare
    # "'NoneType' object is not iterable".
    llm = ScriptedLLM(lambda messages, **options: bad)
    with pytest.raises(TypeError, match="ScriptedLLM reply must be"):
        llm(messages=USER)
    with pytest.raises(TypeError, match="ScriptedLLM reply must be"):
        ScriptedLLM([["a", 3]])(messages=USER)
