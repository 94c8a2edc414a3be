"""Text embeddings: `embed(texts, model=None) -> list[list[float]]`.

Two embedders share one protocol, `embedder(texts) -> vectors`:

* `NgramEmbedder` (the model name `"ngram"`): a deterministic hashing vectorizer of
  character n-grams, L2-normalized. It needs no network, no download and no extra, and
  gives the same vector for the same text on every machine and Python version, so it is
  the offline default. Texts that share most of their character n-grams are close.
* `LiteLLMEmbedder` (any other model name, e.g. `"openai/text-embedding-3-small"` or
  `"gemini/gemini-embedding-001"`): litellm's `embedding` call, with the same retry policy,
  hard timeout, budget reservation and usage ledger as chat calls (`BudgetExceeded`
  before a request that would pass a budget; typed `LLMError`s on failure).

`embed` picks the model from its argument, else `OPTO_EMBEDDING_MODEL`, else the n-gram
vectorizer (logged once, at INFO).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from opto.utils import usage as _usage
from opto.utils.concurrency import DeadlineExceeded, call_with_deadline
from opto.utils.llm.base import DEFAULT_TIMEOUT
from opto.utils.llm.errors import (
    AuthenticationError,
    LLMConfigurationError,
    LLMTimeoutError,
    MalformedResponseError,
)
from opto.utils.llm.retry import RetryPolicy, call_with_retry

__all__ = [
    "EMBEDDING_MODEL_ENV",
    "NGRAM_MODEL",
    "Embedder",
    "LiteLLMEmbedder",
    "NgramEmbedder",
    "embed",
    "get_embedder",
    "unit_vector",
]

logger = logging.getLogger(__name__)

#: The environment variable naming the default embedding model.
EMBEDDING_MODEL_ENV = "OPTO_EMBEDDING_MODEL"

#: The model name of the built-in n-gram vectorizer.
NGRAM_MODEL = "ngram"

#: What `embed` and POLCA accept as an embedder: a callable from texts to vectors.
Embedder = Callable[[Sequence[str]], list[list[float]]]

_DEFAULT_LOGGED = threading.Event()


def unit_vector(vector: Sequence[float]) -> list[float]:
    """`vector` scaled to Euclidean length 1 (the zero vector stays zero)."""
    values = [float(v) for v in vector]
    norm = math.sqrt(math.fsum(v * v for v in values))
    return [v / norm for v in values] if norm else values


class NgramEmbedder:
    """Hashing vectorizer of character n-grams (offline, deterministic), L2-normalized.

    Each text is lower-cased (unless `lowercase=False`), padded with one space on each
    side, and cut into every n-gram with `min_n <= n <= max_n`; each n-gram adds +1 or -1
    (by a bit of its CRC-32) to the coordinate its hash selects, so collisions cancel
    on average instead of adding up. The vector is scaled to unit length (an empty text
    is the zero vector). `dimensions` trades memory for fewer collisions.
    """

    model_name = NGRAM_MODEL

    def __init__(
        self, dimensions: int = 512, *, min_n: int = 2, max_n: int = 4, lowercase: bool = True
    ) -> None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise ValueError(f"dimensions must be a positive int, not {dimensions!r}")
        if not 1 <= min_n <= max_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got min_n={min_n}, max_n={max_n}")
        self.dimensions = dimensions
        self.min_n = min_n
        self.max_n = max_n
        self.lowercase = lowercase

    def __repr__(self) -> str:
        return (
            f"NgramEmbedder(dimensions={self.dimensions}, min_n={self.min_n}, "
            f"max_n={self.max_n}, lowercase={self.lowercase})"
        )

    def embed_one(self, text: str) -> list[float]:
        """The unit vector of one text."""
        if self.lowercase:
            text = text.lower()
        vector = [0.0] * self.dimensions
        if not text:
            return vector
        padded = f" {text} "
        grams = Counter(
            padded[start : start + n]
            for n in range(self.min_n, self.max_n + 1)
            for start in range(len(padded) - n + 1)
        )
        for gram, count in grams.items():
            value = zlib.crc32(gram.encode("utf-8"))
            vector[(value >> 1) % self.dimensions] += count if value & 1 else -count
        return unit_vector(vector)

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(_text(t)) for t in _texts(texts)]


class LiteLLMEmbedder:
    """litellm's `embedding` call for a hosted (or OpenAI-compatible local) model.

    Args:
        model: the litellm model id, e.g. `"openai/text-embedding-3-small"`.
        api_base, api_key: endpoint and credential (e.g. a vLLM or llama.cpp server).
        retry: the `RetryPolicy` for transient failures (default: `RetryPolicy()`).
        timeout: hard deadline in seconds per request.
        batch_size: texts per request (long lists are sent in several requests).
        **options: passed to `litellm.embedding` (e.g. `dimensions=256`).

    Every request reserves one call and its estimated tokens (about 4 characters each)
    against the active budgets and records its tokens, cost (litellm's price, unknown
    when litellm has none) and latency in the usage ledger.
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        batch_size: int = 64,
        **options: Any,
    ) -> None:
        if not model or not isinstance(model, str):
            raise LLMConfigurationError(
                "LiteLLMEmbedder needs a model id such as 'openai/text-embedding-3-small'"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size!r}")
        self.model_name = model
        self.api_base = api_base
        self.api_key = api_key
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = timeout
        self.batch_size = batch_size
        self.options = options
        self._client: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # rebuilt on first use
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LiteLLMEmbedder(model={self.model_name!r})"

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        items = [_text(t) for t in _texts(texts)]
        vectors: list[list[float]] = []
        for start in range(0, len(items), self.batch_size):
            vectors.extend(self._request(items[start : start + self.batch_size]))
        return vectors

    def _kwargs(self, batch: list[str]) -> dict[str, Any]:
        from opto.utils.llm.litellm_backend import request_kwargs

        kwargs = request_kwargs(self.model_name, self.timeout, self.api_base, self.api_key)
        kwargs.update(input=batch, **self.options)
        client = self._openai_client()
        if client is not None:
            kwargs["client"] = client
        return kwargs

    def _openai_client(self) -> Any:
        """For OpenAI-protocol models, an OpenAI client that never retries by itself.

        litellm's OpenAI embedding handler turns `max_retries=0` into its default of 2
        SDK retries and writes that onto any client it is given; this client's
        `max_retries` stays 0, which leaves retrying to `self.retry`. None for other providers (litellm builds their clients).
        """
        with self._lock:
            if self._client is None:
                from opto.utils.llm.litellm_backend import get_litellm

                try:
                    provider = get_litellm().get_llm_provider(
                        model=self.model_name, api_base=self.api_base
                    )[1]
                except Exception as exc:  # litellm raises for models it cannot route
                    raise LLMConfigurationError(
                        f"unknown embedding model {self.model_name!r}: name it as "
                        "'provider/model', e.g. 'openai/text-embedding-3-small'",
                        model=self.model_name,
                    ) from exc
                self._client = False
                if provider == "openai":
                    import openai

                    key = self.api_key or os.environ.get("OPENAI_API_KEY")
                    if not key:
                        raise AuthenticationError(
                            f"OPENAI_API_KEY is not set: embedding model {self.model_name!r} "
                            "needs it. Set it in the environment or pass api_key=...",
                            model=self.model_name,
                            attempts=0,
                        )

                    class _NoRetryOpenAI(openai.OpenAI):
                        # litellm sets `client.max_retries` from its own default: keep 0.
                        max_retries = property(lambda _self: 0, lambda _self, _value: None)

                    self._client = _NoRetryOpenAI(
                        api_key=key, base_url=self.api_base, max_retries=0, timeout=self.timeout
                    )
            return self._client or None

    def _request(self, batch: list[str]) -> list[list[float]]:
        from opto.utils.llm.litellm_backend import get_litellm

        litellm = get_litellm()
        tokens = sum(len(t) for t in batch) // 4 + 1
        attempts = 0
        started = time.monotonic()

        def send() -> Any:
            limit = self.timeout
            left = self.retry.remaining(started)
            if left is not None:
                limit = left if limit is None else min(limit, left)
            if limit is None:
                return litellm.embedding(**self._kwargs(batch))
            try:
                return call_with_deadline(
                    lambda: litellm.embedding(**self._kwargs(batch)), limit, name="opto-embed"
                )
            except DeadlineExceeded as exc:
                raise LLMTimeoutError(
                    f"{self.model_name!r} did not return embeddings within {limit:.3g}s; "
                    "raise timeout= if the batch is large",
                    model=self.model_name,
                ) from exc

        def attempt() -> tuple[list[list[float]], Any, float]:
            nonlocal attempts
            reservation = _usage.reserve(tokens, self._estimate_cost(tokens))
            attempts += 1
            begin = time.perf_counter()
            try:
                raw = send()
                vectors = _vectors(raw, len(batch), self.model_name)
            except BaseException:
                reservation.fail()
                raise
            latency = time.perf_counter() - begin
            reservation.commit(self._record(raw, tokens, latency, attempts))
            return vectors, raw, latency

        start = time.perf_counter()
        try:
            vectors, _, _ = call_with_retry(attempt, self.retry, model=self.model_name)
        except BaseException as exc:
            if attempts:
                _usage.record(
                    _usage.UsageRecord(
                        model=self.model_name,
                        latency_s=time.perf_counter() - start,
                        error=type(exc).__name__,
                        attempts=attempts,
                    )
                )
            raise
        return vectors

    def _estimate_cost(self, tokens: int) -> float:
        from opto.utils.llm.litellm_backend import get_litellm

        try:
            prompt_cost, _ = get_litellm().cost_per_token(
                model=self.model_name, prompt_tokens=tokens, completion_tokens=0
            )
        except Exception:  # litellm raises for models it has no price for
            return 0.0
        return float(prompt_cost)

    def _record(self, raw: Any, estimate: int, latency: float, attempts: int) -> Any:
        usage = _get(raw, "usage")
        prompt_tokens = _get(usage, "prompt_tokens") if usage is not None else None
        hidden = getattr(raw, "_hidden_params", None) or {}
        cost = hidden.get("response_cost")
        return _usage.UsageRecord(
            model=self.model_name,
            prompt_tokens=int(prompt_tokens) if prompt_tokens is not None else estimate,
            completion_tokens=0,
            cost_usd=None if cost is None else float(cost),
            latency_s=latency,
            attempts=attempts,
        )


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _vectors(raw: Any, expected: int, model: str) -> list[list[float]]:
    """The vectors of an embedding response, in input order; MalformedResponseError
    (retried) when the reply has not one float vector per input."""
    data = _get(raw, "data")
    try:
        rows = sorted(data, key=lambda row: int(_get(row, "index") or 0))
        vectors = [[float(v) for v in _get(row, "embedding")] for row in rows]
    except (TypeError, ValueError) as exc:
        raise MalformedResponseError(
            f"the embedding reply of {model!r} is not a list of float vectors", model=model
        ) from exc
    if len(vectors) != expected:
        raise MalformedResponseError(
            f"{model!r} returned {len(vectors)} embeddings for {expected} texts", model=model
        )
    return vectors


