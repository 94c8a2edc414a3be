"""A size budget for the sections of an optimizer's prompt that grow with the traced graph.

``#Code``, ``#Documentation``, ``#Inputs``, ``#Others`` and ``#Outputs`` hold one entry per
call or node, so a large graph (tens of thousands of nodes) would make a prompt of many
megabytes. :func:`graph_sections` renders each within ``max_section_chars``: when a section
is longer, it keeps the code lines that use a trainable variable, then the first and last
entries (where the variables enter and the outputs leave), and replaces every run of left
out entries with a line saying how many were omitted. Entries are rendered lazily, so
cutting a huge graph costs little more than the kept part. The variables, their
constraints, the instruction and the feedback are never cut (they are not built here).
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opto.optimizers.utils import TRUNCATION_MARKER, truncate_expression
from opto.trace.propagators import FunctionFeedback

__all__ = [
    "BUDGETED_SECTIONS",
    "DEFAULT_MAX_SECTION_CHARS",
    "check_max_section_chars",
    "fit_entries",
    "fit_to_tokens",
    "graph_sections",
]

logger = logging.getLogger(__name__)

#: Default ``max_section_chars`` of the optimizers (about 5,000 tokens per section).
DEFAULT_MAX_SECTION_CHARS = 20_000

#: The sections kept within ``max_section_chars`` (the others are never cut).
BUDGETED_SECTIONS = ("code", "documentation", "inputs", "others", "outputs")

_MARKER_RESERVE = 100  # characters set aside for each "omitted" line (and its newline)
_MIN_SECTION_CHARS = 500
_PRIORITY_SHARE = 0.5  # at most this part of a budget goes to the priority entries

T = TypeVar("T")

# Summaries already warned about: one step renders its problem more than once (prompt, log).
_WARNED: weakref.WeakValueDictionary[int, FunctionFeedback] = weakref.WeakValueDictionary()

#: ``render(section, name, value, description) -> text`` of one node entry.
NodeRenderer = Callable[[str, str, Any, Any], str]


def _marker(omitted: int, total: int, limit: int) -> str:
    return f"... ({omitted:,} of {total:,} entries omitted here: max_section_chars={limit:,}) ..."


def check_max_section_chars(value: int | None) -> int | None:
    """``value`` if it is None or a positive int; else a ValueError naming the fix."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < _MIN_SECTION_CHARS
    ):
        raise ValueError(
            f"max_section_chars must be None (no limit) or an int >= {_MIN_SECTION_CHARS}, "
            f"got {value!r}."
        )
    return value


def fit_entries(
    entries: Sequence[T],
    render: Callable[[T], str],
    limit: int | None,
    *,
    priority: Callable[[T], bool] | None = None,
) -> tuple[str, int]:
    """The entries joined by newlines within ``limit`` characters, and how many were left out.

    Entries for which ``priority`` is true are kept first (within half the budget), then
    as many leading and trailing entries as fit, alternately; when none fits whole, the last
    one is cut to fit. Each run of left out entries becomes one line saying how many. The
    text stays within ``limit`` when it is at least 100; ``limit=None`` keeps everything.
    """
    count = len(entries)
    texts: dict[int, str] = {}
    size = 0
    for i in range(count):  # common case: everything fits; stop rendering once it cannot
        texts[i] = render(entries[i])
        size += len(texts[i]) + 1
        if limit is not None and size - 1 > limit:
            break
    else:
        return "\n".join(texts[i] for i in range(count)), 0
    assert limit is not None
    chosen: set[int] = set()
    budget = limit - _MARKER_RESERVE

    def text(i: int) -> str:
        if i not in texts:
            texts[i] = render(entries[i])
        return texts[i]

    def add(i: int, within: int) -> bool:
        nonlocal budget
        isolated = i - 1 not in chosen and i + 1 not in chosen
        cost = len(text(i)) + 1 + (_MARKER_RESERVE if isolated else 0)
        if cost > within or cost > budget:
            return False
        chosen.add(i)
        budget -= cost
        return True

    if priority is not None:
        share = int(budget * _PRIORITY_SHARE)
        for i in range(count):
            if priority(entries[i]):
                before = budget
                if add(i, share):
                    share -= before - budget
    head, tail = 0, count - 1
    head_open = tail_open = True
    while (head_open or tail_open) and head <= tail:
        if tail_open:
            while tail in chosen and tail >= head:
                tail -= 1
            tail_open = tail >= head and add(tail, budget)
        if head_open:
            while head in chosen and head <= tail:
                head += 1
            head_open = head <= tail and add(head, budget)
    if not chosen and budget > len(TRUNCATION_MARKER):  # no entry fits whole: cut the last
        last = count - 1
        texts[last] = truncate_expression(text(last), max(0, budget - len(TRUNCATION_MARKER)))
        chosen.add(last)
    lines: list[str] = []
    gap = 0
    for i in range(count):
        if i in chosen:
            if gap:
                lines.append(_marker(gap, count, limit))
                gap = 0
            lines.append(texts[i])
        else:
            gap += 1
    if gap:
        lines.append(_marker(gap, count, limit))
    return "\n".join(lines), count - len(chosen)


