"""Tolerant parsing of XML-style LLM replies (``<reasoning>…</reasoning><variable>…``).

Small models write the tags loosely: text around them, nested blocks of the same tag,
``name="…"`` attributes instead of a ``<name>`` child, a reasoning that is never closed,
any letter case. These helpers accept all of that and never raise for text input.
"""

from __future__ import annotations

import re
from typing import Any

from opto.trace.utils import is_code_name

__all__ = [
    "extract_first_top_level_block",
    "extract_reasoning_and_remainder",
    "extract_top_level_blocks",
    "extract_xml_like_data",
    "unclosed_block_name",
]

_ATTRIBUTE = re.compile(r"""([A-Za-z_][\w.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")


def _tag_pattern(tag: str) -> re.Pattern[str]:
    """An opening (``attrs`` group) or closing (``close`` group) ``tag``, any letter case."""
    name = re.escape(tag)
    return re.compile(
        rf"<\s*(?:/\s*{name}\s*(?P<close>)>|{name}(?P<attrs>(?:\s[^<>]*)?)>)", re.IGNORECASE
    )


def _blocks(text: str, tag: str) -> list[tuple[str, str, int, int]]:
    """Top-level ``<tag …>inner</tag>`` blocks as ``(attributes, inner, start, end)``.

    A depth counter keeps nested blocks of the same tag inside their parent's text;
    closers without an opener are ignored and an opener that is never closed gives no block.
    """
    found: list[tuple[str, str, int, int]] = []
    depth = 0
    attributes = ""
    start = inner_start = 0
    for match in _tag_pattern(tag).finditer(text):
        if match.group("close") is None:
            if depth == 0:
                attributes = match.group("attrs") or ""
                start, inner_start = match.start(), match.end()
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0:
                found.append((attributes, text[inner_start : match.start()], start, match.end()))
    return found


def extract_top_level_blocks(text: str, tag: str) -> list[str]:
    """Inner text of every top-level ``<tag>…</tag>`` block of ``text``, in order."""
    return [inner for _, inner, _, _ in _blocks(text, tag)]


def extract_first_top_level_block(text: str, tag: str) -> str | None:
    """Inner text of the first top-level ``<tag>…</tag>`` block, or None."""
    blocks = _blocks(text, tag)
    return blocks[0][1] if blocks else None


def extract_reasoning_and_remainder(text: str, tag: str = "reasoning") -> tuple[str, str]:
    """Split a reply into its reasoning and the text after it.

    A closed ``<tag>`` block gives its stripped content and the text after the block. An
    opened but unclosed tag gives the text up to the next tag (the reasoning ran into the
    answer) and the rest, so the answer is still parsed. Without the tag the reasoning is empty and the whole text remains.
    """
    blocks = _blocks(text, tag)
    if blocks:
        _, inner, _, end = blocks[0]
        return inner.strip(), text[end:]
    opener = next((m for m in _tag_pattern(tag).finditer(text) if m.group("close") is None), None)
    if opener is None:
        return "", text
    rest = text[opener.end() :]
    cut = re.search(r"<\s*[A-Za-z]", rest)
    if cut is None:
        return rest.strip(), ""
    return rest[: cut.start()].strip(), rest[cut.start() :]


def _attribute(attributes: str, key: str) -> str | None:
    for match in _ATTRIBUTE.finditer(attributes):
        if match.group(1).lower() == key.lower():
            return next(value for value in match.group(2, 3, 4) if value is not None)
    return None


def extract_xml_like_data(
    text: str,
    reasoning_tag: str = "reasoning",
    improved_variable_tag: str = "variable",
    name_tag: str = "name",
    value_tag: str = "value",
) -> dict[str, Any]:
    """Parse an XML-style reply into ``{"reasoning": str, "variables": {name: str}}``.

    Each top-level ``<variable>`` block after the reasoning gives its first top-level
    ``<name>`` (or a ``name="…"`` attribute of the tag) and ``<value>``; blocks missing
    either, or with a blank name, are skipped. Names and values are stripped; a later block
    for the same name wins; blank values of code parameters (``__code…``) are dropped.
    Text around the tags is ignored. Never raises for a ``str`` input.
    """
    reasoning, remainder = extract_reasoning_and_remainder(text, reasoning_tag)
    variables: dict[str, str] = {}
    for attributes, inner, _, _ in _blocks(remainder, improved_variable_tag):
        name = extract_first_top_level_block(inner, name_tag)
        if name is None:
            name = _attribute(attributes, name_tag)
        value = extract_first_top_level_block(inner, value_tag)
        if name is None or value is None or not name.strip():
            continue
        name, value = name.strip(), value.strip()
        if is_code_name(name) and not value:
            continue
        variables[name] = value
    return {"reasoning": reasoning, "variables": variables}


def unclosed_block_name(text: str, tag: str, name_tag: str) -> str | None:
    """The ``<name_tag>`` of a last ``<tag>`` block that never closes (a reply cut off at
    ``max_tokens``), ``""`` when its name is unknown; None when every block closes."""
    opening = list(re.finditer(rf"<{re.escape(tag)}\b[^>]*>", text))
    if not opening:
        return None
    rest = text[opening[-1].end() :]
    if f"</{tag}>" in rest:
        return None
    quoted = re.escape(name_tag)
    name = re.search(rf"<{quoted}>(.*?)</{quoted}>", rest, re.DOTALL)
    return name.group(1).strip() if name else ""