def _texts(texts: Sequence[str]) -> Sequence[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a list of texts; wrap a single text as [text]")
    return texts


def _text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"embed() texts must be str, not {type(text).__name__}")
    return text


def get_embedder(model: str | Embedder | None = None, **options: Any) -> Embedder:
    """The embedder for `model`: an embedder object as is, `"ngram"` (or None with no
    `OPTO_EMBEDDING_MODEL` set) the n-gram vectorizer, any other name `LiteLLMEmbedder`.

    `options` go to the embedder's constructor (`dimensions=` for the n-gram one;
    `api_base=`, `api_key=`, `retry=`, `timeout=` … for litellm).
    """
    if model is not None and not isinstance(model, str):
        if not callable(model):
            raise LLMConfigurationError(
                f"an embedding model is a model id or a callable texts -> vectors, not "
                f"{type(model).__name__}"
            )
        return model
    name = model or os.environ.get(EMBEDDING_MODEL_ENV, "").strip() or None
    if name is None:
        if not _DEFAULT_LOGGED.is_set():
            _DEFAULT_LOGGED.set()
            logger.info(
                "no embedding model configured: using the offline character n-gram "
                "vectorizer (set %s or pass model= for a hosted one)",
                EMBEDDING_MODEL_ENV,
            )
        return NgramEmbedder(**options)
    if name == NGRAM_MODEL:
        return NgramEmbedder(**options)
    return LiteLLMEmbedder(name, **options)


def embed(
    texts: Sequence[str], model: str | Embedder | None = None, **options: Any
) -> list[list[float]]:
    """Embed `texts` (one vector per text, in order) with `model` (see `get_embedder`).

    Raises `TypeError` for a bare string or non-str items, `LLMError` subclasses when a
    hosted model fails, `BudgetExceeded` before a request that would pass a budget.
    """
    return get_embedder(model, **options)(list(_texts(texts)))
