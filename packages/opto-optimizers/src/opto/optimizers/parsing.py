"""Tolerant parsing of LLM replies that should hold a JSON suggestion.

LLMs wrap JSON in code fences, surround it with prose, leave trailing commas, use single
quotes or Python literals (``True``/``None``), and put raw newlines inside strings. The
parser here accepts all of that, and nothing it is given makes it raise anything but
:class:`SuggestionParseError`.

A reply cut off inside its suggestion (it hit ``max_tokens``) yields the values that were
completely written; the one being written is dropped and named in ``ParsedReply.cut_off``.

``TERMINATE`` ends a step only when it is the whole reply (possibly fenced or quoted), never
when the word merely appears inside the reasoning.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

import attrs
from opto.trace.utils import is_code_name
from opto.utils.errors import OptoError

__all__ = [
    "ParsedReply",
    "SuggestionParseError",
    "is_terminate",
    "iter_json_objects",
    "load_json_like",
    "parse_suggestion_reply",
]

TERMINATE = "TERMINATE"

#: What a malformed text may make the decoders raise; turned into "cannot parse".
_DECODE_ERRORS = (
    ValueError,
    SyntaxError,
    TypeError,
    RecursionError,
    MemoryError,
    OverflowError,
)

_FENCE = re.compile(r"```[ \t]*[\w.+-]*[ \t]*\r?\n?(.*?)```", re.DOTALL)
_MAX_SPANS = 32
"""How many brace-delimited spans of one reply are tried (bounds the work on odd input)."""


class SuggestionParseError(OptoError, ValueError):
    """An LLM reply did not contain a usable suggestion.

    Attributes:
        raw: the reply text, unchanged.
    """

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.raw))


@attrs.frozen(kw_only=True)
class ParsedReply:
    """A parsed reply: the suggestion ``{variable name: value}`` and the text around it.

    ``terminate`` is True when the reply was exactly ``TERMINATE`` (then ``suggestion`` is
    empty). ``cut_off`` is None for a complete reply; for a reply cut off (e.g. at
    ``max_tokens``) inside the suggestion, ``suggestion`` holds only the completely written
    values and ``cut_off`` names the variable whose value was cut (``""`` when even its
    name was cut).
    """

    raw: str
    suggestion: dict[str, Any] = attrs.field(factory=dict)
    reasoning: str = ""
    answer: Any = None
    terminate: bool = False
    cut_off: str | None = None


def is_terminate(text: str) -> bool:
    """True when the whole reply is the word ``TERMINATE``.

    Surrounding whitespace, code fences, quotes and a final period are ignored; the word
    inside a longer text (e.g. in the reasoning) does not count.
    """
    stripped = text.strip()
    fence = _FENCE.fullmatch(stripped)
    if fence is not None:
        stripped = fence.group(1).strip()
    return stripped.strip("`'\" \t\r\n").rstrip(".").strip() == TERMINATE


# --- decoding JSON-like text ---------------------------------------------------------------


class _Quotes:
    """Follows a character-by-character scan through quoted strings (``"…"`` or ``'…'``,
    with backslash escapes)."""

    __slots__ = ("escaped", "quote")

    def __init__(self) -> None:
        self.quote = ""
        self.escaped = False

    def inside(self, char: str) -> bool:
        """Feed the next character; True when it belongs to a quoted string (its quotes
        included)."""
        if self.quote:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == self.quote:
                self.quote = ""
            return True
        if char in "\"'":
            self.quote = char
            return True
        return False


def _strip_trailing_commas(text: str) -> str:
    """``text`` without commas that directly precede ``}`` or ``]`` (outside strings)."""
    out: list[str] = []
    quotes = _Quotes()
    for index, char in enumerate(text):
        if not quotes.inside(char) and char == ",":
            following = index + 1
            while following < len(text) and text[following].isspace():
                following += 1
            if following < len(text) and text[following] in "}]":
                continue
        out.append(char)
    return "".join(out)


_LITERAL_NAMES = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}


_SURROGATE = re.compile("[\ud800-\udfff]")


def _joined_surrogates(text: str) -> str:
    """``text`` with each UTF-16 surrogate pair as the one character it encodes, as JSON
    decodes ``"\\ud800\\udc00"`` (a Python literal keeps the two halves apart); a lone
    half stays as it is."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")


