"""Multi-objective scores: how several metrics per candidate become one choice.

A guide may score a response with several named metrics (a *score dict*, e.g.
`{"accuracy": 0.9, "cost": 0.2}`). An `ObjectiveConfig` says how trainers compare such
candidates:

* `mode="scalar"`: reduce each dict to one number (`scalarize_dict`: the `score_key`
  metric, the mean, or the weighted sum) and take the highest;
* `mode="weighted"`: the weighted sum of the metrics (minimized metrics negated);
* `mode="pareto"`: keep the candidates no other candidate dominates, then break the tie
  by weighted sum, lexicographically, or at random with a fixed seed.

Everything here is a pure function of its arguments. Plain numbers keep working: a
scalar score `s` is the dict `{"score": s}`. A candidate without a score (None) or whose
scalar is NaN never wins over one with a real score, as in `opto.trainers.ranking`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .ranking import score_key

__all__ = [
    "ObjectiveConfig",
    "aggregate_score_dicts",
    "apply_minimize",
    "dominates",
    "normalize_score",
    "pareto_rank",
    "score_dict_to_scalar",
    "select_best",
    "select_top_k",
    "to_scalar_score",
    "to_score_dict",
    "weighted_scalarize",
]

MODES = ("scalar", "weighted", "pareto")
TIE_BREAKS = ("weighted", "lexicographic", "random_seeded")
SCALARIZE_DICT = ("score", "mean", "weighted")

ScoreDict = dict[str, float]


def _choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(
            f"ObjectiveConfig.{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}"
        )


def _metric_names(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"ObjectiveConfig.{name} must be a collection of metric names (e.g. "
            f"{{'cost'}}), not {value!r}"
        )
    names = tuple(value)
    for item in names:
        if not isinstance(item, str) or not item:
            raise TypeError(f"ObjectiveConfig.{name} holds {item!r}; metric names are strings")
    return names


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """How candidates with score dicts are compared (immutable; validated on creation).

    Attributes:
        mode: "scalar" (reduce each dict with `scalarize_dict`), "weighted" (weighted sum)
            or "pareto" (non-dominated front, then `tie_break`).
        weights: metric -> weight (>= 0). Empty means weight 1 for every metric.
        minimize: metrics where lower is better; they are negated before any comparison.
        missing_value: the value of a weighted metric a dict lacks (default -inf).
        pareto_metrics: the metrics the Pareto ranking uses (default: all present).
        tie_break: how one member of the Pareto front is chosen: "weighted" (largest
            weighted sum), "lexicographic" (largest values compared metric by metric in
            sorted name order, over `pareto_metrics` when given) or "random_seeded" (random with `seed`).
        seed: seed of the "random_seeded" tie-break.
        scalarize_dict: in "scalar" mode, how a dict becomes one number: "score" (the
            `score_key` metric), "mean" (of all metrics) or "weighted" (weighted sum).
        score_key: the metric read when `scalarize_dict="score"`.
    """

    mode: str = "scalar"
    weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    minimize: frozenset[str] = frozenset()
    missing_value: float = -math.inf
    pareto_metrics: tuple[str, ...] | None = None
    tie_break: str = "weighted"
    seed: int = 0
    scalarize_dict: str = "score"
    score_key: str = "score"

    def __post_init__(self) -> None:
        _choice("mode", self.mode, MODES)
        _choice("tie_break", self.tie_break, TIE_BREAKS)
        _choice("scalarize_dict", self.scalarize_dict, SCALARIZE_DICT)
        if not isinstance(self.weights, Mapping):
            raise TypeError(
                f"ObjectiveConfig.weights must be a dict of metric -> weight, not "
                f"{type(self.weights).__name__}"
            )
        weights: dict[str, float] = {}
        for key, value in self.weights.items():
            if not isinstance(key, str):
                raise TypeError(f"ObjectiveConfig.weights key {key!r} is not a metric name")
            if not _is_number(value):
                raise TypeError(f"ObjectiveConfig.weights[{key!r}] must be a number, not {value!r}")
            if not math.isfinite(float(value)) or float(value) < 0:
                raise ValueError(
                    f"ObjectiveConfig.weights[{key!r}] is {value!r}; weights must be finite "
                    "and >= 0 (to prefer lower values, list the metric in minimize)"
                )
            weights[key] = float(value)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "minimize", frozenset(_metric_names("minimize", self.minimize)))
        if not _is_number(self.missing_value) or math.isnan(float(self.missing_value)):
            raise ValueError(
                f"ObjectiveConfig.missing_value must be a number (not NaN), not "
                f"{self.missing_value!r}"
            )
        object.__setattr__(self, "missing_value", float(self.missing_value))
        if self.pareto_metrics is not None:
            metrics = _metric_names("pareto_metrics", self.pareto_metrics)
            if not metrics:
                raise ValueError(
                    "ObjectiveConfig.pareto_metrics is empty; list at least one metric, or "
                    "pass None to rank on every metric"
                )
            object.__setattr__(self, "pareto_metrics", metrics)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f"ObjectiveConfig.seed must be an int, not {self.seed!r}")
        if not isinstance(self.score_key, str) or not self.score_key:
            raise ValueError(
                f"ObjectiveConfig.score_key must be a non-empty metric name, not {self.score_key!r}"
            )

    def __hash__(self) -> int:
        return hash(
            (
                self.mode,
                tuple(sorted(self.weights.items())),
                self.minimize,
                self.missing_value,
                self.pareto_metrics,
                self.tie_break,
                self.seed,
                self.scalarize_dict,
                self.score_key,
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (for run configs and checkpoints); `from_dict` inverts it."""
        return {
            "mode": self.mode,
            "weights": dict(self.weights),
            "minimize": sorted(self.minimize),
            "missing_value": self.missing_value,
            "pareto_metrics": None if self.pareto_metrics is None else list(self.pareto_metrics),
            "tie_break": self.tie_break,
            "seed": int(self.seed),
            "scalarize_dict": self.scalarize_dict,
            "score_key": self.score_key,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectiveConfig:
        """The config `to_dict` described."""
        return cls(**dict(data))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real)


