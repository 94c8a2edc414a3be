"""Structured output: normalize `response_format` and, for backends that cannot enforce a
JSON schema, put the schema into the prompt instead (other formats, such as
`{"type": "json_object"}`, are passed through for the provider to handle)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["json_schema_of", "normalize_response_format", "schema_in_prompt"]


def normalize_response_format(response_format: Any) -> Any:
    """Turn a pydantic model class into OpenAI's `json_schema` dict; other values unchanged."""
    schema = getattr(response_format, "model_json_schema", None)
    if isinstance(response_format, type) and callable(schema):
        return {
            "type": "json_schema",
            "json_schema": {"name": response_format.__name__, "schema": schema()},
        }
    return response_format


def json_schema_of(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema asked for by an OpenAI-style `response_format`, if any."""
    if not isinstance(response_format, Mapping):
        return None
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return dict(schema) if isinstance(schema, Mapping) else None
    schema = response_format.get("schema")
    return dict(schema) if isinstance(schema, Mapping) else None


def schema_in_prompt(
    messages: Sequence[Mapping[str, Any]], schema: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Messages with an instruction to reply with JSON matching `schema` appended to the
    system message (or prepended as one)."""
    instruction = (
        "Reply with a single JSON object that conforms to this JSON schema, and nothing "
        f"else:\n{json.dumps(schema, sort_keys=True)}"
    )
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
        out[0]["content"] = f"{out[0]['content']}\n\n{instruction}"
    else:
        out.insert(0, {"role": "system", "content": instruction})
    return out
