"""Walking a graph of objects depth-first, each object once (by identity)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

__all__ = ["each_once"]

T = TypeVar("T")


def each_once(stack: list[T], seen: set[int] | None = None) -> Iterator[T]:
    """Pop objects off ``stack`` until it is empty, yielding each object once.

    The caller pushes the neighbours of a yielded object onto ``stack`` (so the walk is
    depth-first and needs no recursion); objects whose ``id`` is already in ``seen`` (those
    yielded before, and any the caller put there to exclude) are skipped. Identity, not
    equality, decides, so unhashable objects and equal-but-distinct nodes are fine.
    """
    if seen is None:
        seen = set()
    while stack:
        item = stack.pop()
        key = id(item)
        if key in seen:
            continue
        seen.add(key)
        yield item
