"""`TrainOptions`: the keyword options of `train`, and `TrainResult`: what a run returns.

Every algorithm's `train(guide, train_dataset, **options)` builds an options object with
`from_kwargs`: the common keywords are the fields of `TrainOptions`; an algorithm with
keywords of its own declares them as fields of an attrs subclass (e.g.
`PrioritySearchOptions`). An unknown keyword raises `UnknownTrainArgumentError` naming the
closest known one. Validators here check each field when the options are built.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import attrs
from opto.utils.errors import OptoError
from opto.utils.usage import Budget

from .guide import Guide
from .objectives import ObjectiveConfig
from .resume_check import check_overrides
from .scoring import as_objective_config

__all__ = [
    "TrainOptions",
    "TrainResult",
    "UnknownTrainArgumentError",
    "finite_range",
    "non_negative_int",
    "optional_non_negative_int",
    "optional_positive_int",
    "positive_int",
    "require_positive_int",
]

_Options = TypeVar("_Options", bound="TrainOptions")


class UnknownTrainArgumentError(OptoError, TypeError):
    """`train` received a keyword it does not know (it is never passed on silently)."""


def require_positive_int(value: Any, name: str) -> int:
    """`value` if it is an int >= 1 (bools are refused); ValueError naming `name` if not."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}")
    return value