# -- conversions ----------------------------------------------------------------------------


def to_score_dict(score: Any) -> ScoreDict:
    """`score` as a dict of finite floats: a number `s` becomes `{"score": s}`.

    A bool, int or float is converted; a dict must be non-empty, keyed by strings, with
    finite numbers as values. Raises TypeError for any other type (or a non-numeric
    metric) and ValueError for an empty dict, NaN or an infinite value.
    """
    if _is_number(score):
        value = float(score)
        if not math.isfinite(value):
            raise ValueError(f"the score {score!r} is not finite; a score must be a real number")
        return {"score": value}
    if isinstance(score, Mapping):
        if not score:
            raise ValueError("the score dict is empty; report at least one metric")
        out: ScoreDict = {}
        for key, value in score.items():
            if not isinstance(key, str):
                raise TypeError(f"the score dict key {key!r} is not a metric name (a str)")
            if not _is_number(value):
                raise TypeError(
                    f"the score dict's metric {key!r} is {value!r}; metric values must be numbers"
                )
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(
                    f"the score dict's metric {key!r} is {value!r}; metric values must be finite"
                )
            out[key] = number
        return out
    raise TypeError(
        f"a score must be a number or a dict of metric -> number, not {type(score).__name__}"
    )


#: Another name of `to_score_dict`.
normalize_score = to_score_dict


def apply_minimize(score_dict: Mapping[str, float], minimize: Iterable[str]) -> ScoreDict:
    """A new dict where the metrics in `minimize` are negated (so higher is better)."""
    lower = frozenset(minimize)
    return {key: -value if key in lower else value for key, value in score_dict.items()}


def weighted_scalarize(
    score_dict: Mapping[str, float],
    weights: Mapping[str, float],
    missing_value: float = -math.inf,
) -> float:
    """Σ weight·value over the metrics in `weights` (a weighted metric the dict lacks
    counts as `missing_value`; metrics without a weight are ignored; no weights: 0.0).

    A weight of 0 contributes nothing, even for a missing or infinite value.
    """
    total = 0.0
    for key, weight in weights.items():
        if weight == 0:
            continue
        total += weight * score_dict.get(key, missing_value)
    return total


def _effective_weights(
    score_dict: Mapping[str, float], config: ObjectiveConfig
) -> Mapping[str, float]:
    return config.weights or dict.fromkeys(score_dict, 1.0)


def _weighted(score_dict: Mapping[str, float], config: ObjectiveConfig) -> float:
    """Weighted sum (weight 1 per metric when `config.weights` is empty) of a signed dict."""
    return weighted_scalarize(
        score_dict, _effective_weights(score_dict, config), config.missing_value
    )


