"""Rollouts of agents over a data loader, grouped for backward: `Sampler`.

A `BatchRollout` holds the rollouts of one module object: their graphs meet at that
module's parameter nodes, so one optimizer `backward` can consume the whole group.
`Sampler.sample` draws a batch from a `DataLoader` and cuts it into sub-batches; the first
sub-batch of each agent runs on the agent itself, every later one on a deep copy with its
own parameter nodes (`is_node_copy` relates them), so each sub-batch has its own graph.
Every single call runs on a `.copy()` of its module (shared parameters, isolated state)
and of the guide, in a copy of the caller's context.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
from opto.trace.modules import Module

from . import evaluation
from .executors import make_executor
from .guide import Guide
from .loader import DataLoader, as_dataset
from .utils import deepcopy_module

__all__ = [
    "BatchRollout",
    "Rollout",
    "RolloutConfig",
    "Sampler",
    "sample_rollouts",
    "standard_forward",
]

#: `forward(module, x, guide, info, min_score) -> (target, score, feedback)`.
Forward = Callable[[Module, Any, Guide, Any, Any], tuple[Any, Any, Any]]


@attrs.define(kw_only=True, eq=False)
class Rollout(evaluation.Rollout):
    """One example's rollout together with the module object whose graph it belongs to."""

    module: Module | None = attrs.field(default=None, repr=False)


class BatchRollout(Sequence[Rollout]):
    """Rollouts that all come from one module object (one backward consumes them)."""

    def __init__(self, rollouts: Sequence[Rollout] = ()) -> None:
        self._rollouts: list[Rollout] = []
        self.extend(rollouts)

    @property
    def module(self) -> Module | None:
        """The module object shared by every rollout (None when empty)."""
        return self._rollouts[0].module if self._rollouts else None

    def extend(self, rollouts: Sequence[Rollout]) -> None:
        """Add rollouts of the same module object.

        Raises:
            ValueError: a rollout comes from another module object.
        """
        for item in rollouts:
            if self._rollouts and item.module is not self.module:
                raise ValueError(
                    "a BatchRollout holds rollouts of one module object only; put rollouts "
                    "of other modules (or copies) in their own BatchRollout"
                )
            self._rollouts.append(item)

    def get_scores(self) -> list[Any]:
        """The score of every rollout, in order."""
        return [r.score for r in self._rollouts]

    def get_batch(self) -> dict[str, list[Any]]:
        """The examples as a dataset: `{"inputs": [...], "infos": [...]}`."""
        return {"inputs": [r.x for r in self._rollouts], "infos": [r.info for r in self._rollouts]}

    def to_list(self) -> list[dict[str, Any]]:
        """The rollouts as JSON-friendly dicts (the target replaced by its data)."""
        return [r.to_dict() for r in self._rollouts]

    def __len__(self) -> int:
        return len(self._rollouts)

    def __iter__(self) -> Iterator[Rollout]:
        return iter(self._rollouts)

    def __getitem__(self, index: Any) -> Any:
        return self._rollouts[index]

    def __repr__(self) -> str:
        return f"BatchRollout({len(self)} rollouts, scores={self.get_scores()!r})"


def _check_config(instance: RolloutConfig, attribute: Any, value: Any) -> None:
    if len(instance.xs) != len(instance.infos):
        raise ValueError(
            f"RolloutConfig got {len(instance.xs)} inputs but {len(instance.infos)} infos; "
            "pass one info per input"
        )


@attrs.frozen(kw_only=False)
class RolloutConfig:
    """A module, the examples to run it on, and the guide that scores them."""

    module: Module = attrs.field(validator=attrs.validators.instance_of(Module))
    xs: Sequence[Any] = attrs.field(converter=list)
    infos: Sequence[Any] = attrs.field(converter=list, validator=_check_config)
    guide: Guide = attrs.field(validator=attrs.validators.instance_of(Guide))


def standard_forward(
    agent: Module, x: Any, guide: Guide, info: Any, min_score: Any = None
) -> tuple[Any, Any, Any]:
    """Run `agent(x)` and score it: `(target, score, feedback)`.

    An `ExecutionError` of the agent gives its exception node as the target, `min_score`
    and the node's full feedback, so an optimizer can repair code that crashes.
    """
    record = evaluation.rollout(agent, x, guide, info, min_score)
    return record.target, record.score, record.feedback


def _run_config_item(
    forward: Forward, min_score: Any, task: tuple[Module, Any, Any, Guide]
) -> Rollout:
    module, x, info, guide = task
    target, score, feedback = forward(module.copy(), x, guide.copy(), info, min_score)
    return Rollout.from_target(
        target, module=module, x=x, info=info, score=score, feedback=feedback
    )


