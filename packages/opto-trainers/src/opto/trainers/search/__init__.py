"""The candidate-search machinery that `PrioritySearch`, `BeamSearch` and `UCBSearch` share.

* `candidate`: `Candidate`, one point of a search (a frozen parameter set, its optimizer
  chain's state and the scores it earned), with `paramset_key` and `strict_mean`;
* `memory`: `HeapMemory`, candidates by priority;
* `pareto`: `ParetoHeapMemory`, which pops from the Pareto front of its top candidates
  under an `ObjectiveConfig`, and `best_candidate`, `objectives.select_best` on candidates;
* `engine`: `SearchEngine`, which explores candidates (rollouts, one batch backward, N
  proposals on optimizer forks) and scores them, every independent call at once;
* `trainer`: `SearchTrainer`, the trainer base that owns an engine and adopts candidates.
"""

from __future__ import annotations

from .candidate import Candidate, paramset_key, strict_mean
from .engine import (
    ExplorationJob,
    ExplorationResult,
    SearchEngine,
    SearchProposal,
    bind_optimizer,
    bind_worker,
    chain_state,
)
from .memory import HeapMemory
from .pareto import ParetoHeapMemory, best_candidate
from .trainer import SearchTrainer

__all__ = [
    "Candidate",
    "ExplorationJob",
    "ExplorationResult",
    "HeapMemory",
    "ParetoHeapMemory",
    "SearchEngine",
    "SearchProposal",
    "SearchTrainer",
    "best_candidate",
    "bind_optimizer",
    "bind_worker",
    "chain_state",
    "paramset_key",
    "strict_mean",
]
