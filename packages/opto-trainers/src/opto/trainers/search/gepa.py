"""GEPA-style search: a per-instance Pareto frontier of candidates, mutation and merge.

`GEPAAlgorithmBase` holds the loop the GEPA trainers share (`GEPAUCBSearch` and
`GEPABeamPareto` in `gepa_variants` change how a parent is picked and how the buffer is
trimmed). Before the first iteration a fixed Pareto subset of `pareto_subset_size`
validation examples is drawn (seeded), and every candidate is scored on all of it, so
each has a per-instance score vector (`Candidate.scores`, in the subset's order). Each
iteration then:

* **mutates**: a parent is picked from the frontier (`select_parent`; by default drawn
  with weight `wins ** (1 / selection_temperature)`, see `gepa_frontier`), explored on a
  training minibatch of `train_batch_size` examples (rollouts, one batch backward, one
  optimizer step on a fork of the parent's optimizer chain, `SearchEngine.explore`); with
  `minibatch_gate` the child must beat the parent on that minibatch before it is scored
  on the Pareto subset (every example at once, `SearchEngine.score`);
* or, every `merge_every` iterations, **merges** two frontier members that are not
  ancestor and descendant and were not tried together: a per-parameter crossover (a
  parameter only one of them changed since their newest common ancestor comes from that
  one, any other from either at random), kept only if its mean beats both parents'
  means (no pair or new mix found: it mutates instead);
* **trims** the buffer by (wins, mean) (`trim_buffer`), never dropping the candidate the
  agent holds, and gives the agent the best candidate by mean (under an
  `objective_config`, the one `objectives.select_best` prefers by per-metric means).

Wins are counted by `gepa_frontier.count_wins` (under an `ObjectiveConfig`, on the
objective's scalar, or by per-instance dominance in "pareto" mode); a candidate best on
only a few instances keeps its wins and its place. Values already scored on the subset
are never scored again. The search state (buffer, lineage, tried pairs, the seeded RNG)
is checkpointed after every iteration, so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
from typing import Any, ClassVar

import attrs

from ..guide import Guide
from ..options import (
    TrainResult,
    optional_non_negative_int,
    positive_int,
)
from ..ranking import score_key
from ..scoring import reward, scalar
from ..utils import ParamSet, paramset_key, safe_mean
from .candidate import Candidate
from .gepa_frontier import (
    choose_merge_pair,
    common_ancestor,
    count_wins,
    fresh_crossover,
    rank_key,
    sample_parent,
)
from .pareto import best_candidate
from .trainer import IterativeSearchOptions, SearchTrainer

__all__ = ["GEPAAlgorithmBase", "GEPAOptions", "GEPASettings"]


def _number(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{attribute.name} must be a number, not {value!r}")


@attrs.frozen(kw_only=True)
class GEPAOptions(IterativeSearchOptions):
    """The GEPA trainers' `train` keywords: `IterativeSearchOptions` plus the search's own.

    `validation_dataset` (alias `validate_dataset`; default: the training set) supplies
    the Pareto subset of `pareto_subset_size` examples (24; all when fewer), scored with
    `validate_guide` (default: the guide). `num_search_iterations` (alias `num_iters`;
    100) bounds the search, with `num_epochs` (None: no epoch limit) and the stop
    conditions. `train_batch_size` (default: `batch_size` if given, else 2) sizes each
    mutation's minibatch. `merge_every` (5; 0 or None: never merge) schedules merges,
    each trying up to `merge_attempts` (8) random frontier pairs. `selection_temperature`
    (1.0; <= 0: the most wins) shapes parent sampling. `minibatch_gate` (False): with it, a
    child is scored on the Pareto subset only if it strictly beats its parent on the
    minibatch it came from (fewer metric calls per poor proposal, but a step that
    improves without changing the minibatch's scores is dropped).
    """

    pareto_subset_size: int = attrs.field(default=24, validator=positive_int)
    merge_every: int | None = attrs.field(default=5, validator=optional_non_negative_int)
    merge_attempts: int = attrs.field(default=8, validator=positive_int)
    selection_temperature: float = attrs.field(default=1.0, validator=_number)
    minibatch_gate: bool = False

    ALIASES: ClassVar[dict[str, str]] = {
        **IterativeSearchOptions.ALIASES,
        "num_iters": "num_search_iterations",
    }


#: Fruitless picks in a row after which a parent steps aside (temperature <= 0).
_STALE_PICKS = 3


def _digest(paramset: ParamSet) -> str:
    """A short identity of a parameter set's values (what "already scored" remembers)."""
    return hashlib.sha256(paramset_key(paramset).encode()).hexdigest()[:24]


@attrs.frozen(kw_only=True)
class GEPASettings:
    """`GEPAAlgorithmBase`'s constructor hyperparameters: `max_buffer_size` (16: how many
    candidates the buffer keeps) and `rng_seed` (13: seeds the search's own RNG, which
    draws the Pareto subset, parents and merges; None: the trainer's `seed`)."""

    max_buffer_size: int = attrs.field(default=16, validator=positive_int)
    rng_seed: int | None = 13


class GEPAAlgorithmBase(SearchTrainer):
    """GEPA search over a per-instance Pareto frontier (see the module docstring).

    Args:
        agent, optimizer, num_threads, logger, executor, seed: as for every search trainer
            (`optimizer` may be a list: the optimizers take turns at mutating; `seed`
            orders the training minibatches).
        max_buffer_size, rng_seed: keyword-only, see `GEPASettings`.
    """

    options_class: ClassVar[type[GEPAOptions]] = GEPAOptions
    settings_class: ClassVar[type[Any] | None] = GEPASettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer: list[Candidate] = []

    def train(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> TrainResult:
        """Run the GEPA search over `train_dataset` with feedback from `guide`.

        Keywords: the fields of the trainer's options class (`GEPAOptions` and its
        subclasses: `TrainOptions` plus the search's own).
        """
        return self._iterative_search(guide, train_dataset, kwargs)

    # -- configuration ----------------------------------------------------------------------

    def _configure(
        self, guide: Guide, train_dataset: Any, options: GEPAOptions, *, batch_given: bool
    ) -> None:
        self.options = options
        self._configure_iterations(guide, train_dataset, options, batch_given=batch_given)
        self.pareto_subset_size = min(
            options.pareto_subset_size, len(self.validation_dataset["inputs"])
        )
        self.merge_every = options.merge_every or 0
        self._config = {
            "pareto_subset_size": self.pareto_subset_size,
            "num_search_iterations": self.iterations,
            "train_batch_size": self.train_batch_size,
            "merge_every": self.merge_every,
            "merge_attempts": options.merge_attempts,
            "selection_temperature": float(options.selection_temperature),
            "minibatch_gate": bool(options.minibatch_gate),
            **self._settings_config(),
            **self._variant_config(),
        }

    def _variant_config(self) -> dict[str, Any]:
        """The variant's own `train` hyperparameters (recorded with the run; resume
        checks them, as it does the constructor's `settings`)."""
        return {}

    def _reset(self) -> None:
        """A fresh search: the seeded RNG, the Pareto subset, the agent as sole candidate."""
        self._search_rng = random.Random(self.seed if self.rng_seed is None else self.rng_seed)
        size = len(self.validation_dataset["inputs"])
        self._use_pareto_indices(
            sorted(self._search_rng.sample(range(size), self.pareto_subset_size))
        )
        self.buffer = [self._start_candidate()]
        self._created = 0
        self._parents: dict[int, list[int]] = {0: []}
        # every accepted candidate's values: merges read their common ancestor's
        self._values: dict[int, ParamSet] = {0: dict(self.buffer[0].paramset)}
        self._tried: set[tuple[int, int]] = set()
        self._scored: set[str] = set()
        self._pulls: dict[int, int] = {}
        self._fruitless: dict[int, int] = {}  # picks in a row that added no candidate
        self._merges = 0

    def _use_pareto_indices(self, indices: list[int]) -> None:
        data = self.validation_dataset
        if any(not 0 <= i < len(data["inputs"]) for i in indices):
            raise ValueError(
                f"the checkpoint's Pareto subset {indices} does not fit the validation set "
                f"({len(data['inputs'])} examples); resume with the run's validation_dataset"
            )
        self.pareto_indices = list(indices)
        self._pareto_xs = [data["inputs"][i] for i in indices]
        self._pareto_infos = [data["infos"][i] for i in indices]

    # -- the frontier -----------------------------------------------------------------------

    def wins(self) -> list[int]:
        """Each buffer candidate's number of won Pareto-subset instances."""
        return count_wins(
            [c.scores for c in self.buffer],
            score_dicts=[[r.get("score_dict") for r in c.rollouts] for c in self.buffer],
            config=self.options.objective_config,
        )

    def select_parent(self, wins: list[int]) -> int:
        """Index of the buffer candidate to mutate: drawn with weight
        `wins ** (1 / selection_temperature)` among the candidates with wins; with a
        temperature <= 0, the top by (wins, mean) (ties: the oldest) among the candidates
        whose last `_STALE_PICKS` picks were not all fruitless (so the search never stalls
        on one parent whose proposals repeat)."""
        temperature = float(self.options.selection_temperature)
        if temperature <= 0:
            fresh = [
                i
                for i, c in enumerate(self.buffer)
                if self._fruitless.get(c.created, 0) < _STALE_PICKS
            ]
            return max(
                fresh or range(len(self.buffer)),
                key=lambda i: rank_key(
                    wins[i], self.buffer[i].mean_score(), self.buffer[i].created
                ),
            )
        return sample_parent(wins, temperature, self._search_rng)

    def best_entry(self) -> Candidate:
        """The candidate the agent gets: the best mean (ties: the oldest); under an
        `objective_config`, `objectives.select_best` on per-metric means."""
        config = self.options.objective_config
        if config is not None:
            chosen = best_candidate(self.buffer, config)
            if chosen is not None and chosen.mean_score_dict() is not None:
                return chosen
        return max(self.buffer, key=lambda c: (score_key(c.mean_score()), -c.created))

    def trim_buffer(self) -> None:
        """Keep the `max_buffer_size` best by (wins, mean), and always the best entry."""
        self._keep_top(self.max_buffer_size)

    def _keep_top(self, size: int) -> None:
        if len(self.buffer) <= size:
            return
        protected = self.best_entry()
        wins = self.wins()
        order = sorted(
            range(len(self.buffer)),
            key=lambda i: (
                self.buffer[i] is protected,
                rank_key(wins[i], self.buffer[i].mean_score(), self.buffer[i].created),
            ),
            reverse=True,
        )
        kept = set(order[:size])
        self.buffer = [c for i, c in enumerate(self.buffer) if i in kept]

    # -- one iteration ----------------------------------------------------------------------

    def _seed_buffer(self) -> None:
        """Score the unscored candidates (the starting values) on the Pareto subset."""
        for candidate in self.buffer:
            if candidate.num_rollouts == 0:
                self._score_on_subset(candidate)

    def _score_on_subset(self, candidate: Candidate) -> None:
        (row,) = self.engine.score(
            [candidate.paramset], self._pareto_xs, self._pareto_infos, self.validate_guide
        )
        candidate.add_scores(row, self.options.objective_config)
        self._scored.add(_digest(candidate.paramset))

    def _accept(self, child: Candidate, parents: list[Candidate]) -> None:
        self.buffer.append(child)
        self._parents[child.created] = [p.created for p in parents]
        self._values[child.created] = dict(child.paramset)

    def _iterate(self, guide: Guide) -> dict[str, Any]:
        step = self.n_iters + 1
        record = None
        if self.merge_every and step % self.merge_every == 0:
            record = self._merge()
        if record is None:
            record = self._mutate(guide)
            parent, added = record["info"]["parent"], record["info"]["outcome"] == "added"
            self._fruitless[parent] = 0 if added else self._fruitless.get(parent, 0) + 1
        self.trim_buffer()
        best = self.best_entry()
        self._adopt_candidate(best)
        wins = self.wins()
        config = self.options.objective_config
        best_mean = best.mean_score()
        info = {
            **record.pop("info"),
            "buffer_size": len(self.buffer),
            "frontier_size": sum(w > 0 for w in wins),
            "merges_accepted": self._merges,
        }
        for name, value in {"best_mean_score": best_mean, **info}.items():
            if value is None or isinstance(value, (int, float)):  # numbers, not labels
                self.logger.log(f"GEPA/{name}", value, step)
        scores = record.pop("scores")
        scores["best_mean"] = best_mean if config is None else best.mean_score_dict()
        return {**record, "scores": scores, "info": info, "observe": best_mean}

    def _mutate(self, guide: Guide) -> dict[str, Any]:
        assert self.loader is not None
        config = self.options.objective_config
        parent = self.buffer[self.select_parent(self.wins())]
        self._pulls[parent.created] = self._pulls.get(parent.created, 0) + 1
        xs, infos = self.loader.sample()
        index = self.n_iters % len(self.optimizers)  # several optimizers take turns
        result = self._explore_one(parent, guide, xs, infos, index)
        train_score = safe_mean([reward(r, config) for r in result.rollouts])
        record: dict[str, Any] = {
            "train_score": train_score,
            "feedback": [r.to_dict() for r in result.rollouts],
            "scores": {},
            "info": {"kind": "mutation", "parent": parent.created},
        }
        if not result.proposals:
            record["info"]["outcome"] = "no proposal"
            return record
        proposal = result.proposals[0]
        child = self._new_candidate(
            proposal.paramset, proposal.optimizer_index, proposal.optimizer_state
        )
        if _digest(child.paramset) in self._scored:
            record["info"]["outcome"] = "already scored"
            return record
        if self.options.minibatch_gate:
            (row,) = self.engine.score([child.paramset], xs, infos, guide)
            child_score = safe_mean([scalar(s, config) for s in row])
            record["scores"]["child_minibatch"] = child_score
            if score_key(child_score) <= score_key(train_score):
                record["info"]["outcome"] = "not better on the minibatch"
                return record
        self._score_on_subset(child)
        self._accept(child, [parent])
        record["scores"]["child_mean"] = (
            child.mean_score() if config is None else child.mean_score_dict()
        )
        record["info"]["outcome"] = "added"
        return record

    def _merge(self) -> dict[str, Any] | None:
        """Try to merge two frontier members; None when no new pair or mix is found."""
        wins = self.wins()
        frontier = [
            c
            for c, _ in sorted(
                (
                    (c, rank_key(w, c.mean_score(), c.created))
                    for c, w in zip(self.buffer, wins)
                    if w
                ),
                key=lambda item: item[1],
                reverse=True,
            )
        ]
        by_id = {c.created: c for c in frontier}
        keys = {c.created: c.key for c in frontier}
        for _ in range(self.options.merge_attempts):
            pair = choose_merge_pair(
                list(by_id), keys, self._parents, self._tried, self._search_rng, attempts=1
            )
            if pair is None:
                continue
            a, b = by_id[pair[0]], by_id[pair[1]]
            ancestor = common_ancestor(a.created, b.created, self._parents)
            mixed = fresh_crossover(
                a.paramset,
                b.paramset,
                self._search_rng,
                lambda p: _digest(p) in self._scored,
                base=None if ancestor is None else self._values.get(ancestor),
            )
            self._tried.add(pair)
            if mixed is not None:
                return self._evaluate_merge(a, b, mixed)
        return None

    def _evaluate_merge(self, a: Candidate, b: Candidate, mixed: ParamSet) -> dict[str, Any]:
        config = self.options.objective_config
        lead = max((a, b), key=lambda c: (score_key(c.mean_score()), -c.created))
        child = self._new_candidate(mixed, lead.optimizer_index, lead.optimizer_state)
        self._score_on_subset(child)
        bar = max(score_key(a.mean_score()), score_key(b.mean_score()))
        accepted = score_key(child.mean_score()) > bar
        if accepted:
            self._accept(child, [a, b])
            self._merges += 1
        return {
            "train_score": None,
            "feedback": [],
            "scores": {
                "merge_mean": child.mean_score() if config is None else child.mean_score_dict()
            },
            "info": {
                "kind": "merge",
                "parents": [a.created, b.created],
                "outcome": "added" if accepted else "not better than both parents",
            },
        }

    # -- checkpoints ------------------------------------------------------------------------

    def _algorithm_state(self) -> Any:
        if not hasattr(self, "_search_rng"):
            return None
        version, internal, gauss = self._search_rng.getstate()
        return {
            "buffer": [c.to_dict() for c in self.buffer],
            "created": self._created,
            "parents": [[k, v] for k, v in sorted(self._parents.items())],
            "values": [[k, copy.deepcopy(v)] for k, v in sorted(self._values.items())],
            "tried": sorted([list(p) for p in self._tried]),
            "scored": sorted(self._scored),
            "pulls": [[k, v] for k, v in sorted(self._pulls.items())],
            "fruitless": [[k, v] for k, v in sorted(self._fruitless.items())],
            "merges": self._merges,
            "pareto_indices": list(self.pareto_indices),
            "rng": [version, list(internal), gauss],
        }

    def _load_algorithm_state(self, state: Any) -> None:
        if state is None:
            return
        self.buffer = [Candidate.from_dict(c) for c in state["buffer"]]
        self._created = int(state["created"])
        self._parents = {int(k): [int(p) for p in v] for k, v in state["parents"]}
        self._values = {int(k): dict(v) for k, v in state["values"]}
        self._tried = {(int(a), int(b)) for a, b in state["tried"]}
        self._scored = set(state["scored"])
        self._pulls = {int(k): int(v) for k, v in state["pulls"]}
        self._fruitless = {int(k): int(v) for k, v in state["fruitless"]}
        self._merges = int(state["merges"])
        self._use_pareto_indices([int(i) for i in state["pareto_indices"]])
        version, internal, gauss = state["rng"]
        self._search_rng.setstate((version, tuple(internal), gauss))
