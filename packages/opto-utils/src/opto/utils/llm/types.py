"""Value types of the LLM protocol: the OpenAI-shaped `ChatResponse` and its usage.

Every backend returns a `ChatResponse`, so callers read `response.choices[0].message.content`
whatever the provider. Usage (tokens, cost, latency, cache flag) travels with the response.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = [
    "ChatModel",
    "ChatResponse",
    "Choice",
    "Message",
    "Usage",
    "response_from_openai",
]


@attrs.frozen(kw_only=True)
class Usage:
    """What one call consumed.

    `cost_usd` is None when the price of the model is unknown (never silently 0); a cache
    hit has `cached=True` and `cost_usd=0.0`.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0
    cached: bool = False

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens (OpenAI's `usage.total_tokens`)."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (every field, by name), used by the response cache."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class Message:
    """One chat message of a reply (`choices[i].message`)."""

    content: str | None
    role: str = "assistant"


@attrs.frozen(kw_only=True)
class Choice:
    """One candidate reply (`choices[i]`)."""

    message: Message
    index: int = 0
    finish_reason: str | None = None


@attrs.frozen(kw_only=True)
class ChatResponse:
    """An OpenAI-shaped chat completion with its usage.

    `raw` keeps the provider's own response object (not cached, not compared) for callers
    who need provider-specific fields.
    """

    choices: tuple[Choice, ...] = attrs.field(converter=tuple)
    model: str = ""
    usage: Usage = attrs.field(factory=Usage)
    raw: Any = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def from_text(
        cls, text: str | Sequence[str], *, model: str = "", usage: Usage | None = None
    ) -> ChatResponse:
        """Build a response from one reply text, or several (one choice each)."""
        texts = [text] if isinstance(text, str) else list(text)
        choices = tuple(
            Choice(message=Message(content=t), index=i, finish_reason="stop")
            for i, t in enumerate(texts)
        )
        return cls(choices=choices, model=model, usage=usage or Usage())

    @property
    def content(self) -> str | None:
        """Text of the first choice (None when there is no choice or no text)."""
        return self.choices[0].message.content if self.choices else None

    @property
    def cached(self) -> bool:
        """True when this response was served from the response cache."""
        return self.usage.cached

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (without `raw`), used by the response cache."""
        return {
            "model": self.model,
            "choices": [
                {
                    "index": c.index,
                    "finish_reason": c.finish_reason,
                    "message": {"role": c.message.role, "content": c.message.content},
                }
                for c in self.choices
            ],
            "usage": self.usage.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatResponse:
        """Inverse of `to_dict`."""
        choices = tuple(
            Choice(
                message=Message(
                    content=c["message"].get("content"),
                    role=c["message"].get("role", "assistant"),
                ),
                index=c.get("index", i),
                finish_reason=c.get("finish_reason"),
            )
            for i, c in enumerate(data.get("choices", ()))
        )
        return cls(
            choices=choices, model=data.get("model", ""), usage=Usage(**data.get("usage", {}))
        )


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Read a field from an object or a mapping (provider SDKs return either)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _count(value: Any) -> int:
    """A token count or index from a provider field; 0 when missing or not a number."""
    if isinstance(value, bool):
        return 0
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


def response_from_openai(
    obj: Any, *, model: str = "", cost_usd: float | None = None, latency_s: float = 0.0
) -> ChatResponse:
    """Convert any OpenAI-shaped reply (SDK object, litellm `ModelResponse`, dict) or a plain
    string into a `ChatResponse`.

    Raises `TypeError` when `obj` has no `choices` list; odd field values (missing usage,
    non-numeric counts) are tolerated.
    """
    if isinstance(obj, ChatResponse):
        return obj
    if isinstance(obj, str):
        return ChatResponse.from_text(obj, model=model, usage=Usage(latency_s=latency_s))
    raw_choices = _get(obj, "choices")
    if raw_choices is None or isinstance(raw_choices, (str, bytes, Mapping)):
        msg = f"expected an OpenAI-shaped response with a `choices` list, got {obj!r:.200}"
        raise TypeError(msg)
    try:
        raw_choices = list(raw_choices)
    except TypeError:
        msg = f"`choices` must be a list, got {type(raw_choices).__name__}"
        raise TypeError(msg) from None
    choices = []
    for i, c in enumerate(raw_choices):
        message = _get(c, "message")
        content = _get(message, "content")
        role = _get(message, "role")
        finish = _get(c, "finish_reason")
        choices.append(
            Choice(
                message=Message(
                    content=content
                    if content is None or isinstance(content, str)
                    else str(content),
                    role=role if isinstance(role, str) and role else "assistant",
                ),
                index=_count(_get(c, "index", i)) or i,
                finish_reason=finish if isinstance(finish, str) else None,
            )
        )
    raw_usage = _get(obj, "usage")
    usage = Usage(
        prompt_tokens=_count(_get(raw_usage, "prompt_tokens", 0)),
        completion_tokens=_count(_get(raw_usage, "completion_tokens", 0)),
        cost_usd=cost_usd,
        latency_s=latency_s,
    )
    name = _get(obj, "model")
    return ChatResponse(
        choices=tuple(choices),
        model=name if isinstance(name, str) and name else model,
        usage=usage,
        raw=obj,
    )


@runtime_checkable
class ChatModel(Protocol):
    """Anything usable as an LLM: `llm(messages=[...], **options)` returning an object with
    `.choices[0].message.content` (a `ChatResponse` for opto's own backends)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
