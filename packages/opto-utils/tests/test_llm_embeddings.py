"""Embeddings: the offline n-gram vectorizer and litellm's embedding call over real HTTP."""

from __future__ import annotations

import importlib.util
import logging
import math

import pytest
from opto.utils import track_usage
from opto.utils.llm import (
    AuthenticationError,
    LiteLLMEmbedder,
    LLMConfigurationError,
    MalformedResponseError,
    NgramEmbedder,
    RetryPolicy,
    embed,
    get_embedder,
)
from opto.utils.llm import embeddings as embeddings_module
from opto.utils.testing import OpenAIServer, ServerReply
from opto.utils.usage import BudgetExceeded

PROMPT = "You are a helpful assistant. Answer briefly and cite the source of each claim."

# -- the offline n-gram vectorizer ------------------------------------------------------------


def test_ngram_vectors_are_pinned_unit_vectors():
    # Pinned: the vectors must not change across runs, machines or Python versions (a
    # resumed search compares them with vectors computed before the restart).
    (vector,) = NgramEmbedder(dimensions=8)(["ab"])
    s = 1 / math.sqrt(6)
    assert vector == pytest.approx([-s, 0.0, 0.0, 0.0, -2 * s, 0.0, s, 0.0])
    a, b = NgramEmbedder()([PROMPT, "Solve it."])
    assert math.fsum(v * v for v in a) == pytest.approx(1.0)
    assert a == NgramEmbedder()([PROMPT])[0]
    assert math.fsum(v * v for v in b) == pytest.approx(1.0)


def test_ngram_distance_orders_near_duplicates_before_distinct_texts():
    base, near, far = embed([PROMPT, PROMPT.replace("briefly", "briefy"), "Solve 2 + 2 = ?"])
    assert math.dist(base, near) < 0.5 < 1.0 < math.dist(base, far)
    assert math.dist(base, base) == 0.0


def test_ngram_edge_cases_and_errors():
    assert embed([""], "ngram", dimensions=4) == [[0.0, 0.0, 0.0, 0.0]]
    assert embed(["ABC"], "ngram") == embed(["abc"], "ngram")
    assert embed(["ABC"], NgramEmbedder(lowercase=False)) != embed(["abc"], "ngram")
    assert embed([]) == []
    with pytest.raises(TypeError, match=r"wrap a single text as \[text\]"):
        embed("one text")
    with pytest.raises(TypeError, match="must be str"):
        embed([3])
    with pytest.raises(ValueError, match="dimensions must be a positive int"):
        NgramEmbedder(dimensions=0)
    with pytest.raises(ValueError, match="min_n <= max_n"):
        NgramEmbedder(min_n=3, max_n=2)


def test_default_is_the_ngram_vectorizer_logged_once(monkeypatch, caplog):
    monkeypatch.delenv(embeddings_module.EMBEDDING_MODEL_ENV, raising=False)
    monkeypatch.setattr(
        embeddings_module, "_DEFAULT_LOGGED", type(embeddings_module._DEFAULT_LOGGED)()
    )
    with caplog.at_level(logging.INFO, logger=embeddings_module.__name__):
        assert isinstance(get_embedder(), NgramEmbedder)
        assert isinstance(get_embedder(), NgramEmbedder)
    notes = [r for r in caplog.records if "n-gram vectorizer" in r.getMessage()]
    assert len(notes) == 1 and embeddings_module.EMBEDDING_MODEL_ENV in notes[0].getMessage()


def test_the_environment_names_the_default_model(monkeypatch):
    monkeypatch.setenv(embeddings_module.EMBEDDING_MODEL_ENV, "openai/text-embedding-3-small")
    embedder = get_embedder()
    assert isinstance(embedder, LiteLLMEmbedder)
    assert embedder.model_name == "openai/text-embedding-3-small"
    assert isinstance(get_embedder("ngram"), NgramEmbedder)
    custom = lambda texts: [[1.0] for _ in texts]
    assert get_embedder(custom) is custom
    with pytest.raises(LLMConfigurationError, match="callable texts -> vectors"):
        get_embedder(3)  # type: ignore[arg-type]


# -- litellm over a loopback OpenAI-compatible server -------------------------------------------

needs_litellm = pytest.mark.skipif(
    importlib.util.find_spec("litellm") is None, reason="the litellm extra is not installed"
)


def _by_length(request):
    return ServerReply.embeddings(
        [[float(len(text)), 1.0] for text in request["input"]], prompt_tokens=len(request["input"])
    )


def _embedder(server: OpenAIServer, sleeps: list[float], **kwargs) -> LiteLLMEmbedder:
    retry = RetryPolicy(max_retries=2, base_delay=0.01, jitter=0.0, sleep=sleeps.append)
    return LiteLLMEmbedder(
        "openai/test-embedding", api_base=server.base_url, api_key="sk-test", retry=retry, **kwargs
    )


@needs_litellm
def test_litellm_embeddings_in_batches_with_usage():
    sleeps: list[float] = []
    with OpenAIServer(default=_by_length) as server, track_usage() as usage:
        vectors = embed(
            ["a", "bb", "ccc"],
            "openai/test-embedding",
            api_base=server.base_url,
            api_key="sk-test",
            batch_size=2,
            retry=RetryPolicy(max_retries=0, sleep=sleeps.append),
        )
    assert vectors == [[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]]
    assert [r["input"] for r in server.requests] == [["a", "bb"], ["ccc"]]
    assert {r["_path"] for r in server.requests} == {"/v1/embeddings"}
    assert server.requests[0]["model"] == "test-embedding"
    assert server.requests[0]["_headers"]["authorization"] == "Bearer sk-test"
    assert usage.calls == 2 and usage.prompt_tokens == 3 and usage.completion_tokens == 0


@needs_litellm
def test_litellm_embeddings_retry_transient_errors_and_type_the_rest():
    sleeps: list[float] = []
    with OpenAIServer(default=_by_length) as server:
        server.enqueue(ServerReply.error(503))
        assert _embedder(server, sleeps)(["xy"]) == [[2.0, 1.0]]
        assert len(server.requests) == 2 and len(sleeps) == 1
        server.enqueue(ServerReply.error(401, "bad key"))
        with pytest.raises(AuthenticationError):
            _embedder(server, sleeps)(["xy"])
        assert len(server.requests) == 3  # not retried
        server.enqueue(*[ServerReply.embeddings([[1.0]])] * 3)  # one vector for two texts
        with track_usage() as usage, pytest.raises(MalformedResponseError, match="1 embeddings"):
            _embedder(server, sleeps)(["a", "b"])
        assert usage.errors == 1


@needs_litellm
def test_litellm_embeddings_stop_at_the_budget_before_sending():
    with OpenAIServer(default=_by_length) as server:
        with track_usage(max_calls=1):
            _embedder(server, [])(["a"])
            with pytest.raises(BudgetExceeded, match="max_calls=1"):
                _embedder(server, [])(["b"])
        assert len(server.requests) == 1


@needs_litellm
def test_litellm_embeddings_name_a_missing_key_before_any_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAIServer(default=_by_length) as server:
        embedder = LiteLLMEmbedder("openai/test-embedding", api_base=server.base_url)
        with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
            embedder(["a"])
        assert server.requests == []
