"""Test doubles for code that talks to LLMs: `ScriptedLLM`, `DummyLLM` and a local
OpenAI-compatible HTTP server (`OpenAIServer`) for testing real HTTP clients offline.

All of them are ordinary opto LLMs / servers: they go through the same pipeline (cache,
budgets, retry, ledger) as real backends, so tests exercise the real code paths.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
from opto.utils.concurrency import start_thread
from opto.utils.errors import OptoError
from opto.utils.llm.base import AbstractModel
from opto.utils.llm.retry import RetryPolicy
from opto.utils.llm.types import ChatResponse, Usage

__all__ = [
    "DummyLLM",
    "OpenAIServer",
    "RecordedRequest",
    "ScriptExhausted",
    "ScriptedLLM",
    "ServerReply",
]

#: Retries at once: scripted failures exercise the retry logic without waiting.
INSTANT_RETRY = RetryPolicy(base_delay=0.0, max_delay=0.0, jitter=0.0)

Reply = str | Sequence[str] | ChatResponse | BaseException
Script = Iterable[Reply] | Callable[..., Reply]


class ScriptExhausted(OptoError, AssertionError):
    """A `ScriptedLLM` was asked more often than it has replies (and has no default)."""


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """One request a test double received: the messages and the options sent."""

    messages: tuple[Mapping[str, Any], ...] = attrs.field(converter=tuple)
    options: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def text(self) -> str:
        """All message contents joined by newlines (what rules are matched against)."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)

    @property
    def last(self) -> str:
        """Content of the last message."""
        return str(self.messages[-1].get("content", "")) if self.messages else ""


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def _reply_texts(reply: Any) -> list[str]:
    """The choice texts of a scripted reply (a string or a list of strings)."""
    if isinstance(reply, str):
        return [reply]
    if isinstance(reply, (list, tuple)) and all(isinstance(t, str) for t in reply):
        return list(reply)
    msg = (
        "a ScriptedLLM reply must be a string, a list of strings, a ChatResponse or an "
        f"exception instance, not {type(reply).__name__}: {reply!r:.100}"
    )
    raise TypeError(msg)


