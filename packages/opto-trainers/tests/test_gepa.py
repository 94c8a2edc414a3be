"""GEPA-style search (GEPAAlgorithmBase, GEPAUCBSearch, GEPABeamPareto): the per-instance
frontier, parent sampling, merge, buffer trimming, resume, budgets and objectives.

The task: an agent with two integers `p` and `q` answers `p` on the "p" examples and `q`
on the "q" examples (targets 3 and 2), so a candidate can be best on one kind of example
only. The file is also a training script for the kill test:
`python test_gepa.py DB RUN_NAME RESUME(0|1) [slow]` prints the result as JSON (`slow`
slows the guide and stops it once 3 steps are stored, so the test's SIGKILL lands mid-run).
"""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
from typing import Any

import pytest
from opto import trace
from opto.optimizers.optimizer import Optimizer
from opto.trainers.guide import Guide
from opto.trainers.objectives import ObjectiveConfig
from opto.trainers.options import UnknownTrainArgumentError
from opto.trainers.search.gepa import GEPAAlgorithmBase
from opto.trainers.search.gepa_frontier import (
    ancestors,
    choose_merge_pair,
    common_ancestor,
    count_wins,
    crossover,
    fresh_crossover,
    instance_winners,
    sample_parent,
)
from opto.trainers.search.gepa_variants import GEPABeamPareto, GEPAUCBSearch
from opto.utils.testing import ScriptedLLM

DATA = {"inputs": ["p1", "q1", "p2", "q2", "p3", "q3"], "infos": [3, 2, 3, 2, 3, 2]}
CLASSES = [GEPAUCBSearch, GEPABeamPareto, GEPAAlgorithmBase]


@trace.model
class Pair:
    """Answers `p` on "p..." examples and `q` on the others."""

    def __init__(self, p: int = 0, q: int = 0) -> None:
        self.p = trace.node(p, trainable=True, name="p")
        self.q = trace.node(q, trainable=True, name="q")

    def forward(self, x: Any) -> Any:
        return (self.p if x.startswith("p") else self.q) * 1


class PairGuide(Guide):
    """Score `1 - |error| / 5` (at least 0); the feedback names the parameter and the way."""

    def __init__(self, delay: float = 0.0, hold: Any = None) -> None:
        self.delay = delay
        self.hold = hold  # (db, run name, steps): block once that many steps are stored

    def get_feedback(self, query: Any, response: Any, reference: Any = None, **kwargs: Any):
        time.sleep(self.delay)
        if self.hold is not None:
            from support import hold_once_stored

            hold_once_stored(*self.hold)
        if response == reference:
            return 1.0, "correct"
        way = "small" if response < reference else "large"
        return max(0.0, 1.0 - abs(response - reference) / 5), f"{query[0]} too {way}"