def _mentions(names: Sequence[str]) -> Callable[[str], bool] | None:
    """Whether a code line uses one of ``names`` (as a whole word)."""
    if not names:
        return None
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b")
    return lambda line: pattern.search(line) is not None


def graph_sections(
    summary: FunctionFeedback, render_node: NodeRenderer, max_section_chars: int | None
) -> dict[str, str]:
    """The :data:`BUDGETED_SECTIONS` of ``summary``, each within ``max_section_chars``.

    ``render_node(section, name, value, description)`` renders one entry of ``inputs``,
    ``others`` or ``outputs``. Logs a warning naming what was omitted when a section is cut.
    """
    nodes: Mapping[str, Mapping[str, Any]] = {
        "inputs": summary.inputs,
        "others": summary.others,
        "outputs": summary.output,
    }
    sections: dict[str, str] = {}
    omitted: dict[str, tuple[int, int]] = {}

    def fit(name: str, entries: Sequence[Any], render: Callable[[Any], str], **kw: Any) -> None:
        sections[name], left_out = fit_entries(entries, render, max_section_chars, **kw)
        if left_out:
            omitted[name] = (left_out, len(entries))

    fit(
        "code",
        [line for _, line in sorted(summary.graph)],
        str,
        priority=_mentions(list(summary.variables)),
    )
    fit(
        "documentation",
        list(summary.documentation.items()),
        lambda item: f"[{item[0]}] {item[1]}",
    )
    for section, items in nodes.items():
        fit(
            section,
            list(items.items()),
            lambda item, section=section: render_node(section, item[0], item[1][0], item[1][1]),
        )
    if omitted and _WARNED.get(id(summary)) is not summary:
        _WARNED[id(summary)] = summary
        logger.warning(
            "The prompt omits part of a large graph to stay within max_section_chars=%s: %s. "
            "The variables and the feedback are complete; raise max_section_chars (or pass "
            "None) to show more.",
            f"{max_section_chars:,}",
            ", ".join(f"{n:,} of {t:,} {s} entries" for s, (n, t) in omitted.items()),
        )
    return sections


_MIN_VALUE_CHARS = 40  # values are never cut shorter than this to fit max_prompt_tokens


def fit_to_tokens(
    build: Callable[[int, list[Any]], str],
    system: str,
    limit: int,
    memory: list[Any],
    max_tokens: int | None,
    count: Callable[[str], int],
) -> str:
    """The user prompt ``build(value_limit, memory)`` made to fit ``max_tokens`` together
    with ``system``: values are shortened first (halving ``limit`` down to 40 characters;
    -1, no limit, starts at 4,000), then the oldest memory entries are dropped. A prompt
    that still does not fit is returned with a warning."""
    user = build(limit, memory)
    while max_tokens is not None and count(system) + count(user) > max_tokens:
        if limit < 0 or limit > _MIN_VALUE_CHARS:
            limit = 4000 if limit < 0 else max(_MIN_VALUE_CHARS, limit // 2)
        elif memory:
            memory.pop(0)
        else:
            logger.warning(
                "The prompt (%d tokens) exceeds max_prompt_tokens=%d even with short "
                "values and no memory; sending it anyway.",
                count(system) + count(user),
                max_tokens,
            )
            break
        user = build(limit, memory)
    return user
