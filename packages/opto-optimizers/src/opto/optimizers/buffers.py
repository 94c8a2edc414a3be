"""`FIFOBuffer`: the bounded first-in-first-out history optimizers keep as memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["FIFOBuffer"]

T = TypeVar("T")


class FIFOBuffer(Generic[T]):
    """Keeps the last ``size`` items added, oldest first.

    ``size == 0`` stores nothing (memory switched off, as in the reference); ``size=None``
    keeps every item (an unbounded history).
    """

    def __init__(self, size: int | None, items: Iterable[T] = ()) -> None:
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            msg = f"FIFOBuffer size must be an int >= 0 or None (unbounded), got {size!r}"
            raise ValueError(msg)
        self.size = size
        self._items: deque[T] = deque(maxlen=size)
        self.extend(items)

    def add(self, item: T) -> None:
        """Append ``item``, dropping the oldest item when the buffer is full."""
        if self.size != 0:
            self._items.append(item)

    def extend(self, items: Iterable[T]) -> None:
        """Add each of ``items`` in order."""
        for item in items:
            self.add(item)

    def clear(self) -> None:
        """Forget every item."""
        self._items.clear()

    @property
    def buffer(self) -> list[T]:
        """The items, oldest first (a copy)."""
        return list(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> T:
        return self._items[index]

    def __repr__(self) -> str:
        return f"FIFOBuffer(size={self.size!r}, items={len(self._items)})"
