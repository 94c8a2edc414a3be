"""`train(...)`: build a trainer from names or objects and train a model in one call."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from opto.trace.modules import Module
from opto.trace.nodes import ParameterNode

from ..executors import Executor
from ..guide import Guide, build_guide
from ..loader import as_dataset
from ..loggers import BaseLogger
from ..options import TrainResult
from .base import Trainer

__all__ = ["train"]


class _ParameterModel(Module):
    """Wraps one trainable ParameterNode as a model whose output is the parameter."""

    def __init__(self, parameter: ParameterNode) -> None:
        self.parameter = parameter

    def forward(self, x: Any) -> ParameterNode:
        return self.parameter


def _resolve(spec: Any, module: str, kind: str, base: type) -> Any:
    """A class from a name looked up in `module`, or the class/instance given."""
    if isinstance(spec, str):
        found = getattr(importlib.import_module(module), spec, None)
        if not (isinstance(found, type) and issubclass(found, base)):
            raise ValueError(f"unknown {kind} {spec!r}: {module} has no {kind} of that name")
        return found
    return spec


def train(
    *,
    model: Module | ParameterNode,
    train_dataset: Any,
    algorithm: str | type[Trainer] = "MinibatchAlgorithm",
    optimizer: Any = None,
    guide: Any = "LLMJudge",
    logger: Any = "ConsoleLogger",
    optimizer_kwargs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    guide_kwargs: Mapping[str, Any] | None = None,
    logger_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
    executor: Executor | str | None = None,
    **trainer_kwargs: Any,
) -> TrainResult:
    """Train `model` in one call (the reference's entry point).

    `algorithm`, `optimizer`, `guide` and `logger` are names (looked up in
    `opto.trainers.algorithms`, `opto.optimizers`, `opto.trainers.guide`,
    `opto.trainers.loggers`), classes, or instances. A trainable `ParameterNode` is
    wrapped into a model whose output is the parameter (black-box optimization; the default
    optimizer is then "OPROv2" where available, else "OPRO"; for modules "OptoPrimeV2").
    A list of `optimizer_kwargs` builds one optimizer per entry. `seed` and `executor` go
    to the trainer; every other keyword to its `train`.
    """
    as_dataset(train_dataset, name="train_dataset")
    if isinstance(model, ParameterNode):
        if not model.trainable:
            raise ValueError(
                "train(model=...) got a non-trainable ParameterNode; create it with trainable=True"
            )
        model = _ParameterModel(model)
    elif not isinstance(model, Module):
        raise TypeError(
            f"model must be a trace Module or a trainable ParameterNode, not {type(model).__name__}"
        )
    if not model.parameters():
        raise ValueError("the model has no parameters to optimize; mark some with trainable=True")
    trainer_class = _resolve(algorithm, "opto.trainers.algorithms", "algorithm", Trainer)
    if not (isinstance(trainer_class, type) and issubclass(trainer_class, Trainer)):
        raise TypeError(f"algorithm must be a Trainer subclass or its name, not {algorithm!r}")
    optimizers_module = importlib.import_module("opto.optimizers")
    if optimizer is None:
        wrapped = isinstance(model, _ParameterModel)
        optimizer = (
            ("OPROv2" if hasattr(optimizers_module, "OPROv2") else "OPRO")
            if wrapped
            else "OptoPrimeV2"
        )
    optimizer_class = _resolve(
        optimizer, "opto.optimizers", "optimizer", optimizers_module.Optimizer
    )
    if isinstance(optimizer_class, type):
        many = isinstance(optimizer_kwargs, Sequence) and not isinstance(optimizer_kwargs, Mapping)
        kwargs_list = list(optimizer_kwargs) if many else [optimizer_kwargs or {}]  # type: ignore[arg-type]
        built = [optimizer_class(model.parameters(), **kw) for kw in kwargs_list]
        optimizer = built if many else built[0]
    guide_class = _resolve(guide, "opto.trainers.guide", "guide", Guide)
    guide = build_guide(guide_class, guide_kwargs)
    logger_class = _resolve(logger, "opto.trainers.loggers", "logger", BaseLogger)
    logger = (
        logger_class(**(logger_kwargs or {})) if isinstance(logger_class, type) else logger_class
    )
    trainer = trainer_class(model, optimizer, logger=logger, executor=executor, seed=seed)
    return trainer.train(guide, train_dataset, **trainer_kwargs)
