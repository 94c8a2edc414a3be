"""Weak child links of trace nodes.

A node holds its parents strongly (backward walks from an output the caller holds to its
parents) but its children only weakly: a long-lived parameter used by a million calls keeps
none of their outputs alive, so memory stays bounded without a backward pass.

A node's ``_ch`` slot is ``None``, one ``weakref.ref`` (the only child so far) or a
:class:`ChildRefs` list of them. The list drops references to collected children whenever
it reaches twice its live size (at least :data:`SWEEP_MIN`), so it stays proportional to the
live children at amortized O(1) per link. Callers hold ``nodes._LINK_LOCK`` while linking or
unlinking, because several threads may add children to one shared parameter.
"""

from __future__ import annotations

import weakref
from typing import Any

#: Smallest list length at which dead references are swept out.
SWEEP_MIN = 16


class ChildRefs(list):  # type: ignore[type-arg]
    """Weak references to a node's children; ``sweep_at`` is the length of the next sweep."""

    __slots__ = ("sweep_at",)


def _sweep(refs: ChildRefs) -> None:
    refs[:] = [r for r in refs if r() is not None]
    refs.sweep_at = max(SWEEP_MIN, 2 * len(refs))


def add(parent: Any, ref: weakref.ref[Any]) -> None:
    """Append ``ref`` (a weak reference to a new child) to ``parent``'s links (lock held)."""
    ch = parent._ch
    if ch is None:
        parent._ch = ref
    elif type(ch) is ChildRefs:
        ch.append(ref)
        if len(ch) >= ch.sweep_at:
            _sweep(ch)
    elif ch() is None:  # the only child so far was collected: reuse the slot
        parent._ch = ref
    else:
        refs = parent._ch = ChildRefs((ch, ref))
        refs.sweep_at = SWEEP_MIN


def live(ch: Any) -> list[Any]:
    """The children still alive in a ``_ch`` value, oldest first."""
    if ch is None:
        return []
    if type(ch) is ChildRefs:
        refs = list(ch)  # an atomic snapshot: other threads may be linking meanwhile
        return [c for c in (r() for r in refs) if c is not None]
    child = ch()
    return [] if child is None else [child]


def remove(parent: Any, child: Any) -> None:
    """Drop ``child`` (by identity) from ``parent``'s links (lock held).

    Searches from the newest link, so removing the latest child is O(1).
    """
    ch = parent._ch
    if ch is None:
        return
    if type(ch) is ChildRefs:
        for i in range(len(ch) - 1, -1, -1):
            if ch[i]() is child:
                del ch[i]
                return
    elif ch() is None or ch() is child:
        parent._ch = None