def sample_rollouts(
    configs: Sequence[RolloutConfig],
    num_threads: int | None = 1,
    forward: Forward | None = None,
    min_score: Any = None,
    description: str | None = None,
) -> list[BatchRollout]:
    """Run every (config, example) pair at once; one `BatchRollout` per config, in order.

    Each call runs on a `.copy()` of the config's module and guide. `forward` defaults to
    `standard_forward`. `description` is accepted for compatibility.
    """
    tasks = [(c.module, x, info, c.guide) for c in configs for x, info in zip(c.xs, c.infos)]
    run = functools.partial(_run_config_item, forward or standard_forward, min_score)
    with make_executor(num_threads=num_threads) as executor:
        results = executor.map(run, tasks)
    batches: list[BatchRollout] = []
    start = 0
    for config in configs:
        batches.append(BatchRollout(results[start : start + len(config.xs)]))
        start += len(config.xs)
    return batches


class Sampler:
    """Draw batches from `loader` and roll agents out on them, grouped for backward.

    Args:
        loader: the data source (its `sample()` stream is used).
        guide: scores every rollout.
        num_threads: calls in flight at once.
        subbatch_size: examples per `BatchRollout` (default and maximum: the batch size).
        forward: `forward(module, x, guide, info, min_score) -> (target, score, feedback)`;
            `standard_forward` when None.
        score_range: `(min, max)` scores; a failed forward scores the minimum.
    """

    def __init__(
        self,
        loader: DataLoader,
        guide: Guide,
        num_threads: int | None = 1,
        subbatch_size: int | None = None,
        forward: Forward | None = None,
        score_range: tuple[float, float] = (-math.inf, math.inf),
    ) -> None:
        if not isinstance(loader, DataLoader):
            raise TypeError(f"loader must be a DataLoader, not {type(loader).__name__}")
        if not isinstance(guide, Guide):
            raise TypeError(
                f"guide must be a Guide, not {type(guide).__name__}; wrap a plain function "
                "with FunctionGuide"
            )
        if subbatch_size is None:
            subbatch_size = loader.batch_size
        if not isinstance(subbatch_size, int) or not 1 <= subbatch_size <= loader.batch_size:
            raise ValueError(
                f"subbatch_size must be an int between 1 and the loader's batch size "
                f"{loader.batch_size}, not {subbatch_size!r}"
            )
        low, high = score_range
        if low > high:
            raise ValueError(f"score_range must be (min, max) with min <= max, not {score_range}")
        self.loader = loader
        self.guide = guide
        self.num_threads = num_threads
        self.subbatch_size = subbatch_size
        self.forward: Forward = forward or standard_forward
        self.score_range = (low, high)
        self._prev_batch: tuple[list[Any], list[Any]] | None = None

    @property
    def dataset(self) -> dict[str, list[Any]]:
        """The loader's dataset; assigning validates it and hands it to the loader."""
        return self.loader.dataset

    @dataset.setter
    def dataset(self, dataset: Any) -> None:
        self.loader.dataset = as_dataset(dataset)

    @property
    def batch_size(self) -> int:
        """The loader's batch size."""
        return self.loader.batch_size

    @property
    def n_epochs(self) -> int:
        """Completed passes of the loader."""
        return self.loader.n_epochs

    def sample(
        self,
        agents: Sequence[Module],
        use_prev_batch: bool = False,
        description_prefix: str = "",
    ) -> tuple[list[BatchRollout], dict[str, list[Any]]]:
        """Roll every agent out on the next batch (or the previous one, if asked and any).

        Returns `len(agents) * ceil(batch / subbatch_size)` BatchRollouts, agent by agent,
        and the batch as `{"inputs": [...], "infos": [...]}`.
        """
        if isinstance(agents, Module):
            raise TypeError("sample takes a list of agents; wrap a single agent as [agent]")
        if use_prev_batch and self._prev_batch is not None:
            xs, infos = self._prev_batch
        else:
            xs, infos = self.loader.sample()
            self._prev_batch = (xs, infos)
        configs = []
        for agent in agents:
            for start in range(0, len(xs), self.subbatch_size):
                module = agent if start == 0 else deepcopy_module(agent)
                stop = start + self.subbatch_size
                configs.append(RolloutConfig(module, xs[start:stop], infos[start:stop], self.guide))
        samples = sample_rollouts(
            configs,
            num_threads=self.num_threads,
            forward=self.forward,
            min_score=self.score_range[0],
            description=description_prefix or None,
        )
        return samples, {"inputs": list(xs), "infos": list(infos)}
