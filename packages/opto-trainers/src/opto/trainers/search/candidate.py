"""`Candidate`: one point of a search, a frozen parameter set and the scores it earned.

Every search algorithm (`PrioritySearch`, `BeamSearch`, `UCBSearch`) keeps its candidates as
`Candidate`s: the parameter values (`{parameter path: value}`, fixed at creation), the index
and JSON state of the optimizer chain that explores it, its creation order, and the rollout
records (or bare scores) it was judged on. Statistics (mean, strict mean, confidence
bounds) are computed from those records, so a checkpoint stores only values and scores.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

from opto.trace.modules import Module

from ..evaluation import Rollout
from ..objectives import ObjectiveConfig, aggregate_score_dicts
from ..scoring import reward
from ..utils import ParamSet, paramset_key, safe_mean

__all__ = ["Candidate", "paramset_key", "strict_mean"]

_NEG_INF = float("-inf")


def strict_mean(scores: Sequence[Any]) -> float:
    """Mean score for ranking: -inf when any rollout has no score (a failure counts)."""
    if not scores or any(s is None for s in scores):
        return _NEG_INF
    return math.fsum(float(s) for s in scores) / len(scores)


class Candidate:
    """A parameter set, the optimizer chain that explores it, and its rollouts.

    Args:
        paramset: the values (copied; `update_dict` is the reference's name for it). The
            values cannot be reassigned: a changed parameter set is a new candidate.
        optimizer_index: which of the trainer's optimizers explores the candidate.
        optimizer_state: the JSON state of its optimizer chain (None: the optimizer's own).
        created: creation order (larger is newer; ties in rankings favour the older).
        rollouts: plain rollout records (`Rollout.to_dict()`), or `{"score": s}` only.
        embedding: a cached vector of the parameter text (POLCA's epsilon-net sets it; it
            is kept in checkpoints so a resumed search does not embed again).
    """

    def __init__(
        self,
        paramset: Mapping[str, Any] | None = None,
        *,
        optimizer_index: int = 0,
        optimizer_state: dict[str, Any] | None = None,
        created: int = 0,
        rollouts: Sequence[Mapping[str, Any]] = (),
        update_dict: Mapping[str, Any] | None = None,
        embedding: Sequence[float] | None = None,
    ) -> None:
        if (paramset is None) == (update_dict is None):
            raise TypeError("Candidate needs its parameter set: pass paramset= (or update_dict=)")
        self._paramset: ParamSet = dict(paramset if paramset is not None else update_dict or {})
        self.optimizer_index = int(optimizer_index)
        self.optimizer_state = optimizer_state
        self.created = int(created)
        self.rollouts: list[dict[str, Any]] = [dict(r) for r in rollouts]
        self._key = f"{self.optimizer_index}:{paramset_key(self._paramset)}"
        self.embedding = None if embedding is None else [float(v) for v in embedding]

    @property
    def paramset(self) -> ParamSet:
        """The candidate's values `{parameter path: value}` (treat as read-only)."""
        return self._paramset

    #: The reference's name of `paramset`.
    update_dict = paramset

    @property
    def key(self) -> str:
        """Identity of the candidate's values and optimizer (duplicates share it)."""
        return self._key

    def __repr__(self) -> str:
        return (
            f"Candidate(paramset={self._paramset!r}, optimizer_index={self.optimizer_index}, "
            f"created={self.created}, num_rollouts={self.num_rollouts})"
        )

    def get_module(self, base_module: Module) -> Module:
        """A new module bound to this candidate's values (the base is not modified)."""
        from .engine import bind_worker

        return bind_worker(base_module, self._paramset)

    # -- statistics -------------------------------------------------------------------------

    def add_rollouts(
        self, records: Sequence[Rollout | Mapping[str, Any]], config: ObjectiveConfig | None = None
    ) -> None:
        """Count more rollouts toward the candidate's statistics (under `config`, each
        score is the rollout's score dict reduced by it)."""
        for record in records:
            row = record.to_dict() if isinstance(record, Rollout) else dict(record)
            self.rollouts.append({**row, "score": reward(row, config)} if config else row)

    def add_scores(self, scores: Sequence[Any], config: ObjectiveConfig | None = None) -> int:
        """Count bare scores (None: unscored; under `config`, score dicts reduced by it);
        returns how many were real scores."""
        self.add_rollouts(
            [
                {"score": None, "score_dict": s} if isinstance(s, Mapping) else {"score": s}
                for s in scores
            ],
            config,
        )
        return sum(s is not None for s in scores)

    def reset_scores(self) -> None:
        """Forget every rollout (e.g. before scoring on a fresh validation sample)."""
        self.rollouts = []

    @property
    def scores(self) -> list[Any]:
        """Scores of the candidate's rollouts (None for unscored ones)."""
        return [r.get("score") for r in self.rollouts]

    @property
    def num_rollouts(self) -> int:
        """How many rollouts the statistics count."""
        return len(self.rollouts)

    @property
    def num_scored(self) -> int:
        """How many of the rollouts have a score."""
        return sum(s is not None for s in self.scores)

    def mean_score(self) -> float | None:
        """Mean of the scored rollouts, None when none is scored."""
        return safe_mean(self.scores)

    @property
    def score(self) -> float | None:
        """`strict_mean` of the rollouts (-inf if one is unscored), None without rollouts."""
        return strict_mean(self.scores) if self.rollouts else None

    def mean_score_dict(self) -> dict[str, float] | None:
        """Per-metric mean of the rollouts' score dicts (None if none has one)."""
        return aggregate_score_dicts([r.get("score_dict") for r in self.rollouts]) or None

    @property
    def score_dict(self) -> dict[str, float] | None:
        """`mean_score_dict` for ranking: None (never wins) if a rollout is unscored."""
        if not self.rollouts or any(s is None for s in self.scores):
            return None
        return self.mean_score_dict()

    def compute_score_confidence(
        self, min_score: float, max_score: float, scaling_constant: float, total_trials: int
    ) -> tuple[float, float | None, float]:
        """`(lcb, mean, ucb)` by a Hoeffding bound, clipped to `[min_score, max_score]`."""
        scores = [float(s) for s in self.scores if s is not None]
        if not scores:
            return min_score, None, max_score
        mean = math.fsum(scores) / len(scores)
        width = (
            scaling_constant
            * math.sqrt(math.log(total_trials + 1) / len(scores))
            * (max_score - min_score)
        )
        return max(min_score, mean - width), mean, min(max_score, mean + width)

    def compress(self) -> Candidate:
        """Drop every rollout field but the score(s) (to keep long-lived memory small)."""
        self.rollouts = [_scores_only(r) for r in self.rollouts]
        return self

    # -- checkpoints ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (rollouts reduced to scores; non-finite scores kept as floats)."""
        data = {
            "paramset": copy.deepcopy(self._paramset),
            "optimizer_index": self.optimizer_index,
            "optimizer_state": copy.deepcopy(self.optimizer_state),
            "created": self.created,
            "scores": self.scores,
            "score_dicts": [r.get("score_dict") for r in self.rollouts],
        }
        if self.embedding is not None:
            data["embedding"] = list(self.embedding)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        """Inverse of `to_dict`."""
        return cls(
            copy.deepcopy(dict(data["paramset"])),
            optimizer_index=int(data.get("optimizer_index", 0)),
            optimizer_state=copy.deepcopy(data.get("optimizer_state")),
            created=int(data.get("created", 0)),
            embedding=data.get("embedding"),
            rollouts=[
                _scores_only({"score": s, "score_dict": d})
                for s, d in zip(
                    data.get("scores", ()),
                    data.get("score_dicts") or [None] * len(data.get("scores", ())),
                )
            ],
        )


def _scores_only(record: Mapping[str, Any]) -> dict[str, Any]:
    kept = {"score": record.get("score")}
    if record.get("score_dict") is not None:
        kept["score_dict"] = dict(record["score_dict"])
    return kept
