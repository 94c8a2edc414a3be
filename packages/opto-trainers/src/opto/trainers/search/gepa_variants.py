"""`GEPAUCBSearch` and `GEPABeamPareto`: the GEPA loop (`gepa.GEPAAlgorithmBase`) with a
bandit's parent choice and a bounded buffer, or with a beam of the best by (wins, mean).

* `GEPAUCBSearch` mutates the frontier member (a candidate with at least one win) with
  the highest upper confidence bound `mean + c * sqrt(ln(1 + T) / (1 + n)) * (high - low)`,
  where `n` counts the times it was picked, `T` all picks, `c` is
  `ucb_exploration_factor` and `score_range=(low, high)` scales the bonus (ties: the
  oldest); beyond `max_buffer_size` it evicts the lowest (wins, mean) one at a time,
  recounting wins after each eviction.
* `GEPABeamPareto` mutates the top of its beam by (wins, mean), passing over a parent
  whose last three picks added nothing (with a positive `selection_temperature`, it
  draws parents by wins like the base), and keeps the top `beam_width` by (wins, mean)
  after every iteration.

Neither ever evicts the candidate the agent holds (the best by mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from ..options import (
    finite_range,
    optional_non_negative_int,
    positive_int,
)
from ..ranking import rank_value, score_key
from .gepa import GEPAAlgorithmBase, GEPAOptions, GEPASettings, _number
from .gepa_frontier import rank_key

__all__ = [
    "GEPABeamPareto",
    "GEPABeamParetoOptions",
    "GEPABeamParetoSettings",
    "GEPAUCBSearch",
    "GEPAUCBSearchOptions",
    "GEPAUCBSearchSettings",
]


@attrs.frozen(kw_only=True)
class GEPAUCBSearchOptions(GEPAOptions):
    """`GEPAUCBSearch.train`'s keywords: `GEPAOptions` with `num_search_iterations` 120
    and `merge_every` 6, plus `score_range` ((0, 1): scales the UCB bonus)."""

    num_search_iterations: int = attrs.field(default=120, validator=positive_int)
    merge_every: int | None = attrs.field(default=6, validator=optional_non_negative_int)
    score_range: Sequence[float] = attrs.field(default=(0.0, 1.0), validator=finite_range)


@attrs.frozen(kw_only=True)
class GEPAUCBSearchSettings(GEPASettings):
    """`GEPAUCBSearch`'s constructor hyperparameters: `GEPASettings` (`rng_seed` 7) plus
    `ucb_exploration_factor` (0.8: the `c` of the UCB bonus)."""

    ucb_exploration_factor: float = attrs.field(default=0.8, converter=float)
    rng_seed: int | None = 7


class GEPAUCBSearch(GEPAAlgorithmBase):
    """GEPA search whose parent is the frontier member with the highest UCB.

    Args:
        agent, optimizer, logger, num_threads, executor, seed: as for every search trainer.
        max_buffer_size, ucb_exploration_factor, rng_seed: see `GEPAUCBSearchSettings`
            (positional after `optimizer`, then `logger` and `num_threads`).
    """

    options_class: ClassVar[type[GEPAOptions]] = GEPAUCBSearchOptions
    settings_class = GEPAUCBSearchSettings
    positional_parameters = (
        "max_buffer_size",
        "ucb_exploration_factor",
        "rng_seed",
        "logger",
        "num_threads",
    )

    def _variant_config(self) -> dict[str, Any]:
        low, high = (float(v) for v in self.options.score_range)  # type: ignore[attr-defined]
        return {"score_range": [low, high]}

    def compute_ucb(self, candidate: Any) -> float:
        """`mean + c * sqrt(ln(1 + T) / (1 + n)) * (high - low)` (n: the candidate's
        picks, T: all picks); an unscored mean counts as -inf."""
        low, high = (float(v) for v in self.options.score_range)  # type: ignore[attr-defined]
        picks = self._pulls.get(candidate.created, 0)
        total = sum(self._pulls.values())
        bonus = math.sqrt(math.log(1 + total) / (1 + picks)) * (high - low)
        return rank_value(candidate.mean_score()) + self.ucb_exploration_factor * bonus

    def select_parent(self, wins: list[int]) -> int:
        """The frontier member (all candidates if none has a win) with the highest UCB."""
        pool = [i for i, w in enumerate(wins) if w > 0] or list(range(len(self.buffer)))
        return max(
            pool,
            key=lambda i: (score_key(self.compute_ucb(self.buffer[i])), -self.buffer[i].created),
        )

    def trim_buffer(self) -> None:
        """Evict the lowest (wins, mean) one at a time until `max_buffer_size` remain."""
        while len(self.buffer) > self.max_buffer_size:
            protected = self.best_entry()
            wins = self.wins()
            worst = min(
                (i for i, c in enumerate(self.buffer) if c is not protected),
                key=lambda i: rank_key(
                    wins[i], self.buffer[i].mean_score(), self.buffer[i].created
                ),
            )
            del self.buffer[worst]


@attrs.frozen(kw_only=True)
class GEPABeamParetoOptions(GEPAOptions):
    """`GEPABeamPareto.train`'s keywords: `GEPAOptions` with `num_search_iterations` 120,
    `merge_every` 6 and `selection_temperature` 0 (mutate the top of the beam by (wins,
    mean); a positive temperature samples parents by wins instead), plus `beam_width`
    (16): how many candidates the beam keeps."""

    num_search_iterations: int = attrs.field(default=120, validator=positive_int)
    merge_every: int | None = attrs.field(default=6, validator=optional_non_negative_int)
    selection_temperature: float = attrs.field(default=0.0, validator=_number)
    beam_width: int = attrs.field(default=16, validator=positive_int)


@attrs.frozen(kw_only=True)
class GEPABeamParetoSettings:
    """`GEPABeamPareto`'s constructor hyperparameter: `rng_seed` (11: seeds the search's
    RNG, which draws the Pareto subset, parents and merges; None: the trainer's `seed`).
    Its beam's size is the `train` keyword `beam_width`."""

    rng_seed: int | None = 11


class GEPABeamPareto(GEPAAlgorithmBase):
    """GEPA search keeping a beam of the best `beam_width` candidates by (wins, mean).

    Args:
        agent, optimizer, num_threads, logger, executor, seed: as for every search trainer.
        rng_seed: keyword-only, see `GEPABeamParetoSettings`.
    """

    options_class: ClassVar[type[GEPAOptions]] = GEPABeamParetoOptions
    settings_class = GEPABeamParetoSettings

    def _variant_config(self) -> dict[str, Any]:
        return {"beam_width": self.options.beam_width}  # type: ignore[attr-defined]

    def trim_buffer(self) -> None:
        """Keep the top `beam_width` by (wins, mean), and always the best entry."""
        self._keep_top(self.options.beam_width)  # type: ignore[attr-defined]
