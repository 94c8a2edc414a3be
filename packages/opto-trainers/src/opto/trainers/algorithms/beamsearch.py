"""`BeamSearch` and `BeamSearchHistory`: keep the best `beam_width` candidates per depth.

At every depth each beam is expanded on its own training minibatch into `num_proposals`
proposals (each made on its own optimizer fork, continuing the beam's optimizer chain);
the beams themselves stay candidates (elitism). Every candidate is scored on a fresh
validation subsample of `validation_dataset_size` examples, all candidate x example
rollouts at once, and the top `beam_width` become the next beams (ties: beams before
proposals, earlier before later). After the last depth the best beam on the full
validation set goes to the agent.

Fixes over the reference: candidates are values (validation never sets and restores the
shared agent, so a failure cannot leave it holding a candidate); duplicate candidates are
validated once; the beams are always ranked; the subsamples and minibatches come from the
trainer's seeded RNG and `DataLoader`, and `num_epochs`, when given, bounds the search.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..guide import Guide
from ..loader import as_dataset
from ..options import (
    TrainOptions,
    TrainResult,
    optional_non_negative_int,
    optional_positive_int,
    positive_int,
)
from ..ranking import is_score
from ..scoring import log_metrics, objective_of, top_k_of
from ..search import Candidate, SearchTrainer, paramset_key
from ..utils import ParamSet

__all__ = [
    "Beam",
    "BeamSearch",
    "BeamSearchHistory",
    "BeamSearchHistoryOptions",
    "BeamSearchOptions",
    "BeamsearchAlgorithm",
    "BeamsearchHistoryAlgorithm",
]

#: A beam is a search `Candidate` (its `score` is its latest validation's strict mean).
Beam = Candidate


@attrs.frozen(kw_only=True)
class BeamSearchOptions(TrainOptions):
    """`BeamSearch.train`'s keywords: `TrainOptions` plus the search's own.

    `batch_size` sizes each beam's training minibatch. `validate_dataset` (default: the
    training set), `validate_guide`, `validation_dataset_size` (5; None: min(10, size)),
    `beam_width` (3), `num_proposals` (4), `max_depth` (2), `num_epochs` (None: only
    `max_depth` bounds the search); `eval_frequency` (alias `test_frequency`) defaults to 4.
    """

    eval_frequency: int | None = attrs.field(default=4, validator=optional_non_negative_int)
    num_epochs: int | None = attrs.field(default=None, validator=optional_positive_int)  # type: ignore[assignment]
    validate_dataset: Any = None
    validate_guide: Guide | None = None
    validation_dataset_size: int | None = attrs.field(default=5, validator=optional_positive_int)
    beam_width: int = attrs.field(default=3, validator=positive_int)
    num_proposals: int = attrs.field(default=4, validator=positive_int)
    max_depth: int = attrs.field(default=2, validator=positive_int)


@attrs.frozen(kw_only=True)
class BeamSearchHistoryOptions(BeamSearchOptions):
    """`BeamSearchHistory.train`'s keywords: `BeamSearchOptions` (with `num_proposals` 1
    and `eval_frequency` 5) plus `max_history_size` (10)."""

    eval_frequency: int | None = attrs.field(default=5, validator=optional_non_negative_int)
    num_proposals: int = attrs.field(default=1, validator=positive_int)
    max_history_size: int = attrs.field(default=10, validator=positive_int)


class BeamSearch(SearchTrainer):
    """Beam search over optimizer proposals (the reference's `BeamsearchAlgorithm`).

    `train` returns a `TrainResult`; iterating it gives `(train_scores, final test score)`.
    Logged per depth: `Best/Average/Min/Max validation score`; at the end `Final
    validation score`.
    """

    #: The options class of `train` (the history variant's adds `max_history_size`).
    options_class: type[BeamSearchOptions] = BeamSearchOptions

    def train(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> TrainResult:
        """Search `max_depth` levels over `train_dataset` with feedback from `guide`.

        Keywords: the fields of `options_class` (`BeamSearchOptions`).
        """
        options = self.options_class.from_kwargs(kwargs, algorithm=type(self).__name__)
        self._configure(guide, train_dataset, options)
        self._reset()
        config = {"algorithm": type(self).__name__, **self._config}
        with self.session(guide, options, config=config, total_steps=self.max_depth) as run:
            self.engine = self._engine(options)
            run.initial_evaluation()
            while (
                self.n_iters < self.max_depth and not run.should_stop() and not self._epochs_done()
            ):
                run.complete_step(**self._depth(guide))
            self._final_selection(track_best=run.test_data is None)
        assert run.result is not None
        return run.result

    # -- configuration ----------------------------------------------------------------------

    def _configure(self, guide: Guide, train_dataset: Any, options: BeamSearchOptions) -> None:
        self.options = options
        self.beam_width = options.beam_width
        self.num_proposals = options.num_proposals
        self.max_depth = options.max_depth
        self.num_epochs = options.num_epochs
        data = self._training_loader(train_dataset, options.batch_size)
        self.validate_dataset = (
            data
            if options.validate_dataset is None
            else as_dataset(options.validate_dataset, name="validate_dataset")
        )
        size = len(self.validate_dataset["inputs"])
        wanted = options.validation_dataset_size
        self.validation_dataset_size = min(10 if wanted is None else wanted, size)
        self.validate_guide = options.validate_guide or guide
        self._config = {
            "beam_width": self.beam_width,
            "num_proposals": self.num_proposals,
            "max_depth": self.max_depth,
            "validation_dataset_size": self.validation_dataset_size,
            "batch_size": options.batch_size,
        }

    def _reset(self) -> None:
        self.beams = [self._start_candidate()]
        self.depth_scores: list[dict[str, float | None]] = []

    # -- one depth --------------------------------------------------------------------------

    def _context(self) -> str | None:
        """Text appended to each beam's feedback (the history variant's past attempts)."""
        return None

    def _depth(self, guide: Guide) -> dict[str, Any]:
        assert self.loader is not None
        val_xs, val_infos = self._sample_examples(
            self.validate_dataset, self.validation_dataset_size
        )
        jobs = []
        for beam in self.beams:
            xs, infos = self.loader.sample()
            jobs.append(
                self._job(
                    beam, xs, infos, num_proposals=self.num_proposals, context=self._context()
                )
            )
        results = self.engine.explore(jobs, guide)
        candidates: list[Candidate] = []
        seen: set[str] = set()
        for beam in self.beams:
            key = paramset_key(beam.paramset)
            if key not in seen:
                seen.add(key)
                candidates.append(beam)
        for result in results:
            for proposal in result.proposals:
                key = paramset_key(proposal.paramset)
                if key not in seen:
                    seen.add(key)
                    candidates.append(
                        Candidate(proposal.paramset, optimizer_state=proposal.optimizer_state)
                    )
        scores = self.engine.score(
            [c.paramset for c in candidates], val_xs, val_infos, self.validate_guide
        )
        config = self.options.objective_config
        for candidate, row in zip(candidates, scores):
            candidate.reset_scores()
            candidate.add_scores(row, config)
        self.beams = self.select(candidates, self.beam_width)
        self._after_selection(self.beams)
        best = self.beams[0]
        self._adopt_candidate(best)
        kept = [b.score for b in self.beams if is_score(b.score)]
        stats = {
            "Best validation score": best.score,
            "Average validation score": sum(kept) / len(kept) if kept else None,
            "Min validation score": min(kept) if kept else None,
            "Max validation score": max(kept) if kept else None,
        }
        step = self.n_iters + 1
        for name, value in stats.items():
            self.logger.log(name, value, step, color="green")
        self.depth_scores.append(
            {
                "depth": step,
                "best": _finite(best.score),
                "average": _finite(stats["Average validation score"]),
            }
        )
        records = [r for result in results for r in result.rollouts]
        train_score = _mean([r.score for r in records])
        return {
            "train_score": train_score,
            "feedback": [r.to_dict() for r in records],
            "scores": {"validation": best.score_dict if config else _finite(best.score)},
            "info": {"num_candidates": len(candidates), "num_beams": len(self.beams)},
            "observe": _finite(best.score),
        }

    def select(self, candidates: list[Candidate], k: int) -> list[Candidate]:
        """The `k` best candidates, best first (ties: earlier first), by score or, with an
        `objective_config`, by `objectives.select_top_k` on their per-metric means."""
        config = objective_of(self)
        ranked = [c.score_dict if config is not None else c.score for c in candidates]
        return [candidates[i] for i in top_k_of(ranked, config, k)]

    def _after_selection(self, beams: list[Candidate]) -> None:
        """Hook run after each selection (the history variant records the beams)."""
        return

    def _final_selection(self, *, track_best: bool) -> None:
        """Pick the best beam on the full validation set and give it to the agent.

        With `track_best` (no test set) its score becomes the run's best score.
        """
        data = self.validate_dataset
        scores = self.engine.score(
            [b.paramset for b in self.beams], data["inputs"], data["infos"], self.validate_guide
        )
        for beam, row in zip(self.beams, scores):
            beam.reset_scores()
            beam.add_scores(row, self.options.objective_config)
        self.beams = self.select(self.beams, len(self.beams))
        best = self.beams[0]
        self._adopt_candidate(best)
        self.final_validation_score = _finite(best.score)
        if best.score_dict is not None and self.options.objective_config is not None:
            log_metrics(self.logger, {"Final validation score": best.score_dict}, self.n_iters)
        self.logger.log(
            "Final validation score", self.final_validation_score, self.n_iters, color="blue"
        )
        if track_best and self.final_validation_score is not None:
            self.best = {
                "score": self.final_validation_score,
                "parameters": copy.deepcopy(best.paramset),
                "iteration": self.n_iters,
            }

    # -- checkpoints ------------------------------------------------------------------------

    def _algorithm_state(self) -> Any:
        return {
            "beams": [b.to_dict() for b in getattr(self, "beams", [])],
            "depth_scores": copy.deepcopy(getattr(self, "depth_scores", [])),
        }

    def _load_algorithm_state(self, state: Any) -> None:
        if state is None:
            return
        self.beams = [Beam.from_dict(b) for b in state["beams"]]
        self.depth_scores = copy.deepcopy(list(state["depth_scores"]))


def _format_score(score: Any) -> str:
    if isinstance(score, Mapping):
        return ", ".join(f"{k}={v:.4f}" for k, v in score.items())
    return f"{score:.4f}"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _mean(values: Sequence[Any]) -> float | None:
    scored = [float(v) for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)) and len(value) > 5:
        return f"{list(value[:5])!r}... ({len(value)} items)"
    return repr(value)


class BeamSearchHistory(BeamSearch):
    """Beam search whose optimizer sees earlier attempts (`BeamsearchHistoryAlgorithm`).

    Every selected beam with a finite score joins `parameter_history` (the latest
    `max_history_size` are kept); each expansion's feedback gets a "History Context"
    listing them as `Attempt i (Score: s): {name: value, ...}`.
    """

    options_class = BeamSearchHistoryOptions

    def _configure(self, guide: Guide, train_dataset: Any, options: BeamSearchOptions) -> None:
        assert isinstance(options, BeamSearchHistoryOptions)
        super()._configure(guide, train_dataset, options)
        self.max_history_size = options.max_history_size

    def _reset(self) -> None:
        super()._reset()
        self.parameter_history: list[tuple[ParamSet, Any]] = []

    def _after_selection(self, beams: list[Candidate]) -> None:
        config = objective_of(self)
        for beam in beams:
            if beam.score is not None and math.isfinite(beam.score):
                score = beam.score_dict if config is not None else beam.score
                self.parameter_history.append((copy.deepcopy(beam.paramset), score))
        del self.parameter_history[: -self.max_history_size]

    def _context(self) -> str | None:
        if not self.parameter_history:
            return None
        lines = ["", "", "--- History Context ---", "Previous attempts and their scores:"]
        for i, (paramset, score) in enumerate(self.parameter_history, start=1):
            values = ", ".join(f"{k}: {_format_value(v)}" for k, v in paramset.items())
            lines.append(f"Attempt {i} (Score: {_format_score(score)}): {{{values}}}")
        return "\n".join(lines)

    def _algorithm_state(self) -> Any:
        state = super()._algorithm_state()
        state["parameter_history"] = [
            [copy.deepcopy(p), s] for p, s in getattr(self, "parameter_history", [])
        ]
        return state

    def _load_algorithm_state(self, state: Any) -> None:
        super()._load_algorithm_state(state)
        if state is not None:
            self.parameter_history = [
                (copy.deepcopy(dict(p)), dict(s) if isinstance(s, Mapping) else float(s))
                for p, s in state["parameter_history"]
            ]


#: The reference's names.
BeamsearchAlgorithm = BeamSearch
BeamsearchHistoryAlgorithm = BeamSearchHistory
