"""`BeamSearch` and `BeamSearchHistory`: keep the best `beam_width` candidates per depth.

At every depth each beam is expanded on its own training minibatch into `num_proposals`
proposals (each made on its own optimizer copy, continuing the beam's optimizer chain);
the beams themselves stay candidates (elitism). Every candidate is scored on a fresh
validation subsample of `validation_dataset_size` examples, all candidate x example
rollouts at once, and the top `beam_width` become the next beams (ties: beams before
proposals, earlier before later). After the last depth the best beam on the full
validation set goes to the agent.

Fixes over the reference: candidates are values (validation never sets and restores the
shared agent, so a failure cannot leave it holding a candidate); duplicate candidates are
validated once; the beams are always ranked; the subsamples and minibatches come from the
trainer's seeded RNG and `DataLoader`, and `num_epochs`, when given, bounds the search.
With an `objective_config`, candidates are scored by per-metric means of the guide's score
dicts and kept by `objectives.select_top_k`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..guide import Guide
from ..loader import as_dataset
from ..ranking import is_score
from ..scoring import log_metrics, objective_of, scalar, strict_score, top_k_of
from ..utils import ParamSet, get_paramset
from .base import TrainOptions, TrainResult
from .priority_search import (
    ExplorationJob,
    SearchTrainer,
    _positive_int,
    paramset_key,
    strict_mean,
)

__all__ = [
    "BeamSearch",
    "BeamSearchHistory",
    "BeamsearchAlgorithm",
    "BeamsearchHistoryAlgorithm",
]

_BEAM_KEYWORDS = (
    "validate_dataset",
    "validate_guide",
    "validation_dataset_size",
    "beam_width",
    "num_proposals",
    "max_depth",
    "num_epochs",
)


@attrs.define(kw_only=True, eq=False)
class Beam:
    """A kept candidate: its values, its optimizer chain's state and its last score (a
    per-metric dict under an `objective_config`)."""

    paramset: ParamSet
    optimizer_state: dict[str, Any] | None = None
    score: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (a non-finite score is stored as None)."""
        score = self.score if isinstance(self.score, Mapping) else _finite(self.score)
        return {
            "paramset": copy.deepcopy(self.paramset),
            "optimizer_state": copy.deepcopy(self.optimizer_state),
            "score": score,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Beam:
        """Inverse of `to_dict`."""
        return cls(
            paramset=copy.deepcopy(dict(data["paramset"])),
            optimizer_state=copy.deepcopy(data["optimizer_state"]),
            score=data["score"],
        )


class BeamSearch(SearchTrainer):
    """Beam search over optimizer proposals (the reference's `BeamsearchAlgorithm`).

    `train` returns a `TrainResult`; iterating it gives `(train_scores, final test score)`.
    Logged per depth: `Best/Average/Min/Max validation score`; at the end `Final
    validation score`.
    """

    #: Defaults that differ between the plain and the history variant.
    default_num_proposals = 4
    default_eval_frequency = 4

    def train(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> TrainResult:
        """Search `max_depth` levels over `train_dataset` with feedback from `guide`.

        Keywords (besides `TrainOptions`, whose `batch_size` sizes each beam's training
        minibatch): `validate_dataset` (default: the training set), `validate_guide`,
        `validation_dataset_size` (5; None: min(10, size)), `beam_width` (3),
        `num_proposals` (4, history variant 1), `max_depth` (2), `num_epochs` (None: only
        `max_depth` bounds the search). `test_frequency`/`eval_frequency` defaults to 4
        (history variant 5) depths.
        """
        own = {key: kwargs.pop(key) for key in self._keywords() if key in kwargs}
        if "eval_frequency" not in kwargs and "test_frequency" not in kwargs:
            kwargs["eval_frequency"] = self.default_eval_frequency
        options = TrainOptions.from_kwargs(
            kwargs, algorithm=type(self).__name__, extra=self._keywords()
        )
        self._configure(guide, train_dataset, options, **own)
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

    def _keywords(self) -> Sequence[str]:
        return _BEAM_KEYWORDS

    # -- configuration ----------------------------------------------------------------------

    def _configure(
        self,
        guide: Guide,
        train_dataset: Any,
        options: TrainOptions,
        *,
        validate_dataset: Any = None,
        validate_guide: Guide | None = None,
        validation_dataset_size: int | None = 5,
        beam_width: int = 3,
        num_proposals: int | None = None,
        max_depth: int = 2,
        num_epochs: int | None = None,
    ) -> None:
        self.options = options
        self.beam_width = _positive_int(beam_width, "beam_width")
        self.num_proposals = _positive_int(
            self.default_num_proposals if num_proposals is None else num_proposals,
            "num_proposals",
        )
        self.max_depth = _positive_int(max_depth, "max_depth")
        self.num_epochs = None if num_epochs is None else _positive_int(num_epochs, "num_epochs")
        data = self._training_loader(train_dataset, options.batch_size)
        self.validate_dataset = (
            data
            if validate_dataset is None
            else as_dataset(validate_dataset, name="validate_dataset")
        )
        size = len(self.validate_dataset["inputs"])
        if validation_dataset_size is None:
            validation_dataset_size = min(10, size)
        self.validation_dataset_size = min(
            _positive_int(validation_dataset_size, "validation_dataset_size"), size
        )
        self.validate_guide = validate_guide or guide
        self._config = {
            "beam_width": self.beam_width,
            "num_proposals": self.num_proposals,
            "max_depth": self.max_depth,
            "validation_dataset_size": self.validation_dataset_size,
            "batch_size": options.batch_size,
        }

    def _reset(self) -> None:
        self.beams = [
            Beam(paramset=get_paramset(self.agent), optimizer_state=self._initial_state())
        ]
        self.depth_scores: list[dict[str, float | None]] = []

    # -- one depth --------------------------------------------------------------------------

    def _context(self) -> str | None:
        """Text appended to each beam's feedback (the history variant's past attempts)."""
        return None

    def _depth(self, guide: Guide) -> dict[str, Any]:
        assert self.loader is not None
        data = self.validate_dataset
        picked = sorted(self.rng.sample(range(len(data["inputs"])), self.validation_dataset_size))
        val_xs = [data["inputs"][i] for i in picked]
        val_infos = [data["infos"][i] for i in picked]
        jobs = []
        for beam in self.beams:
            xs, infos = self.loader.sample()
            jobs.append(
                ExplorationJob(
                    paramset=beam.paramset,
                    xs=xs,
                    infos=infos,
                    num_proposals=self.num_proposals,
                    optimizer_state=beam.optimizer_state,
                    context=self._context(),
                )
            )
        results = self.engine.explore(jobs, guide)
        candidates: list[Beam] = []
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
                        Beam(paramset=proposal.paramset, optimizer_state=proposal.optimizer_state)
                    )
        scores = self.engine.score(
            [c.paramset for c in candidates], val_xs, val_infos, self.validate_guide
        )
        config = self.options.objective_config
        for candidate, row in zip(candidates, scores):
            candidate.score = strict_mean(row) if config is None else strict_score(row, config)
        self.beams = self.select(candidates, self.beam_width)
        self._after_selection(self.beams)
        best = self.beams[0]
        self._adopt_candidate(best.paramset, best.optimizer_state)
        values = [scalar(b.score, config) for b in self.beams]
        kept = [v for v in values if is_score(v)]
        stats = {
            "Best validation score": values[0],
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
                "best": _finite(values[0]),
                "average": _finite(stats["Average validation score"]),
            }
        )
        records = [r for result in results for r in result.rollouts]
        train_score = _mean([r.score for r in records])
        return {
            "train_score": train_score,
            "feedback": [r.to_dict() for r in records],
            "scores": {"validation": best.score if config else _finite(best.score)},
            "info": {"num_candidates": len(candidates), "num_beams": len(self.beams)},
            "observe": _finite(values[0]),
        }

    def select(self, candidates: list[Beam], k: int) -> list[Beam]:
        """The `k` best candidates, best first (ties: earlier first), by score or, with an
        `objective_config`, by `objectives.select_top_k` on their score dicts."""
        order = top_k_of([c.score for c in candidates], objective_of(self), k)
        return [candidates[i] for i in order]

    def _after_selection(self, beams: list[Beam]) -> None:
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
        config = self.options.objective_config
        for beam, row in zip(self.beams, scores):
            beam.score = strict_mean(row) if config is None else strict_score(row, config)
        self.beams = self.select(self.beams, len(self.beams))
        best = self.beams[0]
        self._adopt_candidate(best.paramset, best.optimizer_state)
        self.final_validation_score = _finite(scalar(best.score, config))
        if isinstance(best.score, Mapping):
            log_metrics(self.logger, {"Final validation score": best.score}, self.n_iters)
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


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _format_score(score: Any) -> str:
    if isinstance(score, Mapping):
        return ", ".join(f"{k}={v:.4f}" for k, v in score.items())
    return f"{score:.4f}"


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

    default_num_proposals = 1
    default_eval_frequency = 5

    def train(
        self, guide: Guide, train_dataset: Any, *, max_history_size: int = 10, **kwargs: Any
    ) -> TrainResult:
        """As `BeamSearch.train`, plus `max_history_size` (10)."""
        self.max_history_size = _positive_int(max_history_size, "max_history_size")
        return super().train(guide, train_dataset, **kwargs)

    def _keywords(self) -> Sequence[str]:
        return (*_BEAM_KEYWORDS, "max_history_size")

    def _reset(self) -> None:
        super()._reset()
        self.parameter_history: list[tuple[ParamSet, Any]] = []

    def _after_selection(self, beams: list[Beam]) -> None:
        for beam in beams:
            if isinstance(beam.score, Mapping) or _finite(beam.score) is not None:
                self.parameter_history.append((copy.deepcopy(beam.paramset), beam.score))
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
