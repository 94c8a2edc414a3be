"""The per-instance Pareto frontier of GEPA-style search, as pure functions.

Every candidate of a GEPA search is scored on the same fixed examples (the Pareto subset),
so each has a vector of per-instance scores. The functions here decide from those vectors:

* `instance_winners` / `count_wins`: on each instance, the candidates no other candidate
  beats there (every candidate tied at the best score wins; under an `ObjectiveConfig` in
  "pareto" mode, every candidate whose score dict no other one dominates on the instance);
  a candidate's wins are the instances it wins, so one that is best on a few instances
  only stays on the frontier even if its mean is low;
* `sample_parent`: a frontier member drawn with weight `wins ** (1 / temperature)`;
* `choose_merge_pair` and `crossover` / `fresh_crossover`: two frontier members that are
  not ancestor and descendant and were not tried together before, and a per-parameter
  mix of them (one not seen before): a parameter only one of them changed since their
  newest common ancestor comes from that one, any other from either at random;
* `rank_key`: the (wins, mean) order used to trim a buffer.

An unscored instance (None) never wins. An instance on which every candidate wins (all
tied, e.g. all failed or all solved) tells them apart on nothing and gives no wins, so
such instances do not flatten the parent weights.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..objectives import ObjectiveConfig, apply_minimize, dominates
from ..ranking import is_score, rank_value
from ..utils import ParamSet

__all__ = [
    "ancestors",
    "choose_merge_pair",
    "common_ancestor",
    "count_wins",
    "crossover",
    "fresh_crossover",
    "instance_winners",
    "rank_key",
    "sample_parent",
]


def _column(vectors: Sequence[Sequence[Any]], instance: int) -> list[Any]:
    return [vector[instance] if instance < len(vector) else None for vector in vectors]


def _scalar_winners(values: Sequence[Any]) -> list[int]:
    real = [float(v) for v in values if is_score(v)]
    if not real:
        return []
    best = max(real)
    if best == -math.inf:
        return []
    winners = [i for i, v in enumerate(values) if is_score(v) and float(v) == best]
    return [] if len(winners) == len(values) > 1 else winners


def _pareto_winners(
    dicts: Sequence[Mapping[str, float] | None], config: ObjectiveConfig
) -> list[int]:
    signed = [None if d is None else apply_minimize(d, config.minimize) for d in dicts]
    metrics = config.pareto_metrics
    members = [i for i, d in enumerate(signed) if d]
    winners = [
        i
        for i in members
        if not any(dominates(signed[j], signed[i], metrics) for j in members if j != i)  # type: ignore[arg-type]
    ]
    return [] if len(winners) == len(dicts) > 1 else winners


def instance_winners(
    vectors: Sequence[Sequence[Any]],
    *,
    score_dicts: Sequence[Sequence[Mapping[str, float] | None]] | None = None,
    config: ObjectiveConfig | None = None,
) -> list[list[int]]:
    """For each instance, the indices of the candidates that win it.

    `vectors[c][i]` is candidate c's (scalar) score on instance i. Every candidate tied at
    the instance's best score wins it, unless that is every candidate (of two or more):
    then the instance has no winner. With `config` in "pareto" mode and `score_dicts`
    (`score_dicts[c][i]` the score dict), the winners are the candidates whose dict no
    other candidate's dominates (minimized metrics negated, `pareto_metrics` only).
    """
    size = max((len(v) for v in vectors), default=0)
    pareto = config is not None and config.mode == "pareto" and score_dicts is not None
    winners = []
    for instance in range(size):
        if pareto:
            assert score_dicts is not None and config is not None
            winners.append(_pareto_winners(_column(score_dicts, instance), config))
        else:
            winners.append(_scalar_winners(_column(vectors, instance)))
    return winners


def count_wins(
    vectors: Sequence[Sequence[Any]],
    *,
    score_dicts: Sequence[Sequence[Mapping[str, float] | None]] | None = None,
    config: ObjectiveConfig | None = None,
) -> list[int]:
    """How many instances each candidate wins (see `instance_winners`)."""
    wins = [0] * len(vectors)
    for winners in instance_winners(vectors, score_dicts=score_dicts, config=config):
        for index in winners:
            wins[index] += 1
    return wins


def rank_key(wins: int, mean: float | None, created: int) -> tuple[int, float, int]:
    """Sort key, larger is better: more wins, then a higher mean, then older."""
    return (wins, rank_value(mean), -created)


def sample_parent(wins: Sequence[int], temperature: float, rng: random.Random) -> int:
    """Index of a parent drawn among the candidates with wins, weight `wins ** (1/T)`.

    `temperature <= 0` takes the most wins (ties: the first). When no candidate has a win
    (every instance failed), every candidate has weight 1.
    """
    if not wins:
        raise ValueError("sample_parent needs at least one candidate")
    if temperature <= 0:
        return max(range(len(wins)), key=lambda i: (wins[i], -i))
    if not any(wins):
        return rng.randrange(len(wins))
    # (w / top) ** (1/T) is the same distribution, and never overflows for a small T
    top = math.log(max(wins))
    weights = [math.exp((math.log(w) - top) / temperature) if w > 0 else 0.0 for w in wins]
    return rng.choices(range(len(wins)), weights=weights)[0]


def ancestors(candidate_id: int, parents: Mapping[int, Sequence[int]]) -> set[int]:
    """Every id `candidate_id` descends from (through `parents`: id -> parent ids)."""
    seen: set[int] = set()
    stack = list(parents.get(candidate_id, ()))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(parents.get(current, ()))
    return seen


def choose_merge_pair(
    ids: Sequence[int],
    keys: Mapping[int, str],
    parents: Mapping[int, Sequence[int]],
    tried: set[tuple[int, int]],
    rng: random.Random,
    attempts: int = 8,
) -> tuple[int, int] | None:
    """Two of `ids` to merge, or None after `attempts` random draws found none.

    A pair qualifies when the two have different values (`keys`), neither descends from
    the other, and it is not in `tried` (pairs as sorted id tuples).
    """
    if len(ids) < 2:
        return None
    for _ in range(attempts):
        a, b = rng.sample(list(ids), 2)
        pair = (min(a, b), max(a, b))
        if pair in tried or keys[a] == keys[b]:
            continue
        if a in ancestors(b, parents) or b in ancestors(a, parents):
            continue
        return pair
    return None


def common_ancestor(a: int, b: int, parents: Mapping[int, Sequence[int]]) -> int | None:
    """The newest (largest id) candidate both `a` and `b` descend from, or None."""
    shared = ancestors(a, parents) & ancestors(b, parents)
    return max(shared) if shared else None


def crossover(
    a: ParamSet, b: ParamSet, rng: random.Random, base: ParamSet | None = None
) -> ParamSet:
    """Each parameter's value from `a` or `b` (paths in sorted order).

    With `base` (the values of a common ancestor), a parameter only one of them changed
    from `base` comes from that one, so the mix keeps both lines' edits; every other
    parameter comes from either with equal chance (uniform crossover).
    """
    mixed = {}
    for path in sorted(a):
        draw = rng.random()
        if path not in b or a[path] == b[path]:
            mixed[path] = a[path]
        elif base is not None and path in base and a[path] == base[path]:
            mixed[path] = b[path]
        elif base is not None and path in base and b[path] == base[path]:
            mixed[path] = a[path]
        else:
            mixed[path] = b[path] if draw >= 0.5 else a[path]
    return mixed


def fresh_crossover(
    a: ParamSet,
    b: ParamSet,
    rng: random.Random,
    known: Callable[[ParamSet], bool],
    tries: int = 16,
    base: ParamSet | None = None,
) -> ParamSet | None:
    """A `crossover` of `a` and `b` (over `base`) that `known` does not recognize (e.g.
    values already scored, which include both parents), or None after `tries` draws."""
    for _ in range(tries):
        mixed = crossover(a, b, rng, base)
        if not known(mixed):
            return mixed
    return None