class ScriptedLLM(AbstractModel):
    """An LLM that answers from a script and records every request.

    Args:
        script: a list of replies used in order, or a function called with
            `(messages, **options)` returning the reply. A reply is a string, a list of
            strings (one choice each), a `ChatResponse`, or an exception instance to raise.
        rules: `(regex, reply)` pairs tried before the script, in order: the first pattern
            found in the request's text (all message contents) gives the reply; a callable
            reply is called with the `re.Match`.
        default: the reply once the script is used up (otherwise `ScriptExhausted`).
        cost_per_call: USD recorded per call (None: unknown cost); also the estimate each
            request reserves against `max_usd`.
        **kwargs: `AbstractModel` options (model, cache, retry, …). Retries are instant.

    Token counts are estimated (≈4 characters per token) so budgets work in tests.
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        rules: Sequence[tuple[str | re.Pattern[str], Reply | Callable[[re.Match[str]], Reply]]]
        | None = None,
        default: Reply | None = None,
        cost_per_call: float | None = None,
        model: str = "scripted",
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, retry=retry or INSTANT_RETRY, **kwargs)
        self._function = script if callable(script) else None
        self._queue = list(script) if script is not None and not callable(script) else []
        self._rules = [(re.compile(p) if isinstance(p, str) else p, r) for p, r in rules or ()]
        self.default = default
        self.cost_per_call = cost_per_call
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        """Requests received so far (retried attempts count)."""
        return len(self.requests)

    @property
    def remaining(self) -> int:
        """Scripted replies not used yet."""
        return len(self._queue)

    def _pick(self, request: RecordedRequest) -> Reply:
        for pattern, reply in self._rules:
            match = pattern.search(request.text)
            if match is not None:
                return reply(match) if callable(reply) else reply
        if self._function is not None:
            return self._function(list(request.messages), **request.options)
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
        if self.default is not None:
            return self.default
        msg = (
            f"ScriptedLLM ran out of replies after {len(self.requests)} requests; "
            f"last request: {request.last[:200]!r}. Add replies or pass default=..."
        )
        raise ScriptExhausted(msg)

    def _estimate_cost(
        self, messages: list[dict[str, Any]], options: dict[str, Any], prompt_tokens: int
    ) -> float:
        return self.cost_per_call or 0.0

    def _complete(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> ChatResponse:
        request = RecordedRequest(messages=messages, options=dict(options))
        with self._lock:
            self.requests.append(request)
        reply = self._pick(request)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, ChatResponse):
            return reply
        texts = _reply_texts(reply)
        usage = Usage(
            prompt_tokens=_tokens(request.text),
            completion_tokens=sum(_tokens(t) for t in texts),
            cost_usd=self.cost_per_call,
        )
        return ChatResponse.from_text(texts, model=self.model_name, usage=usage)

    async def _acomplete(
        self, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> ChatResponse:
        return self._complete(messages, options)


class DummyLLM(AbstractModel):
    """The reference's test double: wraps `callable(*args, **kwargs) -> str`.

    The callable receives `messages=` and the call's options and returns the reply text.
    """

    def __init__(
        self, callable: Callable[..., str], reset_freq: float | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("model", "dummy")
        kwargs.setdefault("retry", INSTANT_RETRY)
        super().__init__(**kwargs)
        self.callable = callable
        self.reset_freq = reset_freq

    def _complete(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> ChatResponse:
        reply = self.callable(messages=messages, **options)
        return ChatResponse.from_text(reply, model=self.model_name)


# --- a local OpenAI-compatible HTTP server --------------------------------------------------


@attrs.frozen(kw_only=True)
class ServerReply:
    """One scripted HTTP reply of `OpenAIServer`. Build with the class methods."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    delay: float = 0.0
    byte_interval: float = 0.0

    @classmethod
    def ok(
        cls,
        content: str | Sequence[str] = "ok",
        *,
        prompt_tokens: int = 7,
        completion_tokens: int = 3,
        model: str = "fake-model",
        delay: float = 0.0,
    ) -> ServerReply:
        """A chat completion with usage; several contents give several choices."""
        contents = [content] if isinstance(content, str) else list(content)
        payload = {
            "id": "chatcmpl-opto-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
                for i, text in enumerate(contents)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return cls(body=json.dumps(payload).encode(), delay=delay)

    @classmethod
    def error(
        cls, status: int, message: str = "scripted error", *, retry_after: float | None = None
    ) -> ServerReply:
        """An OpenAI-style error body with `status` (and a `Retry-After` header if given)."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        body = {"error": {"message": message, "type": "server_error", "code": status}}
        return cls(status=status, body=json.dumps(body).encode(), headers=headers)

    @classmethod
    def slow(cls, seconds: float, content: str = "late") -> ServerReply:
        """A success that only starts after `seconds` (to trigger client timeouts)."""
        return cls.ok(content, delay=seconds)

    @classmethod
    def trickle(cls, byte_interval: float, content: str = "trickled") -> ServerReply:
        """A success whose body is sent one byte every `byte_interval` seconds (each read
        succeeds, so only an overall deadline stops a client from waiting for all of it)."""
        return attrs.evolve(cls.ok(content), byte_interval=byte_interval)

    @classmethod
    def embeddings(
        cls,
        vectors: Sequence[Sequence[float]],
        *,
        prompt_tokens: int = 5,
        model: str = "fake-model",
    ) -> ServerReply:
        """An embeddings reply (`/v1/embeddings`): one float vector per input, with usage."""
        payload = {
            "object": "list",
            "model": model,
            "data": [
                {"object": "embedding", "index": i, "embedding": [float(v) for v in vector]}
                for i, vector in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        return cls(body=json.dumps(payload).encode())

    @classmethod
    def malformed(cls) -> ServerReply:
        """A 200 whose body is not valid JSON."""
        return cls(body=b'{"id": "chatcmpl-broken", "choices": [')

    @classmethod
    def empty_choices(cls, model: str = "fake-model") -> ServerReply:
        """A 200 completion with an empty `choices` list."""
        payload = {"id": "chatcmpl-empty", "object": "chat.completion", "model": model,
                   "created": int(time.time()), "choices": [],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}}  # fmt: skip
        return cls(body=json.dumps(payload).encode())


class OpenAIServer:
    """An OpenAI-compatible chat and embeddings server on 127.0.0.1 (random port) for tests.

    `POST .../chat/completions` and `POST .../embeddings` are answered in arrival order from
    the queue filled by `enqueue(...)`, then from `default` (a `ServerReply`, or a function
    of the request JSON returning one; `ServerReply.embeddings` builds embedding replies). Every request is
    recorded in `requests` (the parsed JSON body plus `_path` and `_headers`, whose
    names are lower-cased). Use as a
    context manager; `base_url` is what clients take as `api_base`/`base_url`.
    """

    def __init__(
        self, default: ServerReply | Callable[[dict[str, Any]], ServerReply] | None = None
    ) -> None:
        self.default = default if default is not None else ServerReply.ok()
        self.requests: list[dict[str, Any]] = []
        self._queue: list[ServerReply] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>/v1`."""
        if self._httpd is None:
            msg = "the server is not running: use `with OpenAIServer() as server:`"
            raise RuntimeError(msg)
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def enqueue(self, *replies: ServerReply) -> None:
        """Queue replies for the next requests, in order."""
        with self._lock:
            self._queue.extend(replies)

    def _next(self, request: dict[str, Any]) -> ServerReply:
        with self._lock:
            self.requests.append(request)
            if self._queue:
                return self._queue.pop(0)
        return self.default(request) if callable(self.default) else self.default

    def start(self) -> OpenAIServer:
        """Start serving in a daemon thread."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _send(self, reply: ServerReply) -> None:
                if reply.delay and server._stopping.wait(reply.delay):
                    return
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if not reply.byte_interval:
                        self.wfile.write(reply.body)
                        return
                    self.wfile.flush()
                    for index in range(len(reply.body)):
                        if server._stopping.wait(reply.byte_interval):
                            self.close_connection = True
                            return
                        self.wfile.write(reply.body[index : index + 1])
                        self.wfile.flush()
                except OSError:  # the client gave up (timeout) and closed the socket
                    self.close_connection = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    request = json.loads(raw or b"{}")
                except ValueError:
                    request = {"_raw": raw.decode("utf-8", "replace")}
                request["_path"] = self.path
                request["_headers"] = {k.lower(): v for k, v in self.headers.items()}
                if not self.path.rstrip("/").endswith(("/chat/completions", "/embeddings")):
                    self._send(ServerReply.error(404, f"no route {self.path}"))
                    return
                self._send(server._next(request))

            def do_GET(self) -> None:
                models = {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
                self._send(ServerReply(body=json.dumps(models).encode()))

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._stopping.clear()
        self._thread = start_thread(
            httpd.serve_forever, poll_interval=0.05, name="opto-openai-server"
        )
        return self

    def stop(self) -> None:
        """Stop serving and release the port (slow replies are abandoned)."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