def score_dict_to_scalar(score_dict: Mapping[str, float], config: ObjectiveConfig) -> float:
    """One number for `score_dict` (minimized metrics negated first), by `config.scalarize_dict`.

    "score" reads `config.score_key` (ValueError if the dict lacks it), "mean" averages
    every metric, "weighted" is the weighted sum (weight 1 per metric if no weights).
    """
    signed = apply_minimize(score_dict, config.minimize)
    if config.scalarize_dict == "score":
        if config.score_key not in signed:
            raise ValueError(
                f"the score dict has no metric {config.score_key!r} (it has "
                f"{sorted(signed)}); set ObjectiveConfig(score_key=...) to one of them, or "
                "scalarize_dict='mean' or 'weighted'"
            )
        return float(signed[config.score_key])
    if config.scalarize_dict == "mean":
        if not signed:
            raise ValueError("the score dict is empty; it has no mean")
        return math.fsum(signed.values()) / len(signed)
    return _weighted(signed, config)


def to_scalar_score(score: Any, config: ObjectiveConfig | None = None) -> float:
    """One number for `score`: a number passes through (as a float); a dict is reduced
    with `score_dict_to_scalar`, which needs a `config` (ValueError without one: there is
    no hidden reduction)."""
    if _is_number(score):
        return float(score)
    if isinstance(score, Mapping):
        if config is None:
            raise ValueError(
                f"the score is a dict of metrics ({sorted(score)}) and no ObjectiveConfig says "
                "how to reduce it to one number (no hidden reduction); pass objective_config="
                "ObjectiveConfig(...)"
            )
        return score_dict_to_scalar(to_score_dict(score), config)
    raise TypeError(
        f"a score must be a number or a dict of metric -> number, not {type(score).__name__}"
    )


# -- Pareto dominance -----------------------------------------------------------------------


def _metrics_of(dicts: Iterable[Mapping[str, float]]) -> list[str]:
    return sorted({key for d in dicts for key in d})


def dominates(
    a: Mapping[str, float], b: Mapping[str, float], metrics: Sequence[str] | None = None
) -> bool:
    """Whether `a` Pareto-dominates `b`: at least as good on every metric of `metrics`
    (default: every metric either has) and strictly better on one. Higher is better; a
    missing metric counts as -inf."""
    names = _metrics_of((a, b)) if metrics is None else metrics
    better = False
    for name in names:
        x, y = a.get(name, -math.inf), b.get(name, -math.inf)
        if x < y:
            return False
        if x > y:
            better = True
    return better


