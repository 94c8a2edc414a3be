"""PrioritySearch under an `ObjectiveConfig`: per-metric candidate means and a Pareto memory.

A candidate's rollouts carry the guide's score dicts; its scalar score (what priorities,
UCB bounds and the heap order use) is the dict reduced by the config
(`opto.trainers.scoring.scalar`). In "pareto" mode the memory pops from the Pareto front
of its highest-priority candidates, and the agent gets the front member the config's
tie-break prefers, so no candidate that another beats on every metric is chosen while a
better one is at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..objectives import ObjectiveConfig, select_best
from .candidate import Candidate
from .memory import HeapMemory

__all__ = ["ParetoHeapMemory", "best_candidate"]


def best_candidate(candidates: Sequence[Candidate], config: ObjectiveConfig) -> Candidate | None:
    """The candidate `objectives.select_best` prefers by mean score dicts (ties: the
    oldest); candidates without score dicts never win over ones with them."""
    ordered = sorted(candidates, key=lambda c: c.created)
    if not ordered:
        return None
    means = [c.mean_score_dict() for c in ordered]
    return ordered[select_best([(m, i) for i, m in enumerate(means)], config)]


class ParetoHeapMemory(HeapMemory):
    """A `HeapMemory` whose `pop` picks from the Pareto front of its top candidates.

    `pop` looks at the `pareto_k` highest-priority candidates, keeps those no other one
    dominates on their mean score dicts (minimized metrics negated, `pareto_metrics`
    only), and returns the one the config's tie-break prefers. If any of them has no
    score dict yet (e.g. never validated), it pops by priority like `HeapMemory`.
    """

    def __init__(
        self,
        config: ObjectiveConfig,
        size: int | None = None,
        processing_fun: Callable[[Candidate], Candidate] | None = None,
        pareto_k: int = 20,
    ) -> None:
        super().__init__(size, processing_fun)
        if isinstance(pareto_k, bool) or not isinstance(pareto_k, int) or pareto_k < 1:
            raise ValueError(f"pareto_k must be a positive int, not {pareto_k!r}")
        self.config = config
        self.pareto_k = pareto_k

    def pop(self) -> tuple[float, Candidate]:
        if self.config.mode != "pareto":
            return super().pop()
        top = self.items()[: self.pareto_k]
        if not top or any(c.mean_score_dict() is None for _, c in top):
            return super().pop()
        chosen = best_candidate([c for _, c in top], self.config)
        priority = next(p for p, c in top if c is chosen)
        assert chosen is not None
        self.remove(chosen)
        return priority, chosen
