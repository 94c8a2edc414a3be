"""`SearchTrainer`: the trainer base of the candidate-search algorithms.

A search trainer keeps candidates (`Candidate`) instead of stepping the shared agent: every
LLM call of a search step goes through its `SearchEngine`, so rollouts, proposals and
validations are in flight at once on the trainer's executor (threads, asyncio or Ray),
and the shared agent only ever receives the chosen candidate (`_adopt_candidate`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
from opto.utils.signatures import Plan, bind_arguments

from ..algorithms.base import Trainer
from ..guide import Guide
from ..loader import DataLoader, DatasetError, as_dataset
from ..options import TrainOptions, TrainResult, optional_positive_int, positive_int
from ..signatures import constructor_signature
from ..utils import ParamSet, get_paramset
from .candidate import Candidate
from .engine import ExplorationJob, ExplorationResult, SearchEngine, chain_state

__all__ = ["IterativeSearchOptions", "SearchTrainer"]


@attrs.frozen(kw_only=True)
class IterativeSearchOptions(TrainOptions):
    """The `train` keywords of the searches that run a number of iterations (UCB, GEPA):
    `TrainOptions` plus `validation_dataset` (alias `validate_dataset`; default: the
    training set), `validate_guide` (default: the guide), `num_search_iterations` (100),
    `train_batch_size` (default: `batch_size` if given, else 2) and `num_epochs` (None:
    only the iteration count and the stop conditions bound the search)."""

    num_epochs: int | None = attrs.field(default=None, validator=optional_positive_int)  # type: ignore[assignment]
    validation_dataset: Any = None
    validate_guide: Guide | None = None
    num_search_iterations: int = attrs.field(default=100, validator=positive_int)
    train_batch_size: int | None = attrs.field(default=None, validator=optional_positive_int)

    ALIASES: ClassVar[Mapping[str, str]] = {
        **TrainOptions.ALIASES,
        "validate_dataset": "validation_dataset",
    }


class SearchTrainer(Trainer):
    """Base of the candidate-search trainers: one or more optimizers and a `SearchEngine`.

    Every LLM call of a search step goes through `self.engine`, so its rollouts,
    proposals and validations are in flight at once on the trainer's executor (threads,
    asyncio or Ray), and the shared agent only ever receives the chosen candidate.
    """

    num_epochs: int | None  # set by each subclass's `_configure`
    #: The `train` keywords' options class (the iterative searches parse them with it).
    options_class: ClassVar[type[TrainOptions]] = TrainOptions
    #: The constructor's hyperparameters beyond `Trainer`'s: an attrs class whose fields
    #: (names, defaults, validators) are constructor parameters; the trainer keeps the
    #: built object as `settings` and each field as an attribute. None: `Trainer`'s only.
    settings_class: ClassVar[type[Any] | None] = None
    #: The constructor's positional parameters after `agent, optimizer`, in order; the
    #: settings' other fields, `executor` and `seed` are keyword-only.
    positional_parameters: ClassVar[tuple[str, ...]] = ("num_threads", "logger")
    #: How a call binds to the class's signature (set with it, per class).
    _constructor_plan: ClassVar[Plan]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__signature__ = constructor_signature(
            Trainer.__init__, cls.settings_class, cls.positional_parameters
        )
        cls._constructor_plan = Plan(cls.__signature__)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The arguments of the class's signature (`inspect.signature(type(self))`)."""
        cls = type(self)
        values = bind_arguments(cls._constructor_plan, cls.__name__, args, kwargs)
        self.settings = None
        if cls.settings_class is not None:  # validated before anything else runs
            names = [field.name for field in attrs.fields(cls.settings_class)]
            self.settings = cls.settings_class(**{name: values.pop(name) for name in names})
        super().__init__(**values)
        if self.settings is not None:
            for name, value in attrs.asdict(self.settings, recurse=False).items():
                setattr(self, name, value)

    def _settings_config(self) -> dict[str, Any]:
        """The constructor's hyperparameters (recorded with each run; resume checks them)."""
        return {} if self.settings is None else attrs.asdict(self.settings)

    def _accept_optimizer(self, optimizer: Any) -> Any:
        """Accept one optimizer or a list (candidates are spread over them); all must be
        built on the agent's parameters. The first is the trainer's `optimizer`."""
        optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
        if not optimizers or any(o is None for o in optimizers):
            raise ValueError(
                f"{type(self).__name__} needs an optimizer: pass one (or a list), e.g. "
                f"{type(self).__name__}(agent, OptoPrime(agent.parameters()))"
            )
        self.optimizers = optimizers
        self._check_optimizers()
        return optimizers[0]

    def _check_optimizers(self) -> None:
        own = {id(p) for p in self.agent.parameters()}
        for index, optimizer in enumerate(self.optimizers):
            foreign = [p.name for p in getattr(optimizer, "parameters", ()) if id(p) not in own]
            if foreign:
                raise ValueError(
                    f"optimizer {index} optimizes {foreign}, which are not parameters of the "
                    "agent; build it on agent.parameters()"
                )

    def _engine(self, options: TrainOptions) -> SearchEngine:
        return SearchEngine(
            self.agent,
            self.optimizers,
            self.executor,
            min_score=options.min_score,
            step_kwargs=options.step_kwargs,
            errors=self.errors,
            score_dicts=options.objective_config is not None,
            cache=self.eval_cache,
        )

    def _initial_state(self) -> dict[str, Any] | None:
        return chain_state(self.optimizer)

    def _start_candidate(self) -> Candidate:
        """The agent's current values, with the trainer's optimizer chain, as a candidate."""
        return Candidate(get_paramset(self.agent), optimizer_state=self._initial_state())

    def _new_candidate(self, paramset: ParamSet, optimizer_index: int, state: Any) -> Candidate:
        """A candidate made by optimizer `optimizer_index` (its chain `state`), numbered by
        the search's creation counter `_created` (which the subclass resets and checkpoints)."""
        self._created += 1
        return Candidate(
            paramset,
            optimizer_index=optimizer_index,
            optimizer_state=state,
            created=self._created,
        )

    def _adopt_candidate(self, candidate: Candidate) -> None:
        """Give the shared agent the chosen candidate's values and the trainer's optimizer
        the state of the candidate's chain (its memory, counters and latest step record);
        a candidate of another optimizer passes its values only."""
        self.adopt(candidate.paramset)
        if candidate.optimizer_state is not None and candidate.optimizer_index == 0:
            self.optimizer.load_state_dict(copy.deepcopy(candidate.optimizer_state))

    def _job(
        self,
        parent: Candidate,
        xs: list[Any],
        infos: list[Any],
        *,
        num_proposals: int = 1,
        optimizer_index: int = 0,
        context: str | None = None,
    ) -> ExplorationJob:
        """`num_proposals` proposals from `parent` on the minibatch `(xs, infos)` by
        optimizer `optimizer_index`; a parent from another optimizer's chain starts that
        optimizer's state afresh."""
        same_chain = parent.optimizer_index == optimizer_index
        return ExplorationJob(
            paramset=parent.paramset,
            xs=xs,
            infos=infos,
            num_proposals=num_proposals,
            optimizer_index=optimizer_index,
            optimizer_state=parent.optimizer_state if same_chain else None,
            context=context,
        )

    def _explore_one(
        self, parent: Candidate, guide: Guide, xs: list[Any], infos: list[Any], index: int = 0
    ) -> ExplorationResult:
        """One proposal from `parent` on `(xs, infos)` by optimizer `index` (see `_job`)."""
        (result,) = self.engine.explore(
            [self._job(parent, xs, infos, optimizer_index=index)], guide
        )
        return result

    def _sample_examples(
        self, data: dict[str, list[Any]], size: int
    ) -> tuple[list[Any], list[Any]]:
        """`size` distinct examples of `data` drawn with the trainer's RNG, in dataset
        order: `(inputs, infos)`."""
        picked = sorted(self.rng.sample(range(len(data["inputs"])), size))
        return [data["inputs"][i] for i in picked], [data["infos"][i] for i in picked]

    def _epochs_done(self) -> bool:
        """Whether the loader has gone through `num_epochs` (set by the subclass's
        `_configure`; None means no epoch limit)."""
        assert self.loader is not None
        return self.num_epochs is not None and self.loader.n_epochs >= self.num_epochs

    def _training_loader(
        self, train_dataset: Any, batch_size: int, what: str = "batch_size"
    ) -> dict[str, list[Any]]:
        """The training set, with `self.loader` on it; `what` names the batch size in errors
        (the keyword, or how it was computed from the keywords)."""
        data = as_dataset(train_dataset, name="train_dataset")
        if batch_size > len(data["inputs"]):
            raise DatasetError(
                f"{what}={batch_size} is larger than the training set "
                f"({len(data['inputs'])} examples); use a batch size of at most the dataset size"
            )
        self.loader = DataLoader(data, batch_size, seed=self.seed)
        return data

    # -- the iterative searches (UCB, GEPA) ---------------------------------------------------

    def _iterative_search(
        self, guide: Guide, train_dataset: Any, kwargs: dict[str, Any]
    ) -> TrainResult:
        """`train` of a search that runs `self.iterations` steps of `_iterate`: parse the
        keywords with `options_class`, `_configure` and `_reset`, score the starting buffer
        (`_seed_buffer`), then step until the iterations, a stop condition or the epochs
        run out."""
        batch_given = "batch_size" in kwargs
        options = self.options_class.from_kwargs(kwargs, algorithm=type(self).__name__)
        self._configure(guide, train_dataset, options, batch_given=batch_given)
        self._reset()
        config = {"algorithm": type(self).__name__, **self._config}
        iterations = self.iterations
        with self.session(guide, options, config=config, total_steps=iterations) as run:
            self.engine = self._engine(self.options)
            run.initial_evaluation()
            self._seed_buffer()
            while self.n_iters < iterations and not run.should_stop() and not self._epochs_done():
                run.complete_step(**self._iterate(guide))
        assert run.result is not None
        return run.result

    def _configure_iterations(
        self,
        guide: Guide,
        train_dataset: Any,
        options: IterativeSearchOptions,
        *,
        batch_given: bool,
    ) -> None:
        """The iterative searches' common settings: `train_batch_size` (default:
        `batch_size` if given, else 2), `iterations`, `num_epochs`, the training loader,
        `validation_dataset` (default: the training set) and `validate_guide` (default:
        `guide`)."""
        train_batch_size = options.train_batch_size
        if train_batch_size is None:
            train_batch_size = options.batch_size if batch_given else 2
        self.train_batch_size = train_batch_size
        self.iterations = options.num_search_iterations
        self.num_epochs = options.num_epochs
        data = self._training_loader(train_dataset, train_batch_size, "train_batch_size")
        validation = options.validation_dataset
        self.validation_dataset = (
            data if validation is None else as_dataset(validation, name="validation_dataset")
        )
        self.validate_guide = options.validate_guide or guide


SearchTrainer.__signature__ = constructor_signature(  # type: ignore[attr-defined]
    Trainer.__init__, None, SearchTrainer.positional_parameters
)
SearchTrainer._constructor_plan = Plan(SearchTrainer.__signature__)  # type: ignore[attr-defined]