def pareto_rank(
    candidates: Sequence[Mapping[str, float]], metrics: Sequence[str] | None = None
) -> list[int]:
    """Non-dominated sorting: each candidate's rank, 0 for the Pareto front, 1 for the
    front once rank 0 is removed, and so on (metrics default to all present)."""
    names = _metrics_of(candidates) if metrics is None else list(metrics)
    n = len(candidates)
    dominated_by = [0] * n
    dominating: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(candidates[i], candidates[j], names):
                dominating[i].append(j)
                dominated_by[j] += 1
            elif dominates(candidates[j], candidates[i], names):
                dominating[j].append(i)
                dominated_by[i] += 1
    ranks = [-1] * n
    front = [i for i in range(n) if dominated_by[i] == 0]
    rank = 0
    while front:
        following: list[int] = []
        for i in front:
            ranks[i] = rank
            for j in dominating[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        front = sorted(following)
        rank += 1
    return ranks


# -- selection ------------------------------------------------------------------------------


def _check_candidates(candidates: Sequence[Any], what: str) -> None:
    for item in candidates:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(
                f"{what} takes a list of (score, payload) pairs, but got the item {item!r:.80}"
            )


def _scalar_order(
    candidates: Sequence[tuple[Any, Any]], config: ObjectiveConfig | None
) -> list[int]:
    """Indices best first by the scalar (scalar mode / no config); ties keep input order."""

    def value(score: Any) -> Any:
        if score is None:
            return None
        if isinstance(score, Mapping):
            if config is None:
                return to_scalar_score(score, None)  # raises: no hidden reduction
            return score_dict_to_scalar(_ranking_dict(score), config)
        return score

    keys = [score_key(value(score)) for score, _ in candidates]
    return sorted(range(len(candidates)), key=lambda i: (keys[i][0], keys[i][1], -i), reverse=True)


def _ranking_dict(score: Any) -> ScoreDict:
    """`score` as a dict of floats for ranking: like `to_score_dict`, but non-finite values
    are kept (the callers rank NaN last)."""
    if _is_number(score):
        pairs: Iterable[tuple[Any, Any]] = [("score", score)]
    elif isinstance(score, Mapping):
        pairs = score.items()
    else:
        raise TypeError(
            f"a score must be a number or a dict of metric -> number, not {type(score).__name__}"
        )
    out: ScoreDict = {}
    for key, value in pairs:
        if not _is_number(value):
            raise TypeError(
                f"the score dict's metric {key!r} is {value!r}; metric values must be numbers"
            )
        out[str(key)] = float(value)
    return out


def _signed_dicts(
    candidates: Sequence[tuple[Any, Any]], config: ObjectiveConfig
) -> list[ScoreDict | None]:
    """Each score as a dict with minimized metrics negated and NaN metrics at -inf (an
    undefined metric is the worst value, whichever its direction)."""
    out: list[ScoreDict | None] = []
    for score, _ in candidates:
        if score is None:
            out.append(None)
            continue
        signed = apply_minimize(_ranking_dict(score), config.minimize)
        out.append({k: -math.inf if math.isnan(v) else v for k, v in signed.items()})
    return out


def _tie_break_order(
    members: list[int], signed: Sequence[ScoreDict | None], config: ObjectiveConfig, seed: int
) -> list[int]:
    """`members` best first by `config.tie_break` (ties keep input order)."""
    if config.tie_break == "random_seeded":
        shuffled = sorted(members)
        random.Random(seed).shuffle(shuffled)
        return shuffled
    if config.tie_break == "lexicographic":
        names = sorted(config.pareto_metrics or _metrics_of(d for d in signed if d is not None))

        def key(i: int) -> tuple[Any, ...]:
            d = signed[i] or {}
            return (*(d.get(name, -math.inf) for name in names), -i)

    else:

        def key(i: int) -> tuple[Any, ...]:
            return (score_key(_weighted(signed[i] or {}, config)), -i)

    return sorted(members, key=key, reverse=True)


def _ordered(
    candidates: Sequence[tuple[Any, Any]], config: ObjectiveConfig | None, what: str
) -> list[int]:
    _check_candidates(candidates, what)
    if config is None or config.mode == "scalar":
        return _scalar_order(candidates, config)
    signed = _signed_dicts(candidates, config)
    scored = [i for i, d in enumerate(signed) if d is not None]
    unscored = [i for i, d in enumerate(signed) if d is None]
    if config.mode == "weighted":
        values = {i: score_key(_weighted(signed[i], config)) for i in scored}  # type: ignore[arg-type]
        return sorted(scored, key=lambda i: (values[i], -i), reverse=True) + unscored
    ranks = pareto_rank([signed[i] for i in scored], config.pareto_metrics)  # type: ignore[misc]
    order: list[int] = []
    for rank in range(max(ranks, default=-1) + 1):
        members = [i for i, r in zip(scored, ranks) if r == rank]
        order.extend(_tie_break_order(members, signed, config, config.seed + rank))
    return order + unscored


def select_best(
    candidates: Sequence[tuple[Any, Any]], config: ObjectiveConfig | None = None
) -> int:
    """Index of the best `(score, payload)` candidate under `config`.

    No config or "scalar" mode: the highest scalar (dicts reduced by `scalarize_dict`).
    "weighted": the highest weighted sum after the minimize signs. "pareto": a member of
    the Pareto front chosen by `tie_break`. Ties go to the earliest candidate; a None
    score never wins over a real one. Raises ValueError for no candidates.
    """
    if not candidates:
        raise ValueError("select_best needs at least one (score, payload) candidate")
    return _ordered(candidates, config, "select_best")[0]


def select_top_k(
    candidates: Sequence[tuple[Any, Any]], config: ObjectiveConfig | None, k: int
) -> list[int]:
    """Indices of the `k` best candidates, best first, in `select_best`'s order.

    In "pareto" mode whole ranks are taken in turn (the front first), each sorted by the
    tie-break; the random tie-break of rank r uses `seed + r`. Fewer than `k` candidates
    give them all.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be an int >= 0, not {k!r}")
    return _ordered(candidates, config, "select_top_k")[:k]


def aggregate_score_dicts(score_dicts: Sequence[Mapping[str, float] | None]) -> ScoreDict:
    """Per-metric mean: each metric over the dicts that report it; None entries skipped;
    no dicts give `{}`."""
    totals: dict[str, list[float]] = {}
    for scores in score_dicts:
        if scores is None:
            continue
        for key, value in scores.items():
            totals.setdefault(key, []).append(float(value))
    return {key: math.fsum(values) / len(values) for key, values in totals.items()}
