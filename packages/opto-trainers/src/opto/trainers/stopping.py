"""Stop conditions checked by trainers between steps.

`StopConditions` bundles what ends a run early: a step cap, patience (no improvement of the
evaluation score for K evaluations), and a stop file (create it to ask a running trainer to
checkpoint and stop). Epoch limits are the loop's own; LLM budgets are enforced by the
usage ledger (`opto.utils.usage`), which refuses the call that would pass them.
Its counters are part of the trainer's checkpoint, so a resumed run keeps its patience.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .ranking import is_score

__all__ = ["StopConditions", "StopReason"]


class StopReason:
    """Why a run ended (the values of `TrainResult.stopped`)."""

    COMPLETED = "completed"
    MAX_STEPS = "max_steps"
    NO_IMPROVEMENT = "no_improvement"
    BUDGET = "budget"
    STOP_FILE = "stop_file"
    INTERRUPTED = "interrupted"


def _optional_positive(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{attribute.name} must be None or a positive int, not {value!r}")


@attrs.define(kw_only=True)
class StopConditions:
    """Early-stopping rules and their running state.

    Args:
        max_steps: stop after this many completed steps (None: no cap).
        patience: stop after this many consecutive evaluations without improvement.
        min_delta: an evaluation improves only if it beats the best by more than this.
        stop_file: stop (after checkpointing) as soon as this path exists.
    """

    max_steps: int | None = attrs.field(default=None, validator=_optional_positive)
    patience: int | None = attrs.field(default=None, validator=_optional_positive)
    min_delta: float = 0.0
    stop_file: str | os.PathLike[str] | None = None
    best: float | None = None
    bad_evaluations: int = 0

    def observe(self, score: float | None) -> bool:
        """Record an evaluation score; True if it improved on the best so far.

        None (no score) is ignored; NaN never improves (it counts toward `patience`).
        """
        if score is None:
            return False
        if is_score(score) and (self.best is None or score > self.best + self.min_delta):
            self.best = float(score)
            self.bad_evaluations = 0
            return True
        self.bad_evaluations += 1
        return False

    def check(self, n_steps: int) -> str | None:
        """The `StopReason` that ends the run now, or None to go on."""
        if self.stop_file is not None and Path(self.stop_file).exists():
            return StopReason.STOP_FILE
        if self.max_steps is not None and n_steps >= self.max_steps:
            return StopReason.MAX_STEPS
        if self.patience is not None and self.bad_evaluations >= self.patience:
            return StopReason.NO_IMPROVEMENT
        return None

    def state_dict(self) -> dict[str, Any]:
        """The running state (best score, evaluations without improvement)."""
        return {"best": self.best, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()`."""
        self.best = state["best"]
        self.bad_evaluations = int(state["bad_evaluations"])