def _literal(node: ast.AST) -> Any:
    """Evaluate a JSON-like Python expression: literals, containers, true/false/null."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return _joined_surrogates(node.value)
        if isinstance(node.value, (int, float, bool)) or node.value is None:
            return node.value
        raise ValueError(f"unsupported constant {node.value!r}")
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError("dict unpacking is not a literal")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Name) and node.id in _LITERAL_NAMES:
        return _LITERAL_NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _literal(node.operand)
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
    raise ValueError(f"not a literal: {type(node).__name__}")


def load_json_like(text: str) -> Any:
    """Decode JSON, tolerating trailing commas, single quotes, Python literals and raw
    control characters inside strings.

    Raises:
        ValueError: the text is not JSON-like.
    """
    try:
        return json.loads(text, strict=False)
    except _DECODE_ERRORS:
        pass
    repaired = _strip_trailing_commas(text)
    if repaired != text:
        try:
            return json.loads(repaired, strict=False)
        except _DECODE_ERRORS:
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes such as "\d" in LLM text
            tree = ast.parse(text.strip(), mode="eval")
        return _literal(tree.body)
    except _DECODE_ERRORS as error:
        raise ValueError(f"not JSON-like text: {error}") from None


def _brace_spans(text: str) -> Iterator[str]:
    """Top-level ``{...}`` spans of ``text`` (braces inside quoted strings ignored)."""
    depth = 0
    start = 0
    quotes = _Quotes()  # followed inside braces only: prose may hold apostrophes
    found = 0
    for index, char in enumerate(text):
        if depth and quotes.inside(char):
            continue
        if char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                yield text[start : index + 1]
                found += 1
                if found >= _MAX_SPANS:
                    return


def _truncated_object(text: str) -> str | None:
    """The complete members of a top-level object cut off mid-way (a reply that hit
    ``max_tokens``), closed with ``}``; ``""`` when no member is complete, None when the
    text holds no cut-off object.

    Only members followed by a top-level comma (or a value ending the text) are kept, so a
    value that was cut is dropped whole rather than kept half-written.
    """
    start = text.find("{")
    if start < 0:
        return None
    scanned = _scan_members(text, start)
    if isinstance(scanned, int):
        return None  # complete, not truncated
    commas, ends_inside = scanned
    if ends_inside:
        return text[start:].rstrip().rstrip(",") + "}"
    return text[start : commas[-1]] + "}" if commas else ""


_OBJECT_START = re.compile(r"\{(?=\s*[\"'])")
_MEMBER_KEY = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\s*:\s*""", re.DOTALL)


def _scan_members(text: str, start: int) -> tuple[list[int], bool] | int:
    """Scan the object opening at ``text[start]``: the positions of its top-level commas
    and whether the text ends directly inside it (not in a nested value or a string);
    the index of its closing brace when it closes (it was not cut off)."""
    depth = 0
    quotes = _Quotes()
    commas: list[int] = []
    for index in range(start, len(text)):
        char = text[index]
        if quotes.inside(char):
            continue
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index
        elif char == "," and depth == 1:
            commas.append(index)
    return commas, depth == 1 and not quotes.quote


def _key_name(text: str, position: int) -> str | None:
    """The quoted member name starting at ``position`` (after blanks), None if there is
    no complete ``"name":`` there."""
    match = _MEMBER_KEY.match(text, position)
    if match is None:
        return None
    return (match.group(1) if match.group(1) is not None else match.group(2)).strip()


def _cut_suggestion(text: str, suggestion_key: str) -> tuple[dict[str, Any], dict[Any, Any], str]:
    """For a reply cut off inside its ``suggestion_key`` object: the complete members of
    the outer object, the complete members of the suggestion, and the name of the variable
    whose value was cut (``""`` when no name is known, e.g. the cut fell inside a name).

    A suggestion member counts as complete only when a top-level comma follows it, or when
    it is the last member and its value visibly ended (a closed string, list or object);
    a number or literal at the very end may have been cut and is not kept.

    Raises:
        ValueError: the text is not an object cut off inside its suggestion object.
    """
    end = len(text.rstrip())
    position = 0
    for _ in range(_MAX_SPANS):  # top-level objects only: linear in the text's length
        opening = _OBJECT_START.search(text, position)
        if opening is None:
            break
        start = opening.start()
        scanned = _scan_members(text, start)
        if isinstance(scanned, int):
            position = scanned + 1
            continue
        commas, _ = scanned
        tail_start = commas[-1] + 1 if commas else start + 1
        key = _MEMBER_KEY.match(text, tail_start)
        if _key_name(text, tail_start) != suggestion_key or key is None:
            break
        inner_start = key.end()
        inner_scan = _scan_members(text, inner_start) if text.startswith("{", inner_start) else 0
        if isinstance(inner_scan, int):
            break
        inner_commas, ends_at_top = inner_scan
        try:
            outer = load_json_like(text[start:tail_start].rstrip().rstrip(",") + "}")
            members = [inner_start + 1, *(c + 1 for c in inner_commas)]
            complete_end = inner_commas[-1] if inner_commas else inner_start + 1
            last = text[members[-1] : end]
            if ends_at_top and last.endswith(('"', "'", "}", "]")):
                with contextlib.suppress(ValueError):
                    load_json_like("{" + last + "}")
                    complete_end = end
            suggestion = load_json_like(text[inner_start:complete_end].rstrip().rstrip(",") + "}")
        except ValueError:
            break
        if not isinstance(outer, dict) or not isinstance(suggestion, dict):
            break
        cut_name = "" if complete_end == end else (_key_name(text, members[-1]) or "")
        return outer, suggestion, cut_name
    raise ValueError("not an object cut off inside its suggestion")


