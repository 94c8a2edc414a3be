"""Per-metric evaluation: `evaluate_vector` scores every example as a dict of metrics.

A guide reports several metrics through `get_score_dict` (by default `{"score": s}`);
`aggregate_vector_scores` averages them metric by metric. `evaluate` (one scalar per
example) is re-exported here for the module layout users know.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from opto.trace.errors import ExecutionError
from opto.trace.modules import Module
from opto.trace.nodes import Node

from .evaluation import evaluate
from .executors import make_executor
from .guide import Guide
from .objectives import aggregate_score_dicts

__all__ = ["aggregate_vector_scores", "evaluate", "evaluate_vector"]


def _failure_scores(min_score: Any) -> dict[str, Any]:
    if min_score is None:
        return {"score": -math.inf}
    if isinstance(min_score, Mapping):
        return dict(min_score)
    return {"score": min_score}


def _score_one(min_score: Any, task: tuple[Module, Guide, Any, Any]) -> dict[str, Any]:
    agent, guide, x, info = task
    try:
        target = agent.copy()(x)
    except ExecutionError:
        return _failure_scores(min_score)
    output = target.data if isinstance(target, Node) else target
    return dict(guide.copy().get_score_dict(x, output, info))


def evaluate_vector(
    agent: Module,
    guide: Guide,
    inputs: Sequence[Any],
    infos: Sequence[Any],
    min_score: Any = None,
    num_threads: int | None = None,
    description: str | None = None,
) -> list[dict[str, Any]]:
    """The guide's `get_score_dict` on every (input, info) pair, in order.

    Each call runs on its own copy of the agent and of the guide. When the agent raises
    `ExecutionError` the example scores `{"score": -inf}` (no `min_score`), `min_score`
    itself when it is a dict, else `{"score": min_score}`. Other exceptions propagate.
    `description` is accepted for compatibility.
    """
    if len(inputs) != len(infos):
        raise ValueError(
            f"evaluate_vector got {len(inputs)} inputs but {len(infos)} infos; pass one info "
            "per input"
        )
    tasks = [(agent, guide, x, info) for x, info in zip(inputs, infos)]
    with make_executor(num_threads=num_threads) as executor:
        return executor.map(functools.partial(_score_one, min_score), tasks)


def aggregate_vector_scores(
    score_dicts: Sequence[Mapping[str, float] | None],
) -> dict[str, float]:
    """The per-metric mean of `evaluate_vector`'s results (empty input: `{}`).

    Each metric is averaged over the dicts that report it; None entries are skipped
    (`opto.trainers.objectives.aggregate_score_dicts`).
    """
    return aggregate_score_dicts(score_dicts)
