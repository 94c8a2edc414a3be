"""The `LLMError` family and the mapping from provider exceptions onto it.

Backends raise these after the last retry, with the provider's exception as `__cause__`, so
callers can catch one hierarchy whatever the provider. `transient` says whether a retry may
help (timeouts, connection errors, 429, 5xx, malformed replies).
"""

from __future__ import annotations

import time
from typing import Any

from opto.utils.errors import OptoError

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ContextWindowExceededError",
    "InvalidMessageError",
    "LLMConfigurationError",
    "LLMConnectionError",
    "LLMConnectionRefusedError",
    "LLMError",
    "LLMTimeoutError",
    "MalformedResponseError",
    "RateLimitError",
    "ServerError",
    "classify_exception",
    "parse_retry_after",
]


class LLMError(OptoError):
    """A call to a language model failed.

    Attributes: `model` (model id), `status` (HTTP status when known), `retry_after`
    (seconds the provider asked us to wait, when it did), `attempts` (calls made).
    """

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.status = status
        self.retry_after = retry_after
        self.attempts = attempts


class LLMTimeoutError(LLMError):
    """The provider did not answer within the timeout. Raise `timeout=` if replies are long."""

    transient = True


class LLMConnectionError(LLMError):
    """The provider could not be reached (DNS, refused connection, reset). Check `api_base`
    and the network."""

    transient = True


class LLMConnectionRefusedError(LLMConnectionError):
    """Nothing accepts connections at the server's host and port: the server is not
    running, or `api_base` names the wrong host or port. Not retried."""

    transient = False


class RateLimitError(LLMError):
    """The provider answered 429 (rate limit or quota). Slow down or raise your quota."""

    transient = True


class ServerError(LLMError):
    """The provider answered 5xx. Usually temporary."""

    transient = True


class MalformedResponseError(LLMError):
    """The provider's reply could not be read (invalid JSON, no choices). Often temporary."""

    transient = True


class AuthenticationError(LLMError):
    """The provider rejected the credentials (401/403). Set the provider's API key."""


class BadRequestError(LLMError):
    """The provider rejected the request (4xx): fix the model name or options."""


class ContextWindowExceededError(BadRequestError):
    """The prompt plus requested completion exceed the model's context window."""


class InvalidMessageError(BadRequestError):
    """A message cannot be sent as it is (e.g. a string holding a lone UTF-16 surrogate,
    which no provider accepts). Raised before any request; never retried. Clean the text,
    e.g. `text.encode("utf-8", "replace").decode("utf-8")`."""


class LLMConfigurationError(LLMError):
    """No usable LLM is configured, or its configuration is invalid (a missing client
    setting, an unknown model). Never retried."""


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` / `retry-after` headers (delta or HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
    except (AttributeError, TypeError, ValueError):
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


def _headers_of(exc: BaseException) -> Any:
    for name in ("litellm_response_headers", "headers"):
        headers = getattr(exc, name, None)
        if headers is not None:
            return headers
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None)


# Class names used by the OpenAI SDK, litellm and httpx, checked along the MRO so that
# no SDK has to be imported to classify its exceptions.
# "TimeoutError" also catches asyncio's and concurrent.futures' own classes before Python 3.11.
_TIMEOUT_NAMES = frozenset(
    {"APITimeoutError", "Timeout", "TimeoutException", "ReadTimeout", "TimeoutError"}
)
_CONNECTION_NAMES = frozenset({"APIConnectionError", "ConnectError", "RemoteProtocolError"})
_CONTEXT_NAMES = frozenset({"ContextWindowExceededError"})
_MALFORMED_NAMES = frozenset({"JSONDecodeError", "ValidationError"})


# Top-level packages whose otherwise unrecognised exceptions still count as provider errors.
_PROVIDER_PACKAGES = frozenset(
    {"litellm", "openai", "anthropic", "httpx", "httpcore", "aiohttp", "requests", "urllib3"}
)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it wraps (`__cause__`/`__context__`), outermost first."""
    chain = [exc]
    inner: BaseException | None = exc.__cause__ or exc.__context__
    while inner is not None and len(chain) < 9 and inner not in chain:
        chain.append(inner)
        inner = inner.__cause__ or inner.__context__
    return chain


def _endpoint(chain: list[BaseException]) -> str | None:
    """`host:port` of the request the innermost exception in `chain` that keeps one (httpx
    does) was about; outer wrappers may hold a placeholder request."""
    for item in reversed(chain):
        try:
            url = item.request.url  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):  # httpx raises RuntimeError when unset
            continue
        host = getattr(url, "host", None)
        if host:
            port = getattr(url, "port", None) or {"http": 80, "https": 443}.get(
                str(getattr(url, "scheme", "")), ""
            )
            return f"{host}:{port}" if port else str(host)
    return None


def _is_client_setup_error(exc: BaseException) -> bool:
    """The OpenAI SDK raises its bare `OpenAIError` base class (never an API error) only
    for client configuration problems such as missing credentials."""
    cls = type(exc)
    return cls.__name__ == "OpenAIError" and cls.__module__.split(".")[0] == "openai"


def _refused(chain: list[BaseException], text: str, kwargs: dict[str, Any]) -> LLMError:
    where = _endpoint(chain)
    target = f"{where} refused the connection" if where else "the server refused the connection"
    msg = f"{target}: is the server running, and is api_base's host and port right? ({text})"
    return LLMConnectionRefusedError(msg, **kwargs)


def classify_exception(exc: BaseException, *, model: str | None = None) -> LLMError | None:
    """Map a provider exception onto the `LLMError` family (does not raise).

    Uses the exception's type (its MRO names) and HTTP status, never its message text.
    Returns None for exceptions that are not provider errors (bugs in user code, test
    assertions…): those must propagate unchanged.
    """
    if isinstance(exc, LLMError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    # SDKs re-wrap transport failures (litellm reports a refused connection as a 500);
    # the original exception further down the chain tells what really happened.
    wrapped = _chain(exc)
    chain = {cls.__name__ for item in wrapped for cls in type(item).__mro__}
    status = _status_of(exc)
    text = f"{type(exc).__name__}: {exc}"
    kwargs: dict[str, Any] = {"model": model, "status": status}
    if any(_is_client_setup_error(item) for item in wrapped):
        return LLMConfigurationError(text, **kwargs)
    if any(isinstance(item, ConnectionRefusedError) for item in wrapped):
        return _refused(wrapped, text, kwargs)
    if names & _CONTEXT_NAMES:
        return ContextWindowExceededError(text, **kwargs)
    if chain & _TIMEOUT_NAMES or isinstance(exc, TimeoutError):
        return LLMTimeoutError(text, **kwargs)
    if chain & _CONNECTION_NAMES or isinstance(exc, ConnectionError):
        return LLMConnectionError(text, **kwargs)
    if status == 429 or "RateLimitError" in names:
        return RateLimitError(text, retry_after=parse_retry_after(_headers_of(exc)), **kwargs)
    if status is not None and status >= 500:
        return ServerError(text, retry_after=parse_retry_after(_headers_of(exc)), **kwargs)
    if status in (401, 403) or "AuthenticationError" in names:
        return AuthenticationError(text, **kwargs)
    if status is not None and 400 <= status < 500:
        return BadRequestError(text, **kwargs)
    if names & _MALFORMED_NAMES:
        return MalformedResponseError(text, **kwargs)
    if "InternalServerError" in names or "ServiceUnavailableError" in names:
        return ServerError(text, **kwargs)
    if status is not None or type(exc).__module__.split(".")[0] in _PROVIDER_PACKAGES:
        return LLMError(text, **kwargs)
    return None