def _candidates(text: str) -> Iterator[str]:
    """Texts that may be the JSON object, most likely first."""
    stripped = text.strip()
    yield stripped
    for match in _FENCE.finditer(text):
        yield match.group(1).strip()
    yield from _brace_spans(text)
    first, last = text.find("{"), text.rfind("}")
    if 0 <= first < last:
        yield text[first : last + 1]
    truncated = _truncated_object(text)
    if truncated:
        yield truncated


def iter_json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every JSON object (dict) found in ``text``: the whole text, fenced blocks, brace
    spans, the span from the first ``{`` to the last ``}``, and finally the complete
    members of an object that was cut off."""
    seen: set[str] = set()
    for candidate in _candidates(text):
        if not candidate.startswith("{") or candidate in seen:
            continue
        seen.add(candidate)
        try:
            value = load_json_like(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


# --- the suggestion -----------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, default=repr)


def _clean_suggestion(suggestion: dict[Any, Any]) -> dict[str, Any]:
    """Keys stripped; blank code entries dropped (an empty function is never meant)."""
    result: dict[str, Any] = {}
    for key, value in suggestion.items():
        name = str(key).strip()
        if not name:
            continue
        if is_code_name(name) and (value is None or (isinstance(value, str) and not value.strip())):
            continue
        result[name] = value
    return result


def parse_suggestion_reply(
    text: str,
    *,
    reasoning_key: str = "reasoning",
    answer_key: str | None = "answer",
    suggestion_key: str = "suggestion",
) -> ParsedReply:
    """Parse a reply asking for ``{reasoning, answer, suggestion: {name: value}}``.

    The object holding ``suggestion_key`` wins over other objects in the reply; an object
    without it is taken as the suggestion itself (minus the reasoning and answer keys), as
    the reference does; so are the other keys of an object whose suggestion is not an
    object. A suggestion given as a JSON string is decoded.

    Raises:
        SuggestionParseError: no JSON object, or the suggestion is not an object.
    """
    if not isinstance(text, str):
        raise SuggestionParseError(
            f"the reply must be text, got {type(text).__name__}", raw=repr(text)
        )
    if is_terminate(text):
        return ParsedReply(raw=text, terminate=True)
    chosen: dict[str, Any] | None = None
    for obj in iter_json_objects(text):
        obj = {str(key).strip(): value for key, value in obj.items()}
        if suggestion_key in obj:
            chosen = obj
            break
        if chosen is None:
            chosen = obj
    if chosen is None or suggestion_key not in chosen:
        # Cut off (e.g. at max_tokens) inside the suggestion: keep the complete values.
        try:
            outer, partial, cut_name = _cut_suggestion(text, suggestion_key)
        except ValueError:
            partial = {}
        partial = _clean_suggestion(partial)
        if partial:
            return ParsedReply(
                raw=text,
                suggestion=partial,
                reasoning=_text(outer.get(reasoning_key)),
                answer=outer.get(answer_key) if answer_key is not None else None,
                cut_off=cut_name,
            )
    if (chosen is None or suggestion_key not in chosen) and _truncated_object(text) is not None:
        raise SuggestionParseError(
            "the reply was cut off before its suggestion was complete; raise max_tokens or "
            "ask for shorter reasoning",
            raw=text,
        )
    if chosen is None:
        raise SuggestionParseError(
            "the reply holds no JSON object; expected "
            f'{{"{reasoning_key}": ..., "{suggestion_key}": {{<variable>: <value>}}}}',
            raw=text,
        )
    if suggestion_key in chosen:
        suggestion = chosen[suggestion_key]
        if isinstance(suggestion, str):
            if suggestion.strip():
                try:
                    suggestion = load_json_like(suggestion)
                except ValueError:
                    pass
            else:
                suggestion = {}
        if suggestion is None:
            suggestion = {}
        others = {k: v for k, v in chosen.items() if k not in {reasoning_key, answer_key}}
        others.pop(suggestion_key)
        if not isinstance(suggestion, dict) and others:
            suggestion = others  # values given beside a non-object suggestion, as accepted
        if not isinstance(suggestion, dict):
            raise SuggestionParseError(
                f'"{suggestion_key}" must be an object mapping variable names to values, got '
                f"{type(suggestion).__name__}",
                raw=text,
            )
    else:
        ignored = {reasoning_key, answer_key}
        suggestion = {key: value for key, value in chosen.items() if key not in ignored}
    return ParsedReply(
        raw=text,
        suggestion=_clean_suggestion(suggestion),
        reasoning=_text(chosen.get(reasoning_key)),
        answer=chosen.get(answer_key) if answer_key is not None else None,
    )