def optional_positive_int(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: None or an int >= 1 (bools are refused)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{attribute.name} must be None or a positive int, not {value!r}")


def optional_non_negative_int(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: None or an int >= 0 (bools are refused)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{attribute.name} must be None or a non-negative int, not {value!r}")


def positive_int(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: an int >= 1 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive int, not {value!r}")


def finite_range(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: a finite `(low, high)` pair of numbers with low <= high."""
    low, high = (float(v) for v in value)
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"{attribute.name} must be finite (low, high), not {value!r}")


def non_negative_int(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: an int >= 0 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative int, not {value!r}")


def _check_eval_cache(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: True/False or a non-empty namespace string."""
    if isinstance(value, bool) or (isinstance(value, str) and 0 < len(value) <= 128):
        return
    raise ValueError(
        f"{attribute.name} must be True, False or a namespace string of 1 to 128 "
        f"characters, not {value!r}"
    )


@attrs.frozen(kw_only=True)
class TrainOptions:
    """Keyword options common to every algorithm's `train` (reference names).

    Data and cadence: `num_epochs`, `batch_size`, `test_dataset` (None: no test
    evaluation), `test_guide` (default: the guide), `num_test_samples`, `eval_frequency`
    (alias `test_frequency`; evaluate every k steps and before training, 0/None: never),
    `log_frequency` (default: `eval_frequency`), `min_score` (score of failed rollouts),
    `max_errors` (examples whose agent or guide raised that are tolerated: over the run's
    training and validation rollouts, and per test evaluation; None: unlimited),
    `objective_config` (an `ObjectiveConfig`: compare candidates by the guide's score dicts;
    see `opto.trainers.scoring`).

    Saving: `save_frequency` (checkpoint and save the agent every k steps),
    `save_path` (the agent file), `storage` (a storage URL or `Storage`; default
    `OPTO_STORAGE_URL`, else `opto-runs.db` in the working directory, as `opto-runs`
    reads, when saving or resuming), `run_name`, `resume` (continue the run's latest checkpoint; refused for
    another agent or changed hyperparameters, see `opto.trainers.resume_check`),
    `resume_overrides` (True, or the names of hyperparameters allowed to change),
    `trust_code` (let a resumed checkpoint run code that differs from its defining source;
    docs/security.md), `eval_cache` (with run storage, keep scoring results - validation
    and test evaluations - in it so a resumed or repeated run never pays twice for one;
    False: off; a string: a namespace of its own, e.g. after changing the agent's code;
    see `opto.trainers.evalcache`).

    Stopping: `max_steps` (alias `num_steps`), `patience`, `min_delta`, `stop_file`,
    LLM budget `budget` or `max_llm_calls` / `max_tokens` / `max_cost` (USD).

    Execution: `num_threads` (overrides the trainer's), `verbose` (progress bar and tables;
    nothing is printed without it), `step_kwargs` (extra keyword arguments for
    `optimizer.step`, e.g. the reference's `verbose="output"`).
    """

    num_epochs: int = attrs.field(default=1, validator=positive_int)
    batch_size: int = attrs.field(default=1, validator=positive_int)
    test_dataset: Any = None
    test_guide: Guide | None = None
    num_test_samples: int = attrs.field(default=1, validator=positive_int)
    eval_frequency: int | None = attrs.field(default=1, validator=optional_non_negative_int)
    log_frequency: int | None = attrs.field(default=None, validator=optional_non_negative_int)
    min_score: Any = None
    max_errors: int | None = None
    objective_config: ObjectiveConfig | None = attrs.field(
        default=None, converter=as_objective_config
    )
    save_frequency: int | None = attrs.field(default=None, validator=optional_positive_int)
    save_path: str = "checkpoints/agent.json"
    storage: Any = None
    run_name: str | None = None
    resume: bool = False
    resume_overrides: bool | Sequence[str] = attrs.field(default=False, validator=check_overrides)
    trust_code: bool = False
    eval_cache: bool | str = attrs.field(default=True, validator=_check_eval_cache)
    max_steps: int | None = attrs.field(default=None, validator=optional_positive_int)
    patience: int | None = attrs.field(default=None, validator=optional_positive_int)
    min_delta: float = 0.0
    stop_file: str | None = None
    budget: Budget | None = None
    max_llm_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None
    num_threads: int | None = attrs.field(default=None, validator=optional_positive_int)
    verbose: bool | str = False
    step_kwargs: Mapping[str, Any] = attrs.field(factory=dict)

    #: Other names accepted for a field (the reference's spellings).
    ALIASES: ClassVar[Mapping[str, str]] = {
        "test_frequency": "eval_frequency",
        "num_steps": "max_steps",
    }

    @classmethod
    def from_kwargs(
        cls: type[_Options],
        kwargs: Mapping[str, Any],
        *,
        algorithm: str,
        extra: Sequence[str] = (),
    ) -> _Options:
        """Build options from `train`'s `**kwargs`; unknown names raise with a suggestion.

        `extra` names keywords the caller handles itself (listed as known in the error).
        """
        fields = {f.name for f in attrs.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in kwargs.items():
            name = cls.ALIASES.get(key, key)
            if name not in fields:
                known = sorted(fields | set(cls.ALIASES) | set(extra))
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UnknownTrainArgumentError(
                    f"{algorithm}.train() got an unknown keyword argument {key!r}{hint}. "
                    f"Known keywords: {', '.join(known)}. Optimizer step options go in "
                    "step_kwargs={...}"
                )
            if name in values:
                raise UnknownTrainArgumentError(
                    f"{algorithm}.train() got both {key!r} and its alias for {name!r}; pass one"
                )
            values[name] = value
        return cls(**values)

    @property
    def llm_budget(self) -> Budget | None:
        """The LLM budget from `budget` or the `max_*` shortcuts (None: unlimited)."""
        if self.budget is not None:
            return self.budget
        if self.max_llm_calls is None and self.max_tokens is None and self.max_cost is None:
            return None
        return Budget(
            max_calls=self.max_llm_calls, max_tokens=self.max_tokens, max_usd=self.max_cost
        )


@attrs.define(kw_only=True)
class TrainResult:
    """What a `train` call produced.

    Iterating gives `(train_scores, final_test_score)`, so the reference's
    `scores, test_score = trainer.train(...)` keeps working.
    """

    best_parameters: dict[str, Any]
    best_score: float | None
    final_parameters: dict[str, Any]
    train_scores: list[Any]
    test_scores: list[dict[str, Any]]
    final_test_score: float | None
    history: list[dict[str, Any]]
    usage: dict[str, Any]
    n_iters: int
    n_epochs: int
    stopped: str
    run_name: str | None = None
    storage_url: str | None = None
    save_path: str | None = None

    def __iter__(self) -> Iterator[Any]:
        yield self.train_scores
        yield self.final_test_score