class CountingGuide(PairGuide):
    """`PairGuide` counting its calls over every copy."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = [0]
        self.lock = threading.Lock()

    def copy(self) -> CountingGuide:
        return self

    def get_feedback(self, query: Any, response: Any, reference: Any = None, **kwargs: Any):
        with self.lock:
            self.calls[0] += 1
        return super().get_feedback(query, response, reference)


class PairMetricsGuide(PairGuide):
    """`PairGuide` that also reports `size`, the magnitude of the answer."""

    def get_score_dict(self, query: Any, response: Any, reference: Any = None, **kwargs: Any):
        return {
            "closeness": self.get_feedback(query, response, reference)[0],
            "size": float(abs(response)),
        }


class PairOptimizer(Optimizer):
    """Sends `p=P q=Q` and the feedback to its LLM, which answers the new `p=.. q=..`."""

    def __init__(self, parameters: Any, llm: Any) -> None:
        super().__init__(parameters)
        self.llm = llm

    def _step(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        nodes = {p.name.split(":")[0]: p for p in self.trainable_parameters}
        feedback = str(self.trace_graph.user_feedback)
        text = f"p={nodes['p'].data} q={nodes['q'].data}\n{feedback}"
        reply = self.llm(messages=[{"role": "user", "content": text}]).choices[0].message.content
        values = dict(re.findall(r"([pq])=(-?\d+)", reply))
        return {nodes[k]: int(v) for k, v in values.items()}


def nudge_pair(messages: list[dict[str, Any]], **_: Any) -> str:
    """Moves each of p and q one step the way most of its feedback asks (deterministic)."""
    text = messages[-1]["content"]
    values = {k: int(v) for k, v in re.findall(r"([pq])=(-?\d+)", text.splitlines()[0])}
    for name in ("p", "q"):
        small, large = text.count(f"{name} too small"), text.count(f"{name} too large")
        if small != large:
            values[name] += 1 if small > large else -1
    return f"p={values['p']} q={values['q']}"


def make(cls: type, script: Any = nudge_pair, **init: Any) -> tuple[Any, Pair, PairOptimizer]:
    agent = Pair()
    optimizer = PairOptimizer(agent.parameters(), ScriptedLLM(script))
    init.setdefault("num_threads", 4)
    init.setdefault("seed", 0)
    return cls(agent, optimizer, **init), agent, optimizer


def values(trainer: Any) -> list[tuple[int, int]]:
    return [(c.paramset["p"], c.paramset["q"]) for c in trainer.buffer]


# -- the frontier, as pure functions ---------------------------------------------------------


def test_every_candidate_tied_at_an_instances_best_wins_it_and_failures_never_win():
    vectors = [[1.0, 0.5, None, 0.0], [1.0, 0.2, None, float("-inf")], [0.5, 0.7, None, None]]
    assert instance_winners(vectors) == [[0, 1], [2], [], [0]]
    assert count_wins(vectors) == [2, 1, 1]
    assert count_wins([[float("-inf")], [None]]) == [0, 0]  # every candidate failed
    # an instance every candidate wins (all tied) tells them apart on nothing: no winner
    assert instance_winners([[1.0, 0.0], [1.0, 0.5]]) == [[], [1]]
    assert instance_winners([[0.5]]) == [[0]]  # a lone candidate wins what it scores on


def test_in_pareto_mode_the_undominated_candidates_of_each_instance_win():
    config = ObjectiveConfig(mode="pareto", minimize={"cost"})
    dicts = [
        [{"acc": 1.0, "cost": 3.0}, {"acc": 0.0, "cost": 1.0}],
        [{"acc": 0.5, "cost": 1.0}, {"acc": 0.0, "cost": 2.0}],
        [{"acc": 0.5, "cost": 2.0}, None],
    ]
    scalars = [[0.0, 0.0]] * 3  # ignored in pareto mode
    assert instance_winners(scalars, score_dicts=dicts, config=config) == [[0, 1], [0]]
    weighted = ObjectiveConfig(mode="weighted", minimize={"cost"})
    assert instance_winners([[1, 0], [2, 0], [2, 1]], score_dicts=dicts, config=weighted) == [
        [1, 2],
        [2],
    ]


def test_parents_are_drawn_by_wins_with_the_temperature():
    rng = random.Random(0)
    draws = [sample_parent([0, 1, 3], 1.0, rng) for _ in range(4000)]
    assert 0 not in draws  # no wins: never a parent while others have wins
    assert draws.count(2) / draws.count(1) == pytest.approx(3, rel=0.15)
    sharp = [sample_parent([0, 1, 3], 0.5, rng) for _ in range(4000)]
    assert sharp.count(2) / sharp.count(1) == pytest.approx(9, rel=0.25)
    assert sample_parent([2, 5, 5], 0, rng) == 1  # T <= 0: most wins, first on ties
    # a tiny temperature: the most wins only (weights that would overflow are scaled)
    assert {sample_parent([2, 5, 5], 1e-9, rng) for _ in range(100)} == {1, 2}
    assert {sample_parent([0, 0, 0], 1.0, rng) for _ in range(200)} == {0, 1, 2}
    with pytest.raises(ValueError, match="at least one"):
        sample_parent([], 1.0, rng)


def test_merge_pairs_skip_relatives_equal_values_and_tried_pairs():
    parents = {0: [], 1: [0], 3: [1], 4: [0, 3], 5: []}
    assert ancestors(4, parents) == {0, 1, 3}
    keys = {1: "x", 3: "z", 4: "w", 5: "x"}
    rng = random.Random(0)
    # 3 descends from 1, 4 from both; 1 and 5 hold equal values; (4, 5) was tried
    ids = [1, 3, 4, 5]
    pairs = {choose_merge_pair(ids, keys, parents, {(4, 5)}, rng, 50) for _ in range(30)}
    assert pairs == {(3, 5)}
    assert choose_merge_pair(ids, keys, parents, {(3, 5), (4, 5)}, rng, 50) is None
    assert choose_merge_pair([1], keys, parents, set(), rng) is None


def test_crossover_takes_each_parameter_from_one_parent():
    rng = random.Random(1)
    a, b = {"x": 1, "y": 2, "z": 3}, {"x": 10, "y": 20, "z": 30}
    mixes = [crossover(a, b, rng) for _ in range(200)]
    assert all(m[k] in (a[k], b[k]) for m in mixes for k in a)
    assert len({tuple(sorted(m.items())) for m in mixes}) == 8  # every mix occurs
    seen = {(1, 2, 3), (10, 20, 30), (1, 20, 3)}
    fresh = fresh_crossover(a, b, rng, lambda m: (m["x"], m["y"], m["z"]) in seen)
    assert fresh is not None and (fresh["x"], fresh["y"], fresh["z"]) not in seen
    assert fresh_crossover(a, a, rng, lambda m: m == a) is None  # no new mix exists
    # over a common ancestor, a value only one parent changed comes from that parent
    base = {"x": 1, "y": 20, "z": 0}
    guided = {tuple(crossover(a, b, rng, base).values()) for _ in range(100)}
    assert guided == {(10, 2, 3), (10, 2, 30)}  # x: b changed it, y: a did, z: both
    assert common_ancestor(4, 5, {4: [2], 5: [3], 2: [0, 1], 3: [1], 1: [0]}) == 1
    assert common_ancestor(4, 5, {4: [2], 5: [3]}) is None


# -- the search ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES)
def test_reaches_both_targets_on_the_pair_task(cls):
    trainer, agent, _ = make(cls)
    result = trainer.train(PairGuide(), DATA, num_search_iterations=8, pareto_subset_size=4)
    assert (agent.p.data, agent.q.data) == (3, 2)
    assert result.best_score == 1.0 and result.n_iters == 8
    assert trainer.pareto_subset_size == 4 and len(trainer.pareto_indices) == 4
    assert all(c.num_rollouts == 4 for c in trainer.buffer)


def test_a_specialist_stays_while_a_higher_mean_without_wins_is_evicted():
    # start (0, 0): p-instances score 0.4, q-instances 0.6
    script = ["p=3 q=0", "p=2 q=2", "p=2 q=1"]
    # (3, 0): 1.0 / 0.6 -> mean 0.8, best on every p-instance only
    # (2, 2): 0.8 / 1.0 -> mean 0.9, best on every q-instance
    # (2, 1): 0.8 / 0.8 -> mean 0.8 ... and (the UCB buffer holds 2) no win anywhere
    for cls, init, kwargs in [
        (GEPAUCBSearch, {"max_buffer_size": 2}, {}),
        (GEPABeamPareto, {}, {"beam_width": 2}),
    ]:
        trainer, agent, _ = make(cls, script, **init)
        trainer.train(
            PairGuide(),
            DATA,
            num_search_iterations=3,
            pareto_subset_size=6,
            minibatch_gate=False,
            merge_every=0,
            **kwargs,
        )
        assert sorted(values(trainer)) == [(2, 2), (3, 0)], cls
        assert trainer.wins() == [3, 3]
        assert (agent.p.data, agent.q.data) == (2, 2)  # the best mean


def test_the_candidate_the_agent_holds_is_never_evicted():
    # (1, 1): 0.6 / 0.8 -> mean 0.7; (0, 2): 0.4 / 1.0 -> mean 0.7, wins the q-instances;
    # (3, 3): 1.0 / 0.8 -> wins the p-instances, mean 0.9. With a buffer of 1 the best
    # mean stays, though (0, 2) has as many wins.
    trainer, agent, _ = make(GEPAUCBSearch, ["p=0 q=2", "p=3 q=3"], max_buffer_size=1)
    trainer.train(
        PairGuide(),
        DATA,
        num_search_iterations=2,
        pareto_subset_size=6,
        minibatch_gate=False,
        merge_every=0,
    )
    assert values(trainer) == [(3, 3)] and (agent.p.data, agent.q.data) == (3, 3)


def test_a_merge_better_than_both_parents_is_kept_with_both_as_parents():
    # (3, 5): 1.0 / 0.4 -> mean 0.7, and (0, 2): 0.4 / 1.0 -> mean 0.7, are siblings: the
    # start (0, 0) keeps the q-instances (0.6) from (3, 5), and with this seed the second
    # mutation's parent is the start again. Only (3, 5) changed p since the start, so
    # the mix takes its p; both changed q: (3, 2) is the only new mix, better than both.
    trainer, agent, _ = make(GEPABeamPareto, ["p=3 q=5", "p=0 q=2"], rng_seed=2)
    result = trainer.train(
        PairGuide(), DATA, num_search_iterations=3, merge_every=3, selection_temperature=1.0
    )
    info = result.history[-1]["scores"]
    assert info["merge_mean"] == 1.0
    assert values(trainer)[-1] == (3, 2) and (agent.p.data, agent.q.data) == (3, 2)
    merged = trainer.buffer[-1]
    assert trainer._parents[2] == [0]
    assert trainer._parents[merged.created] == [1, 2] and trainer._merges == 1
    assert ancestors(merged.created, trainer._parents) == {0, 1, 2}


def test_a_merge_not_better_than_both_parents_is_dropped_and_its_pair_never_retried():
    # (3, 5): 1.0 / 0.4 -> mean 0.7, and (1, 2): 0.6 / 1.0 -> mean 0.8 both changed both
    # values of the start (0, 0), so each value of the mix is drawn: the new mixes are
    # (3, 2) = 1.0 and (1, 5) = 0.5. The start keeps its wins (it beats (3, 5) on the
    # q-instances), so some seeds mutate it again and make the two siblings.
    outcomes = {}
    for rng_seed in range(12):
        trainer, _, optimizer = make(
            GEPABeamPareto, ["p=3 q=5", "p=1 q=2"], rng_seed=rng_seed, num_threads=2
        )
        optimizer.llm.default = "p=0 q=0"  # later mutations propose the start (no change)
        result = trainer.train(
            PairGuide(), DATA, num_search_iterations=6, merge_every=3, selection_temperature=1.0
        )
        merges = [h["scores"].get("merge_mean") for h in result.history]
        if trainer._parents[2] == [0]:  # siblings (else related: no merge)
            outcomes[round(merges[2], 6)] = (trainer, merges)
    assert set(outcomes) == {1.0, 0.5}  # both mixes occur over the seeds
    trainer, merges = outcomes[0.5]
    assert (1, 5) not in values(trainer) and trainer._merges == 0
    assert trainer._tried == {(1, 2)}
    assert merges[5] is None  # the only pair was tried: iteration 6 mutates instead


def test_the_minibatch_gate_scores_only_children_better_on_their_minibatch():
    calls = {}
    for gate in (True, False):
        guide = CountingGuide()
        trainer, _, _ = make(GEPAAlgorithmBase, ["p=0 q=9", "p=3 q=2"])
        trainer.train(
            guide,
            DATA,
            num_search_iterations=2,
            train_batch_size=2,
            minibatch_gate=gate,
            merge_every=0,
        )
        calls[gate] = (guide.calls[0], values(trainer))
    # seed 6 + per iteration: 2 rollouts, 2 gate scores, 6 on the subset if it passes
    assert calls[True] == (6 + 2 + 2 + 2 + 2 + 6, [(0, 0), (3, 2)])
    assert calls[False] == (6 + 2 + 6 + 2 + 6, [(0, 0), (0, 9), (3, 2)])


def test_the_pareto_subset_is_scored_by_the_validate_guide():
    guide, validate_guide = CountingGuide(), CountingGuide()
    trainer, _, _ = make(GEPAUCBSearch, ["p=3 q=0", "p=3 q=2"])
    val = {"inputs": ["p7", "q7", "p8", "q8"], "infos": [3, 2, 3, 2]}
    trainer.train(
        guide,
        DATA,
        validation_dataset=val,
        validate_guide=validate_guide,
        num_search_iterations=2,
        merge_every=0,
    )
    assert sorted(trainer._pareto_xs) == sorted(val["inputs"])
    assert validate_guide.calls[0] == 3 * 4  # the start and two children, 4 examples each
    assert guide.calls[0] == 2 * 2  # two minibatches of training rollouts


def test_values_already_scored_are_not_scored_again():
    guide = CountingGuide()
    trainer, _, _ = make(GEPAAlgorithmBase, ["p=3 q=2", "p=0 q=0", "p=3 q=2"])
    result = trainer.train(
        guide, DATA, num_search_iterations=3, merge_every=0, minibatch_gate=False
    )
    assert values(trainer) == [(0, 0), (3, 2)]
    assert [h for h in result.history if "child_mean" in h["scores"]] == [result.history[0]]
    assert guide.calls[0] == 6 + 3 * 2 + 6


def test_at_temperature_zero_a_parent_whose_picks_add_nothing_steps_aside():
    # (3, 0) tops the beam; its mutations keep proposing values already scored, so after
    # three fruitless picks the next parent, the start, is mutated into (0, 2)
    script = ["p=3 q=0", "p=0 q=0", "p=3 q=0", "p=0 q=0", "p=0 q=2"]
    trainer, _, _ = make(GEPABeamPareto, script)
    result = trainer.train(PairGuide(), DATA, num_search_iterations=5, merge_every=0)
    assert [h["scores"].get("child_mean") for h in result.history][-1] is not None
    assert values(trainer) == [(0, 0), (3, 0), (0, 2)]
    assert trainer._parents[trainer.buffer[2].created] == [0]  # not (3, 0)'s child
    assert trainer._fruitless == {0: 0, 1: 3}


def test_ucb_parent_is_the_frontier_member_with_the_highest_bound():
    trainer, _, _ = make(GEPAUCBSearch, ucb_exploration_factor=1.0)
    trainer.train(PairGuide(), DATA, num_search_iterations=3, pareto_subset_size=6)
    trainer._pulls = {c.created: 5 for c in trainer.buffer}
    wins = trainer.wins()
    ucbs = [trainer.compute_ucb(c) for c in trainer.buffer]
    chosen = trainer.select_parent(wins)
    assert wins[chosen] > 0
    assert ucbs[chosen] == max(u for u, w in zip(ucbs, wins) if w > 0)
    newest = trainer.buffer[-1]
    trainer._pulls[newest.created] = 0  # never picked: the largest bonus
    assert trainer.compute_ucb(newest) > newest.mean_score() + 0.5


def test_several_optimizers_take_turns_at_mutating():
    agent = Pair()
    first = PairOptimizer(agent.parameters(), ScriptedLLM(["p=3 q=0", "p=3 q=1"]))
    second = PairOptimizer(agent.parameters(), ScriptedLLM(["p=0 q=2"]))
    trainer = GEPABeamPareto(agent, [first, second], seed=0)
    trainer.train(PairGuide(), DATA, num_search_iterations=3, merge_every=0, minibatch_gate=False)
    assert (first.llm.calls, second.llm.calls) == (2, 1)
    made = {(c.paramset["p"], c.paramset["q"]): c.optimizer_index for c in trainer.buffer}
    assert made == {(0, 0): 0, (3, 0): 0, (0, 2): 1, (3, 1): 0}


def test_options_aliases_and_errors():
    trainer, _, _ = make(GEPAUCBSearch)
    val = {"inputs": ["p9", "q9"], "infos": [3, 2]}
    trainer.train(PairGuide(), DATA, validate_dataset=val, num_iters=1)
    assert trainer.validation_dataset == val and trainer.pareto_subset_size == 2
    assert trainer.iterations == 1 and trainer.merge_every == 6
    with pytest.raises(UnknownTrainArgumentError, match="alias"):
        trainer.train(PairGuide(), DATA, validate_dataset=val, validation_dataset=val)
    with pytest.raises(UnknownTrainArgumentError, match="pareto_subset_size"):
        trainer.train(PairGuide(), DATA, pareto_subset=3)
    with pytest.raises(ValueError, match="score_range"):
        trainer.train(PairGuide(), DATA, score_range=(0, float("inf")))
    with pytest.raises(ValueError, match="max_buffer_size"):
        GEPAUCBSearch(Pair(), None, max_buffer_size=0)
    beam, _, _ = make(GEPABeamPareto)
    beam.train(PairGuide(), DATA, batch_size=3, num_search_iterations=1)
    assert beam.train_batch_size == 3 and beam._config["beam_width"] == 16


def test_exported_under_the_reference_names():
    import warnings

    import opto.trainers
    import opto.trainers.algorithms

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import opto.trainer.algorithms
        from opto.trainer.algorithms import gepa_algorithms

    for name in ("GEPAAlgorithmBase", "GEPAUCBSearch", "GEPABeamPareto"):
        cls = getattr(opto.trainers, name)
        assert cls is getattr(opto.trainers.algorithms, name)
        assert cls is getattr(opto.trainer.algorithms, name) is getattr(gepa_algorithms, name)


def test_the_train_entry_point_runs_them_by_name():
    from opto.trainers import train

    for name in ("GEPAUCBSearch", "GEPABeamPareto", "GEPAAlgorithmBase"):
        agent = Pair()
        optimizer = PairOptimizer(agent.parameters(), ScriptedLLM(nudge_pair))
        result = train(
            model=agent,
            train_dataset=DATA,
            algorithm=name,
            optimizer=optimizer,
            guide=PairGuide(),
            seed=0,
            num_search_iterations=8,
        )
        assert (agent.p.data, agent.q.data) == (3, 2) and result.n_iters == 8


@pytest.mark.parametrize("cls", CLASSES)
def test_stop_conditions_end_the_search(cls):
    trainer, _, _ = make(cls)
    result = trainer.train(PairGuide(), DATA, num_search_iterations=10, max_steps=2)
    assert result.n_iters == 2 and result.stopped == "max_steps"
    trainer, _, _ = make(cls)
    result = trainer.train(PairGuide(), DATA, num_search_iterations=50, num_epochs=1)
    assert result.n_iters == 3  # 6 examples, 2 per minibatch: one pass


# -- executors, budgets, objectives ----------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES)
def test_every_executor_reaches_the_same_result(cls):
    outcomes = []
    for executor in ("serial", "threads", "asyncio"):
        trainer, agent, _ = make(cls, executor=executor)
        result = trainer.train(PairGuide(), DATA, num_search_iterations=6, merge_every=3)
        outcomes.append(
            (agent.p.data, agent.q.data, result.train_scores, [c.to_dict() for c in trainer.buffer])
        )
    assert outcomes[0] == outcomes[1] == outcomes[2]


@pytest.mark.parametrize("executor", ["asyncio", "threads"])
def test_an_async_agent_reaches_the_target(executor):
    import opto_trainers_test_support as S

    agent = S.AsyncScale()
    optimizer = S.NudgeOptimizer(agent.parameters(), ScriptedLLM(S.nudge))
    trainer = GEPABeamPareto(agent, optimizer, num_threads=3, executor=executor, seed=0)
    trainer.train(S.TargetGuide(), S.DATA, num_search_iterations=4)
    assert agent.a.data == S.TARGET


@pytest.mark.parametrize("cls", CLASSES)
def test_an_llm_budget_stops_after_the_last_complete_iteration(cls):
    trainer, _, optimizer = make(cls)
    result = trainer.train(
        PairGuide(), DATA, num_search_iterations=10, merge_every=0, max_llm_calls=3
    )
    assert result.stopped == "budget" and result.n_iters == 3
    assert optimizer.llm.calls == 3  # the 4th call was refused: its iteration rolled back
    assert len(trainer.history) == 3


@pytest.mark.parametrize(
    ("config", "winner"),
    [
        (ObjectiveConfig(score_key="closeness"), (3, 2)),
        (
            ObjectiveConfig(
                mode="weighted", weights={"closeness": 1, "size": 1}, minimize={"size"}
            ),
            (0, 0),
        ),
        (
            ObjectiveConfig(mode="pareto", minimize={"size"}, weights={"closeness": 1, "size": 1}),
            (0, 0),
        ),
    ],
)
@pytest.mark.parametrize("cls", CLASSES)
def test_the_objective_decides_wins_and_the_final_pick(cls, config, winner):
    script = ["p=3 q=2", "p=1 q=1"]
    trainer, agent, _ = make(cls, script)
    result = trainer.train(
        PairMetricsGuide(),
        DATA,
        num_search_iterations=2,
        merge_every=0,
        minibatch_gate=False,
        objective_config=config,
    )
    assert (agent.p.data, agent.q.data) == winner
    assert all(c.mean_score_dict() is not None for c in trainer.buffer)
    scores = result.history[-1]["scores"]
    assert "best_mean/closeness" in scores and "best_mean/size" in scores
    if config.mode == "pareto":
        # on every instance each candidate trades closeness for size: all undominated, so
        # no instance tells them apart and none has a win (the scalar would give some)
        assert trainer.wins() == [0, 0, 0]
        assert count_wins([c.scores for c in trainer.buffer]) != [0, 0, 0]


# -- resume ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    "config", [None, ObjectiveConfig(mode="pareto", minimize={"size"})], ids=["scalar", "pareto"]
)
def test_resume_continues_exactly(tmp_path, cls, config):
    kwargs = dict(merge_every=3, pareto_subset_size=4, objective_config=config)
    guide = PairGuide if config is None else PairMetricsGuide
    straight, agent, _ = make(cls)
    expected = straight.train(guide(), DATA, num_search_iterations=7, **kwargs)
    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    first, _, _ = make(cls)
    first.train(guide(), DATA, num_search_iterations=3, storage=storage, run_name="r", **kwargs)
    second, resumed_agent, _ = make(cls)
    resumed = second.train(
        guide(),
        DATA,
        num_search_iterations=7,
        storage=storage,
        run_name="r",
        resume=True,
        resume_overrides=["num_search_iterations"],
        **kwargs,
    )
    assert resumed.n_iters == 7 and resumed.history == expected.history
    assert resumed.train_scores == expected.train_scores
    assert (resumed_agent.p.data, resumed_agent.q.data) == (agent.p.data, agent.q.data)
    assert second._algorithm_state() == straight._algorithm_state()


def _steps_done(db: Any, name: str) -> int:
    from opto.utils.storage import RunNotFoundError, open_storage

    with open_storage(f"sqlite:///{db}") as storage:
        try:
            return len(storage.list_steps(name))
        except RunNotFoundError:
            return 0


def train_script(db: str, run_name: str, resume: bool, slow: bool) -> dict[str, Any]:
    trainer, _, _ = make(GEPAUCBSearch, max_buffer_size=3)
    guide = PairGuide(0.1, hold=(db, run_name, 3)) if slow else PairGuide()
    result = trainer.train(
        guide,
        DATA,
        num_search_iterations=8,
        merge_every=3,
        pareto_subset_size=4,
        storage=f"sqlite:///{db}",
        run_name=run_name,
        resume=resume,
    )
    return {
        "parameters": result.final_parameters,
        "history": [{k: h[k] for k in ("step", "scores")} for h in result.history],
        "state": trainer._algorithm_state(),
        "n_iters": result.n_iters,
    }


def _script(tmp_path: Any, name: str, *extra: str) -> list[str]:
    return [sys.executable, __file__, str(tmp_path / "runs.db"), name, *extra]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    pytest.importorskip("sqlalchemy", reason="checkpoints need opto-utils[storage]")

    import opto_trainers_test_support as S

    uninterrupted = S.run_script(_script(tmp_path, "full", "0"))
    assert uninterrupted["n_iters"] == 8
    S.kill_once_stored(_script(tmp_path, "killed", "0", "slow"), tmp_path / "runs.db", "killed", 3)
    assert 3 <= _steps_done(tmp_path / "runs.db", "killed") < 8
    assert S.run_script(_script(tmp_path, "killed", "1")) == uninterrupted


if __name__ == "__main__":
    db_path, name, resume_flag = sys.argv[1:4]
    slow = len(sys.argv) > 4
    print(json.dumps(train_script(db_path, name, resume_flag == "1", slow)))
