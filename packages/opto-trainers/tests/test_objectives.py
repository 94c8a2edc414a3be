"""opto.trainers.objectives: ObjectiveConfig and the pure multi-objective functions."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle

import pytest
from opto.trainers.objectives import (
    ObjectiveConfig,
    aggregate_score_dicts,
    apply_minimize,
    dominates,
    normalize_score,
    pareto_rank,
    score_dict_to_scalar,
    select_best,
    select_top_k,
    to_scalar_score,
    to_score_dict,
    weighted_scalarize,
)

# -- ObjectiveConfig ------------------------------------------------------------------------


def test_config_defaults():
    cfg = ObjectiveConfig()
    assert cfg.mode == "scalar"
    assert cfg.weights == {}
    assert cfg.minimize == frozenset()
    assert cfg.missing_value == -math.inf
    assert cfg.pareto_metrics is None
    assert cfg.tie_break == "weighted"
    assert cfg.seed == 0
    assert cfg.scalarize_dict == "score"
    assert cfg.score_key == "score"


def test_config_is_immutable_and_hashable():
    cfg = ObjectiveConfig(mode="weighted", weights={"a": 1.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mode = "pareto"  # type: ignore[misc]
    assert hash(cfg) == hash(ObjectiveConfig(mode="weighted", weights={"a": 1}))
    assert cfg == ObjectiveConfig(mode="weighted", weights={"a": 1})


def test_config_copies_the_weights_it_is_given():
    weights = {"a": 1.0}
    cfg = ObjectiveConfig(weights=weights)
    weights["a"] = 5.0
    assert cfg.weights == {"a": 1.0}


def test_config_minimize_set_becomes_frozenset():
    cfg = ObjectiveConfig(minimize={"cost"})
    assert isinstance(cfg.minimize, frozenset) and cfg.minimize == {"cost"}
    assert ObjectiveConfig(minimize=["cost", "latency"]).minimize == {"cost", "latency"}


def test_config_minimize_bare_string_is_rejected():
    with pytest.raises(TypeError, match="collection of metric names"):
        ObjectiveConfig(minimize="cost")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "best"}, ValueError, "mode must be one of"),
        ({"tie_break": "coin"}, ValueError, "tie_break must be one of"),
        ({"scalarize_dict": "max"}, ValueError, "scalarize_dict must be one of"),
        ({"weights": {"a": -1.0}}, ValueError, r"weights\['a'\] is -1.0"),
        ({"weights": {"a": math.inf}}, ValueError, "finite and >= 0"),
        ({"weights": {"a": "heavy"}}, TypeError, "must be a number"),
        ({"weights": [("a", 1.0)]}, TypeError, "weights must be a dict"),
        ({"pareto_metrics": ()}, ValueError, "pareto_metrics is empty"),
        ({"score_key": ""}, ValueError, "score_key must be a non-empty"),
        ({"score_key": None}, ValueError, "score_key must be a non-empty"),
        ({"missing_value": math.nan}, ValueError, "missing_value"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
    ],
)
def test_config_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        ObjectiveConfig(**kwargs)


def test_config_pareto_metrics_list_becomes_tuple():
    assert ObjectiveConfig(pareto_metrics=["a", "b"]).pareto_metrics == ("a", "b")


def test_config_round_trips_through_dict_pickle_and_copy():
    cfg = ObjectiveConfig(
        mode="pareto",
        weights={"a": 2.0},
        minimize={"c"},
        pareto_metrics=("a", "c"),
        tie_break="random_seeded",
        seed=7,
    )
    assert ObjectiveConfig.from_dict(cfg.to_dict()) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert copy.deepcopy(cfg) == cfg


# -- to_score_dict --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.5, {"score": 0.5}),
        (3, {"score": 3.0}),
        (True, {"score": 1.0}),
        (False, {"score": 0.0}),
        ({"a": 1, "b": 0.25}, {"a": 1.0, "b": 0.25}),
    ],
)
def test_to_score_dict_converts(score, expected):
    result = to_score_dict(score)
    assert result == expected
    assert all(type(v) is float for v in result.values())


def test_to_score_dict_returns_a_new_dict():
    original = {"a": 1.0}
    result = to_score_dict(original)
    result["a"] = 2.0
    assert original == {"a": 1.0}


def test_normalize_score_is_to_score_dict():
    assert normalize_score is to_score_dict


@pytest.mark.parametrize("score", ["0.5", None, [1.0], (1.0, "ok"), object()])
def test_to_score_dict_rejects_other_types(score):
    with pytest.raises(TypeError, match="a score must be a number or a dict"):
        to_score_dict(score)


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf])
def test_to_score_dict_rejects_non_finite_numbers(score):
    with pytest.raises(ValueError, match="not finite"):
        to_score_dict(score)


def test_to_score_dict_rejects_empty_dict():
    with pytest.raises(ValueError, match="empty"):
        to_score_dict({})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_to_score_dict_rejects_non_finite_metric(value):
    with pytest.raises(ValueError, match=r"'a'.*must be finite"):
        to_score_dict({"a": value})


def test_to_score_dict_rejects_non_numeric_metric_and_key():
    with pytest.raises(TypeError, match="metric values must be numbers"):
        to_score_dict({"a": "high"})
    with pytest.raises(TypeError, match="not a metric name"):
        to_score_dict({1: 0.5})


# -- scalars --------------------------------------------------------------------------------


def test_score_dict_to_scalar_reads_the_score_key():
    assert score_dict_to_scalar({"score": 0.4, "cost": 9}, ObjectiveConfig()) == 0.4
    cfg = ObjectiveConfig(score_key="acc")
    assert score_dict_to_scalar({"acc": 0.7, "cost": 9}, cfg) == 0.7


def test_score_dict_to_scalar_missing_score_key_raises():
    with pytest.raises(ValueError, match=r"no metric 'score'.*'acc'"):
        score_dict_to_scalar({"acc": 0.7}, ObjectiveConfig())


def test_score_dict_to_scalar_mean_and_weighted_apply_minimize_first():
    sd = {"acc": 0.8, "cost": 0.2}
    mean = ObjectiveConfig(scalarize_dict="mean", minimize={"cost"})
    assert score_dict_to_scalar(sd, mean) == pytest.approx((0.8 - 0.2) / 2)
    weighted = ObjectiveConfig(
        scalarize_dict="weighted", weights={"acc": 2.0, "cost": 1.0}, minimize={"cost"}
    )
    assert score_dict_to_scalar(sd, weighted) == pytest.approx(1.6 - 0.2)
    minimized_key = ObjectiveConfig(score_key="cost", minimize={"cost"})
    assert score_dict_to_scalar(sd, minimized_key) == -0.2


def test_score_dict_to_scalar_weighted_without_weights_sums_every_metric():
    cfg = ObjectiveConfig(scalarize_dict="weighted")
    assert score_dict_to_scalar({"a": 0.5, "b": 0.25}, cfg) == 0.75


def test_weighted_sum_differs_from_mean():
    sd = {"a": 1.0, "b": 0.0}
    mean = score_dict_to_scalar(sd, ObjectiveConfig(scalarize_dict="mean"))
    weighted = score_dict_to_scalar(
        sd, ObjectiveConfig(scalarize_dict="weighted", weights={"a": 0.9, "b": 0.1})
    )
    assert mean == 0.5 and weighted == pytest.approx(0.9)


def test_to_scalar_score_passes_scalars_through():
    assert to_scalar_score(0.3) == 0.3
    assert to_scalar_score(2, ObjectiveConfig()) == 2.0
    assert to_scalar_score(True) == 1.0


def test_to_scalar_score_dict_needs_a_config():
    with pytest.raises(ValueError, match="no hidden reduction"):
        to_scalar_score({"score": 1.0})
    assert to_scalar_score({"score": 1.0, "x": 5}, ObjectiveConfig()) == 1.0


def test_to_scalar_score_rejects_other_types():
    with pytest.raises(TypeError, match="a score must be"):
        to_scalar_score("1.0")


# -- apply_minimize / weighted_scalarize ----------------------------------------------------


def test_apply_minimize_negates_only_listed_metrics_and_copies():
    sd = {"acc": 0.9, "cost": 2.0}
    out = apply_minimize(sd, {"cost", "absent"})
    assert out == {"acc": 0.9, "cost": -2.0}
    assert sd == {"acc": 0.9, "cost": 2.0} and out is not sd
    assert apply_minimize(sd, frozenset()) == sd


def test_weighted_scalarize_empty_weights_is_zero():
    assert weighted_scalarize({"a": 3.0}, {}) == 0.0


def test_weighted_scalarize_ignores_unweighted_metrics():
    assert weighted_scalarize({"a": 1.0, "b": 100.0}, {"a": 2.0}) == 2.0


def test_weighted_scalarize_missing_metric_uses_missing_value():
    assert weighted_scalarize({"a": 1.0}, {"a": 1.0, "b": 2.0}, missing_value=0.5) == 2.0
    assert weighted_scalarize({"a": 1.0}, {"a": 1.0, "b": 2.0}) == -math.inf


def test_weighted_scalarize_zero_weight_ignores_missing_metric():
    assert weighted_scalarize({"a": 1.0}, {"a": 1.0, "b": 0.0}) == 1.0


# -- dominance ------------------------------------------------------------------------------


def test_dominates():
    assert dominates({"a": 2, "b": 1}, {"a": 1, "b": 1})
    assert not dominates({"a": 1, "b": 1}, {"a": 1, "b": 1})  # equal: not strictly better
    assert not dominates({"a": 2, "b": 0}, {"a": 1, "b": 1})  # a trade-off
    assert not dominates({"a": 1, "b": 1}, {"a": 2, "b": 1})


def test_dominates_missing_metric_is_minus_infinity():
    assert dominates({"a": 1, "b": 0}, {"a": 1})
    assert not dominates({"a": 1}, {"a": 1, "b": 0})


def test_dominates_restricted_to_metrics():
    a, b = {"a": 2, "b": 0}, {"a": 1, "b": 5}
    assert dominates(a, b, ["a"]) and not dominates(a, b)


def test_pareto_rank_layers():
    cands = [
        {"a": 3, "b": 1},  # front
        {"a": 1, "b": 3},  # front
        {"a": 2, "b": 2},  # front (trade-off with both)
        {"a": 1, "b": 1},  # dominated by all of the front
        {"a": 0, "b": 0},  # dominated by rank 1
    ]
    assert pareto_rank(cands) == [0, 0, 0, 1, 2]
    assert pareto_rank(cands, ["a"]) == [0, 2, 1, 2, 3]
    assert pareto_rank([]) == []


def test_pareto_rank_identical_candidates_share_a_rank():
    assert pareto_rank([{"a": 1}, {"a": 1}, {"a": 0}]) == [0, 0, 1]


# -- select_best ----------------------------------------------------------------------------


def test_select_best_without_config_is_scalar_argmax_first_on_ties():
    assert select_best([(0.1, "x"), (0.9, "y"), (0.9, "z")]) == 1
    assert select_best([(0.5, "only")]) == 0


def test_select_best_needs_candidates_and_pairs():
    with pytest.raises(ValueError, match="at least one"):
        select_best([])
    with pytest.raises(TypeError, match=r"\(score, payload\) pairs"):
        select_best([0.5, 0.7])  # type: ignore[list-item]


def test_select_best_without_config_rejects_dicts():
    with pytest.raises(ValueError, match="no hidden reduction"):
        select_best([({"a": 1.0}, "x")])


def test_select_best_scalar_mode_reduces_dicts():
    cands = [({"score": 0.2, "b": 9}, "x"), ({"score": 0.8, "b": 0}, "y")]
    assert select_best(cands, ObjectiveConfig()) == 1
    assert select_best(cands, ObjectiveConfig(scalarize_dict="mean")) == 0


def test_select_best_nan_and_none_never_win():
    assert select_best([(math.nan, "a"), (-math.inf, "b")]) == 1
    assert select_best([(None, "a"), (0.0, "b")]) == 1
    assert select_best([(None, "a"), (None, "b")]) == 0
    cfg = ObjectiveConfig(mode="weighted")
    assert select_best([(None, "a"), ({"score": -5.0}, "b")], cfg) == 1
    pareto = ObjectiveConfig(mode="pareto")
    assert select_best([(None, "a"), ({"score": -5.0}, "b")], pareto) == 1


def test_select_best_nan_metric_is_worst_even_when_minimized():
    cfg = ObjectiveConfig(mode="weighted", minimize={"cost"})
    assert select_best([({"cost": math.nan}, "a"), ({"cost": 100.0}, "b")], cfg) == 1


def test_select_best_weighted_mode_uses_minimize_and_weights():
    cands = [({"acc": 0.9, "cost": 0.9}, "a"), ({"acc": 0.8, "cost": 0.1}, "b")]
    assert select_best(cands, ObjectiveConfig(mode="weighted")) == 0  # 1.8 vs 0.9
    assert select_best(cands, ObjectiveConfig(mode="weighted", minimize={"cost"})) == 1


def test_weights_change_the_winner():
    cands = [({"a": 1.0, "b": 0.0}, "A"), ({"a": 0.0, "b": 1.0}, "B")]
    assert select_best(cands, ObjectiveConfig(mode="weighted", weights={"a": 2, "b": 1})) == 0
    assert select_best(cands, ObjectiveConfig(mode="weighted", weights={"a": 1, "b": 2})) == 1


def test_select_best_weighted_mode_accepts_scalar_scores():
    assert select_best([(0.1, "a"), (0.3, "b")], ObjectiveConfig(mode="weighted")) == 1


PARETO = [
    ({"a": 0.5, "b": 0.5}, "A"),  # front, largest sum (1.0)
    ({"a": 0.9, "b": 0.05}, "B"),  # front, sum 0.95, best on a
    ({"a": 0.4, "b": 0.4}, "C"),  # dominated by A
    ({"a": 0.05, "b": 0.91}, "D"),  # front, sum 0.96, best on b
]


def test_select_best_pareto_weighted_tie_break():
    assert select_best(PARETO, ObjectiveConfig(mode="pareto")) == 0
    cfg = ObjectiveConfig(mode="pareto", weights={"a": 1.0, "b": 0.1})
    assert select_best(PARETO, cfg) == 1


def test_select_best_pareto_never_picks_a_dominated_candidate():
    # The dominated candidate has the largest weighted sum under these weights... but
    # only among non-front members: the choice is always on the front.
    cands = [({"a": 1.0, "b": 0.0}, "X"), ({"a": 0.0, "b": 1.0}, "Y"), ({"a": 0.0, "b": 0.9}, "Z")]
    cfg = ObjectiveConfig(mode="pareto", weights={"b": 1.0})
    assert select_best(cands, cfg) == 1


def test_select_best_pareto_lexicographic_tie_break():
    cfg = ObjectiveConfig(mode="pareto", tie_break="lexicographic")
    assert select_best(PARETO, cfg) == 1  # highest "a" first
    # the metric names are compared in sorted order, whatever order they are given in
    given = ObjectiveConfig(mode="pareto", tie_break="lexicographic", pareto_metrics=("b", "a"))
    assert select_best(PARETO, given) == 1
    renamed = [({"z": s["a"], "b": s["b"]}, p) for s, p in PARETO]  # now "b" sorts first
    assert select_best(renamed, cfg) == 3


def test_select_best_pareto_random_tie_break_is_seeded():
    picks = {
        seed: select_best(
            PARETO, ObjectiveConfig(mode="pareto", tie_break="random_seeded", seed=seed)
        )
        for seed in range(20)
    }
    assert set(picks.values()) <= {0, 1, 3}  # always a front member
    assert len(set(picks.values())) > 1  # the seed matters
    for seed, pick in picks.items():
        cfg = ObjectiveConfig(mode="pareto", tie_break="random_seeded", seed=seed)
        assert select_best(PARETO, cfg) == pick  # and is deterministic


def test_select_best_pareto_respects_minimize_and_pareto_metrics():
    cands = [({"acc": 0.9, "cost": 5.0}, "a"), ({"acc": 0.9, "cost": 1.0}, "b")]
    assert select_best(cands, ObjectiveConfig(mode="pareto", minimize={"cost"})) == 1
    only_acc = ObjectiveConfig(mode="pareto", pareto_metrics=("acc",), minimize={"cost"})
    # Both tie on acc (both on the front); the weighted tie-break sees -5 vs -1.
    assert select_best(cands, only_acc) == 1


# -- select_top_k ---------------------------------------------------------------------------


def test_select_top_k_scalar_order_and_bounds():
    cands = [(0.1, "a"), (0.9, "b"), (None, "c"), (0.5, "d"), (0.9, "e")]
    assert select_top_k(cands, None, 3) == [1, 4, 3]
    assert select_top_k(cands, None, 10) == [1, 4, 3, 0, 2]
    assert select_top_k(cands, None, 0) == []
    assert select_top_k([], None, 2) == []


@pytest.mark.parametrize("k", [-1, 1.5, True])
def test_select_top_k_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be an int >= 0"):
        select_top_k([(1.0, "a")], None, k)


def test_select_top_k_weighted():
    cands = [({"a": 1, "c": 1}, 0), ({"a": 3, "c": 0}, 1), ({"a": 0, "c": 0}, 2)]
    cfg = ObjectiveConfig(mode="weighted", minimize={"c"})
    assert select_top_k(cands, cfg, 3) == [1, 0, 2]


def test_select_top_k_pareto_fills_rank_by_rank():
    cfg = ObjectiveConfig(mode="pareto")
    assert select_top_k(PARETO, cfg, 4) == [0, 3, 1, 2]
    assert select_top_k(PARETO, cfg, 2) == [0, 3]
    assert select_top_k(PARETO, cfg, 1) == [select_best(PARETO, cfg)]


def test_select_top_k_pareto_random_uses_seed_plus_rank():
    cands = [
        ({"a": 3, "b": 0}, 0),
        ({"a": 0, "b": 3}, 1),
        ({"a": 2, "b": -1}, 2),  # rank 1
        ({"a": -1, "b": 2}, 3),  # rank 1
    ]
    first = select_top_k(cands, ObjectiveConfig(mode="pareto", tie_break="random_seeded"), 4)
    assert set(first[:2]) == {0, 1} and set(first[2:]) == {2, 3}
    # Rank r is shuffled with seed + r: rank 1 under seed 0 equals rank 0 under seed 1.
    seed1 = select_top_k(
        cands, ObjectiveConfig(mode="pareto", tie_break="random_seeded", seed=1), 4
    )
    assert [i - 2 for i in first[2:]] == seed1[:2]


# -- aggregate_score_dicts ------------------------------------------------------------------


def test_aggregate_score_dicts():
    assert aggregate_score_dicts([]) == {}
    assert aggregate_score_dicts([{"a": 1.0}]) == {"a": 1.0}
    assert aggregate_score_dicts([{"a": 1.0, "b": 2.0}, None, {"a": 3.0}]) == {
        "a": 2.0,
        "b": 2.0,
    }
    assert aggregate_score_dicts([None, None]) == {}
