"""`HeapMemory`: candidates kept by priority, the memory of the search algorithms.

`pop` takes the highest priority; trimming to `size` keeps the true top entries. Ties are
deterministic (by creation order), and scores that cannot rank (None, NaN) sort below
every number (see `opto.trainers.ranking`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

from ..ranking import rank_value, score_key
from .candidate import Candidate

__all__ = ["HeapMemory"]


class HeapMemory:
    """Candidates by priority; `pop` takes the highest, trimming keeps the true top `size`.

    Ties are deterministic: among equal priorities the newest candidate pops first and
    the oldest is evicted first. `processing_fun` runs on every pushed candidate.
    """

    def __init__(
        self,
        size: int | None = None,
        processing_fun: Callable[[Candidate], Candidate] | None = None,
    ) -> None:
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ValueError(f"memory size must be None or a non-negative int, not {size!r}")
        self.size = size
        self.processing_fun = processing_fun
        self._heap: list[tuple[float, int, Candidate]] = []

    @staticmethod
    def _entry(priority: float, candidate: Candidate) -> tuple[float, int, Candidate]:
        return (-rank_value(priority), -candidate.created, candidate)

    def push(self, priority: float, candidate: Candidate) -> None:
        """Add `candidate` with `priority`; trim to the `size` highest if over."""
        if self.processing_fun is not None:
            candidate = self.processing_fun(candidate)
        heapq.heappush(self._heap, self._entry(float(priority), candidate))
        if self.size is not None and len(self._heap) > self.size:
            self._heap = heapq.nsmallest(self.size, self._heap, key=lambda e: e[:2])
            heapq.heapify(self._heap)

    def pop(self) -> tuple[float, Candidate]:
        """Remove and return `(priority, candidate)` of the highest priority."""
        neg, _, candidate = heapq.heappop(self._heap)
        return -neg, candidate

    def best(
        self, criterion: Callable[[Candidate], float | None] | None = None
    ) -> Candidate | None:
        """The candidate maximizing `criterion` (None scores lowest; ties: oldest), or the
        top of the heap without a criterion; None if empty."""
        if not self._heap:
            return None
        if criterion is None:
            return min(self._heap, key=lambda e: e[:2])[2]

        def rank(entry: tuple[float, int, Candidate]) -> tuple[tuple[int, float], int]:
            value = criterion(entry[2])
            return (score_key(value), -entry[2].created)

        return max(self._heap, key=rank)[2]

    def remove(self, candidate: Candidate) -> None:
        """Remove `candidate` (by identity) if present."""
        self._heap = [entry for entry in self._heap if entry[2] is not candidate]
        heapq.heapify(self._heap)

    def items(self) -> list[tuple[float, Candidate]]:
        """`(priority, candidate)` pairs, highest priority first."""
        return [(-neg, c) for neg, _, c in sorted(self._heap, key=lambda e: e[:2])]

    def append(self, other: HeapMemory) -> None:
        """Push every item of `other` (with its priority)."""
        for priority, candidate in other.items():
            self.push(priority, candidate)

    def reset(self) -> None:
        """Remove every item."""
        self._heap = []

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __iter__(self) -> Iterator[Candidate]:
        return (candidate for _, candidate in self.items())

    # -- checkpoints ------------------------------------------------------------------------

    def to_list(self) -> list[list[Any]]:
        """JSON-able `[[priority, candidate dict], ...]`, highest priority first."""
        return [[p, c.to_dict()] for p, c in self.items()]

    def load_list(self, items: Any) -> None:
        """Replace the contents with a `to_list()` (no trimming or processing)."""
        self._heap = [self._entry(float(p), Candidate.from_dict(c)) for p, c in items]
        heapq.heapify(self._heap)
