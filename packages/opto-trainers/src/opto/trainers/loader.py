"""`DataLoader`: minibatches over a `{"inputs": [...], "infos": [...]}` dataset.

Seeded with its own `random.Random` (never the global RNG), with exact epoch accounting
(`n_epochs` counts completed passes) and a resumable cursor: `state_dict()` is JSON-able and
`load_state_dict()` continues exactly where the saved loader stood.

Two ways to read it, as in the reference:

* iterate (`for xs, infos in loader`): the batches of one pass, from the cursor to the end
  of the epoch. With `wrap=True` (the default) a short last batch is filled from the next
  epoch's order, which the next pass then starts from the beginning (so with
  `shuffle=False`, N=5 and batch 2 a pass is [1,2] [3,4] [5,1]); with `drop_last=True` it
  is dropped; with neither it is yielded short.
* `next(loader)`: the same batches one at a time; after an epoch's last batch the next
  call raises `StopIteration` once, and the call after it starts the next epoch.
* `sample()`: an endless stream of full batches that rolls over epochs ([1,2] [3,4] [5,1]
  [2,3] [4,5] [1,2] ...).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opto.utils.errors import OptoError

__all__ = ["DataLoader", "DatasetError", "as_dataset"]


class DatasetError(OptoError, ValueError):
    """A dataset is malformed: wrong shape, mismatched lengths or empty."""


def as_dataset(dataset: Any, *, name: str = "dataset") -> dict[str, list[Any]]:
    """Normalize a dataset to `{"inputs": [...], "infos": [...]}`.

    Accepts that dict form (equal-length sequences) or a sequence of `(input, info)` pairs.
    Raises `DatasetError` naming the problem for anything else, for mismatched lengths, and
    for an empty dataset.
    """
    if isinstance(dataset, Mapping):
        missing = [key for key in ("inputs", "infos") if key not in dataset]
        if missing:
            raise DatasetError(
                f"{name} is missing the keys {missing}; pass "
                "{'inputs': [...], 'infos': [...]} or a list of (input, info) pairs"
            )
        inputs, infos = list(dataset["inputs"]), list(dataset["infos"])
        if len(inputs) != len(infos):
            raise DatasetError(
                f"{name} has {len(inputs)} inputs but {len(infos)} infos; every input needs "
                "exactly one info (use None where the guide needs none)"
            )
    elif isinstance(dataset, Sequence) and not isinstance(dataset, (str, bytes)):
        pairs = list(dataset)
        bad = [i for i, pair in enumerate(pairs) if not _is_pair(pair)]
        if bad:
            raise DatasetError(
                f"{name} item {bad[0]} is not an (input, info) pair: {pairs[bad[0]]!r:.80}; "
                "pass a list of 2-tuples or {'inputs': [...], 'infos': [...]}"
            )
        inputs = [pair[0] for pair in pairs]
        infos = [pair[1] for pair in pairs]
    else:
        raise DatasetError(
            f"{name} must be {{'inputs': [...], 'infos': [...]}} or a list of (input, info) "
            f"pairs, not {type(dataset).__name__}"
        )
    if not inputs:
        raise DatasetError(f"{name} is empty; it needs at least one (input, info) example")
    return {"inputs": inputs, "infos": infos}


def _is_pair(item: Any) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2


def _check_positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, not {value!r}")
    return value


class DataLoader:
    """Minibatches of a dataset, seeded and resumable.

    Args:
        dataset: `{"inputs": [...], "infos": [...]}` or a list of `(input, info)` pairs.
        batch_size: examples per batch (may exceed the dataset size only with `wrap`).
        randomize: with `shuffle`, draw a random order each epoch (else keep the natural
            order); kept for compatibility with the reference.
        replacement: draw each epoch's order with replacement (a bootstrap sample).
        shuffle: reorder at every epoch (False: always the natural order).
        seed: seed of the loader's own RNG; `rng` passes a `random.Random` instead.
        drop_last: in iteration, drop a short last batch.
        wrap: in iteration, fill a short last batch from the next epoch's order.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        randomize: bool = True,
        replacement: bool = False,
        shuffle: bool = True,
        *,
        seed: int | None = None,
        rng: random.Random | None = None,
        drop_last: bool = False,
        wrap: bool = True,
    ) -> None:
        self._dataset = as_dataset(dataset)
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        if drop_last and wrap:
            raise ValueError("drop_last=True and wrap=True exclude each other; choose one")
        self.randomize = randomize
        self.replacement = replacement
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.wrap = wrap
        if rng is not None and seed is not None:
            raise ValueError("pass either seed or rng, not both")
        self._rng = rng if rng is not None else random.Random(seed)
        self.n_epochs = 0
        self._order = self._draw_order()
        self._next_order: list[int] | None = None
        self._cursor = 0
        self._stop_pending = False

    # -- dataset -----------------------------------------------------------------------------

    @property
    def dataset(self) -> dict[str, list[Any]]:
        """The normalized dataset; assigning a new one restarts the current epoch's order."""
        return self._dataset

    @dataset.setter
    def dataset(self, dataset: Any) -> None:
        self._dataset = as_dataset(dataset)
        self._order = self._draw_order()
        self._next_order = None
        self._cursor = 0
        self._stop_pending = False

    def __len__(self) -> int:
        """Batches in one pass (iteration mode)."""
        size = len(self._dataset["inputs"])
        full, rest = divmod(size, self.batch_size)
        return full if rest == 0 or self.drop_last else full + 1

    # -- ordering ----------------------------------------------------------------------------

    def _draw_order(self) -> list[int]:
        size = len(self._dataset["inputs"])
        if not (self.shuffle and self.randomize):
            return list(range(size))
        if self.replacement:
            return [self._rng.randrange(size) for _ in range(size)]
        order = list(range(size))
        self._rng.shuffle(order)
        return order

    def _peek_next_order(self) -> list[int]:
        if self._next_order is None:
            self._next_order = self._draw_order()
        return self._next_order

    def _finish_epoch(self, cursor: int = 0) -> None:
        """Count a completed pass and move to the next epoch's order at `cursor`."""
        self._order = self._peek_next_order()
        self._next_order = None
        self._cursor = cursor
        self.n_epochs += 1

    def _batch(self, indices: Sequence[int]) -> tuple[list[Any], list[Any]]:
        inputs, infos = self._dataset["inputs"], self._dataset["infos"]
        return [inputs[i] for i in indices], [infos[i] for i in indices]

    # -- reading -----------------------------------------------------------------------------

    def _step(self) -> tuple[tuple[list[Any], list[Any]] | None, bool]:
        """The next batch of the epoch (None: a dropped short tail) and whether it ended it."""
        indices = self._order[self._cursor : self._cursor + self.batch_size]
        if len(indices) < self.batch_size:
            if self.drop_last:
                self._finish_epoch()
                return None, True
            if self.wrap:
                indices = indices + self._fill(self.batch_size - len(indices))
            self._finish_epoch()
            return self._batch(indices), True
        self._cursor += len(indices)
        if self._cursor >= len(self._order):
            self._finish_epoch()
            return self._batch(indices), True
        return self._batch(indices), False

    def __iter__(self) -> Iterator[tuple[list[Any], list[Any]]]:
        """The remaining batches of the current epoch; the epoch is counted at its end."""
        self._stop_pending = False
        while True:
            batch, ended = self._step()
            if batch is not None:
                yield batch
            if ended:
                return

    def __next__(self) -> tuple[list[Any], list[Any]]:
        """The next batch, as in iteration; `StopIteration` once after each epoch's last.

        The call after `StopIteration` starts the next epoch, so `next(loader)` cycles
        through epochs the way repeated `for` loops do.
        """
        if self._stop_pending:
            self._stop_pending = False
            raise StopIteration
        batch, ended = self._step()
        if batch is None:
            raise StopIteration
        self._stop_pending = ended
        return batch

    def _start_new_epoch(self) -> None:
        """Abandon the rest of the current epoch and start the next one from its beginning."""
        self._stop_pending = False
        self._finish_epoch()

    def _fill(self, count: int) -> list[int]:
        """`count` indices from the next epoch's order, cycling if the dataset is tiny."""
        order = self._peek_next_order()
        return [order[i % len(order)] for i in range(count)]

    def sample(self) -> tuple[list[Any], list[Any]]:
        """The next full batch of the endless stream, rolling over epochs."""
        self._stop_pending = False
        indices: list[int] = []
        while len(indices) < self.batch_size:
            take = self._order[self._cursor : self._cursor + self.batch_size - len(indices)]
            indices.extend(take)
            self._cursor += len(take)
            if self._cursor >= len(self._order):
                self._finish_epoch()
        return self._batch(indices)

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position: order, cursor, epochs and RNG state."""
        version, internal, gauss = self._rng.getstate()
        return {
            "n_epochs": self.n_epochs,
            "cursor": self._cursor,
            "order": list(self._order),
            "next_order": None if self._next_order is None else list(self._next_order),
            "rng": [version, list(internal), gauss],
            "size": len(self._dataset["inputs"]),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a `state_dict()` taken on a loader over the same dataset."""
        size = len(self._dataset["inputs"])
        if state["size"] != size:
            raise DatasetError(
                f"the saved loader state is for a dataset of {state['size']} examples, but "
                f"this loader holds {size}; resume with the same dataset"
            )
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self.n_epochs = int(state["n_epochs"])
        self._cursor = int(state["cursor"])
        self._order = list(state["order"])
        self._next_order = None if state["next_order"] is None else list(state["next_order"])
        self._stop_pending = False

    def __repr__(self) -> str:
        return (
            f"DataLoader(size={len(self._dataset['inputs'])}, batch_size={self.batch_size}, "
            f"n_epochs={self.n_epochs}, cursor={self._cursor})"
        )
