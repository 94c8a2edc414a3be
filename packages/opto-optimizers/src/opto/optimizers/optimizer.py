"""The optimizer base classes: ``AbstractOptimizer``, ``Optimizer`` and the ``StepRecord``.

An optimizer holds a list of ``ParameterNode``s, reads the feedback that ``backward``
left on them, and proposes new values, much like ``torch.optim``::

    optimizer = OptoPrime(model.parameters())
    optimizer.zero_feedback()
    optimizer.backward(output, "the result should be larger")
    update = optimizer.step()          # propose -> project -> update

Each ``step`` leaves a :class:`StepRecord` (prompt, raw reply, parsed suggestion, what was
applied, what was rejected and why, LLM usage) in ``optimizer.steps``. State is data:
``state_dict()`` is JSON-able, ``save``/``load`` write and read it as JSON.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
from opto.optimizers.code_proposals import rejection_feedback
from opto.optimizers.utils import atomic_write_text, jsonable
from opto.trace.nodes import Node, ParameterNode
from opto.trace.propagators import AbstractPropagator, GraphPropagator, TraceGraph
from opto.trace.utils import sum_feedback
from opto.utils.llm.types import Usage
from opto.utils.once import get_or_create

__all__ = ["AbstractOptimizer", "Optimizer", "StepRecord"]

logger = logging.getLogger(__name__)

#: Serializes the first-use construction of default LLM clients.
_LLM_LOCK = threading.Lock()


def _default_llm() -> Any:
    """``opto.utils.llm.LLM()``, imported on first use (the LLM stack is heavy)."""
    from opto.utils.llm import LLM

    return LLM()


STATE_FORMAT = 1
"""Version of the ``state_dict`` layout; bumped when it changes incompatibly."""


@attrs.define(kw_only=True)
class StepRecord:
    """What one optimization step did, for users, trainers and logs.

    Attributes:
        index: the optimizer's step counter when the step started (0-based).
        system_prompt / user_prompt: the prompt sent to the LLM ("" if none was sent).
        raw_reply: the LLM's reply text, None when the LLM was not called.
        reasoning: the reasoning the reply gave, if any.
        answer: the reply's answer field, if any.
        suggestion: the parsed suggestion, ``variable name -> proposed value`` (raw).
        applied: ``variable name -> new value`` actually assigned (after projections).
        rejected: ``name -> reason`` for suggested values that were not applied.
        usage: tokens, cost and latency of the LLM call(s), when known.
        llm_calls: number of LLM calls made by the step.
        terminated: the LLM answered ``TERMINATE`` (no change wanted).
        skipped: why the LLM was not called (e.g. no parameter received feedback).
        parse_error: why the reply could not be parsed, if it could not.
        error: the exception that aborted the step, as ``"Type: message"``.
        bypassed: ``step(bypassing=True)`` proposed without assigning.
    """

    index: int
    system_prompt: str = ""
    user_prompt: str = ""
    raw_reply: str | None = None
    reasoning: str = ""
    answer: Any = None
    suggestion: dict[str, Any] = attrs.field(factory=dict)
    applied: dict[str, Any] = attrs.field(factory=dict)
    rejected: dict[str, str] = attrs.field(factory=dict)
    usage: Usage | None = None
    llm_calls: int = 0
    terminated: bool = False
    skipped: str | None = None
    parse_error: str | None = None
    error: str | None = None
    bypassed: bool = False

    @property
    def messages(self) -> list[dict[str, str]]:
        """The prompt as chat messages (empty when no prompt was built)."""
        if not (self.system_prompt or self.user_prompt):
            return []
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": self.user_prompt},
        ]

    def add_usage(self, usage: Usage | None) -> None:
        """Count one LLM call and add its usage to the step's total."""
        self.llm_calls += 1
        if usage is None:
            return
        if self.usage is None:
            self.usage = usage
            return
        cost = (
            None
            if self.usage.cost_usd is None or usage.cost_usd is None
            else self.usage.cost_usd + usage.cost_usd
        )
        self.usage = Usage(
            prompt_tokens=self.usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens + usage.completion_tokens,
            cost_usd=cost,
            latency_s=self.usage.latency_s + usage.latency_s,
            cached=self.usage.cached and usage.cached,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; values JSON cannot hold become their ``repr``."""
        data = attrs.asdict(self, recurse=False)
        data["usage"] = None if self.usage is None else self.usage.to_dict()
        return jsonable(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepRecord:
        """Inverse of :meth:`to_dict` (values come back as JSON types); unknown keys ignored."""
        names = {field.name for field in attrs.fields(cls)}
        fields = {key: value for key, value in data.items() if key in names}
        usage = fields.get("usage")
        if isinstance(usage, Mapping):
            fields["usage"] = Usage(**usage)
        return cls(**fields)


def _validate_parameters(parameters: Any) -> list[ParameterNode]:
    """The parameters as a list without duplicates; TypeError/ValueError naming the fix."""
    if isinstance(parameters, Node):
        raise TypeError(
            f"parameters must be an iterable of ParameterNodes, got the single node "
            f"{parameters.name!r}; wrap it in a list: Optimizer([param])."
        )
    if isinstance(parameters, (str, bytes, Mapping)):
        raise TypeError(
            f"parameters must be an iterable of ParameterNodes, got a {type(parameters).__name__};"
            " pass model.parameters() or a list of trace.node(..., trainable=True)."
        )
    if not isinstance(parameters, Iterable):
        raise TypeError(
            f"parameters must be an iterable of ParameterNodes, got {type(parameters).__name__}; "
            "pass model.parameters() or a list of trace.node(..., trainable=True)."
        )
    result: list[ParameterNode] = []
    seen: set[int] = set()
    for index, item in enumerate(parameters):
        if not isinstance(item, ParameterNode):
            raise TypeError(
                f"parameters[{index}] is a {type(item).__name__}, not a ParameterNode; create "
                "parameters with trace.node(value, trainable=True) or use model.parameters()."
            )
        if id(item) not in seen:
            seen.add(id(item))
            result.append(item)
    if not result:
        raise ValueError(
            "the optimizer got no parameters; pass the ParameterNodes to optimize, e.g. "
            "model.parameters() or [trace.node(value, trainable=True)]."
        )
    if not any(p.trainable for p in result):
        raise ValueError(
            f"none of the {len(result)} parameters is trainable "
            f"({', '.join(p.name for p in result[:5])}); create them with trainable=True."
        )
    return result


class AbstractOptimizer(abc.ABC):
    """An optimizer of ``parameters``: an iterable of ``ParameterNode``s (non-empty).

    Raises:
        TypeError: ``parameters`` is not an iterable of ParameterNodes.
        ValueError: it is empty, or none of the parameters is trainable.
    """

    def __init__(self, parameters: Iterable[ParameterNode], *args: Any, **kwargs: Any) -> None:
        self.parameters: list[ParameterNode] = _validate_parameters(parameters)

    @property
    def trainable_parameters(self) -> list[ParameterNode]:
        """The parameters an update may change (non-trainable ones are skipped)."""
        return [p for p in self.parameters if p.trainable]

    @abc.abstractmethod
    def step(self, *args: Any, **kwargs: Any) -> Any:
        """Propose and apply new values for the parameters."""

    @abc.abstractmethod
    def zero_feedback(self) -> None:
        """Forget the feedback the parameters received."""

    @property
    @abc.abstractmethod
    def propagator(self) -> AbstractPropagator:
        """The propagator ``backward`` uses to carry feedback to the parameters."""


class Optimizer(AbstractOptimizer):
    """Base of the generative optimizers: ``step() = update(project(propose()))``.

    Subclasses implement :meth:`_step`, which returns ``{ParameterNode: new value}`` and
    fills in :attr:`current_step`.

    One instance runs one step at a time; to optimize in parallel threads, give each thread
    its own ``copy.deepcopy(optimizer)`` (copies share the parameters and the LLM client).

    Args:
        parameters: the ParameterNodes to optimize.
        propagator: the feedback propagator; :meth:`default_propagator` when None.
        max_history: how many step records :attr:`steps` keeps (oldest dropped first).

    Attributes:
        llm_calls: LLM requests made so far (subclasses count them with ``_count_call``,
            which :mod:`opto.optimizers.llm_calls` calls for every request).
    """

    #: Attributes a deep copy shares with the original instead of copying: the parameters
    #: (a copy optimizes the same nodes) and the LLM client (it holds connections and
    #: caches, and is safe to share between threads).
    _shared_on_copy: ClassVar[tuple[str, ...]] = ("parameters", "_llm")

    def __init__(
        self,
        parameters: Iterable[ParameterNode],
        *args: Any,
        propagator: AbstractPropagator | None = None,
        max_history: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(parameters)
        if args or kwargs:
            logger.warning(
                "%s ignores unknown arguments %s %s",
                type(self).__name__,
                args,
                sorted(kwargs),
            )
        if propagator is None:
            propagator = self.default_propagator()
        if not isinstance(propagator, AbstractPropagator):
            raise TypeError(
                f"propagator must be an opto.trace.propagators.Propagator, got "
                f"{type(propagator).__name__}; leave it None for the default GraphPropagator."
            )
        if max_history < 1:
            raise ValueError(f"max_history must be at least 1, got {max_history}.")
        self._propagator = propagator
        self.step_count = 0
        self._steps: deque[StepRecord] = deque(maxlen=max_history)
        self._active: StepRecord | None = None
        self.llm_calls = 0

    # --- the LLM ----------------------------------------------------------------------

    @property
    def llm(self) -> Any:
        """The LLM client: the one given, else ``opto.utils.llm.LLM()`` built on first use.

        Building it lazily lets optimizers be created, copied, saved and exported where no
        LLM is configured; the configuration error surfaces at the first LLM call.
        """
        return get_or_create(self.__dict__, "_llm", _LLM_LOCK, _default_llm)

    @llm.setter
    def llm(self, llm: Any) -> None:
        self.__dict__["_llm"] = llm  # None: build the default again on next use

    def _count_call(self, usage: Usage | None) -> None:
        """Count one LLM request (in :attr:`llm_calls` and the current step's record)."""
        self.llm_calls += 1
        if self._active is not None:
            self._active.add_usage(usage)

    # --- feedback ---------------------------------------------------------------------

    @property
    def propagator(self) -> AbstractPropagator:
        """The propagator given at construction, else :meth:`default_propagator`'s."""
        return self._propagator

    def default_propagator(self) -> AbstractPropagator:
        """The propagator used when none is given: a ``GraphPropagator``."""
        return GraphPropagator()

    @property
    def trace_graph(self) -> Any:
        """Sum of the feedback every parameter received (``0`` when there is none)."""
        return sum_feedback(self.parameters)

    def _aggregated_feedback(self) -> Any:
        """``TraceGraph.sum`` of the aggregated feedback of the trainable parameters, None
        when none received any.

        Raises:
            TypeError: the propagator has no ``aggregate()`` (it does not give TraceGraphs).
        """
        aggregate = getattr(self.propagator, "aggregate", None)
        if aggregate is None:
            raise TypeError(
                f"{type(self).__name__} reads TraceGraph feedback; its propagator "
                f"{type(self.propagator).__name__} has no aggregate(). Use a GraphPropagator."
            )
        graphs = [aggregate(p.feedback) for p in self.trainable_parameters if p.feedback]
        if not graphs:
            return None
        total = TraceGraph.sum(graphs)
        last = self.last_step
        note = rejection_feedback(last.rejected) if last is not None else ""
        if note and (total.user_feedback is None or isinstance(total.user_feedback, str)):
            total.user_feedback = f"{total.user_feedback or ''}\n\n{note}".strip()
        return total

    def zero_feedback(self) -> None:
        """Clear the feedback of every parameter (call before each ``backward``)."""
        for p in self.parameters:
            p.zero_feedback()

    def backward(self, node: Node, *args: Any, **kwargs: Any) -> Any:
        """``node.backward(*args, propagator=self.propagator, **kwargs)``; returns its result."""
        if not isinstance(node, Node):
            raise TypeError(
                f"backward needs the traced output Node, got {type(node).__name__}; call it on "
                "the result of traced operations (e.g. optimizer.backward(output, feedback))."
            )
        return node.backward(*args, propagator=self.propagator, **kwargs)

    # --- the step ---------------------------------------------------------------------

    @property
    def steps(self) -> list[StepRecord]:
        """Records of the latest steps, oldest first (at most ``max_history``)."""
        return list(self._steps)

    @property
    def last_step(self) -> StepRecord | None:
        """The record of the latest step, None before the first."""
        return self._steps[-1] if self._steps else None

    @property
    def max_history(self) -> int:
        """How many step records :attr:`steps` keeps."""
        return self._steps.maxlen or 0

    @property
    def current_step(self) -> StepRecord:
        """The record of the step in progress (subclasses write to it from ``_step``)."""
        if self._active is None:
            raise RuntimeError(
                "no step is in progress; current_step is only available inside step()/propose()."
            )
        return self._active

    @contextlib.contextmanager
    def _recording(self) -> Iterator[StepRecord]:
        """Open a step record (or join the one already open) and file it when done."""
        if self._active is not None:
            yield self._active
            return
        record = StepRecord(index=self.step_count)
        self._active = record
        try:
            yield record
        except BaseException as error:
            record.error = f"{type(error).__name__}: {error}"
            raise
        finally:
            self._active = None
            self.step_count += 1
            self._steps.append(record)

    def step(self, bypassing: bool = False, *args: Any, **kwargs: Any) -> dict[ParameterNode, Any]:
        """Propose new values, project them and, unless ``bypassing``, assign them.

        Returns the update dict ``{ParameterNode: new value}`` (after projections). Extra
        arguments go to :meth:`propose`. The step's record is :attr:`last_step` afterwards.
        """
        with self._recording() as record:
            record.bypassed = bool(bypassing)
            update = self.propose(*args, **kwargs)
            self.project(update)
            if not bypassing:
                self.update(update)
        return update

    def propose(self, *args: Any, **kwargs: Any) -> dict[ParameterNode, Any]:
        """The proposed update ``{ParameterNode: value}`` (nothing assigned yet)."""
        with self._recording():
            return self._step(*args, **kwargs)

    @abc.abstractmethod
    def _step(self, *args: Any, **kwargs: Any) -> dict[ParameterNode, Any]:
        """Compute the proposed update; record details in :attr:`current_step`."""

    def project(self, update_dict: dict[ParameterNode, Any]) -> dict[ParameterNode, Any]:
        """Pass each trainable parameter's value through its projections, in place.

        A projection that raises rejects that parameter's update (recorded, logged).
        """
        for p, value in list(update_dict.items()):
            if not p.trainable:
                continue
            for projection in p.projections:
                try:
                    value = projection(value)
                except Exception as error:
                    reason = f"projection {type(projection).__name__} failed: {error}"
                    logger.warning("Rejected the update of %s: %s", p.py_name, reason)
                    self._reject(p.py_name, reason)
                    del update_dict[p]
                    break
            else:
                update_dict[p] = value
        return update_dict

    def update(self, update_dict: Mapping[ParameterNode, Any]) -> None:
        """Assign the new values to the trainable parameters (non-trainable ones skipped)."""
        record = self._active
        for p, value in update_dict.items():
            if not p.trainable:
                continue
            p._set(value)
            if record is not None:
                record.applied[p.py_name] = value

    def _reject(self, name: str, reason: str) -> None:
        """Record that the suggestion for ``name`` was not applied, and why."""
        if self._active is not None:
            self._active.rejected[name] = reason

    # --- state ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's JSON-able state: counters (steps, LLM calls) and step records (not the parameters'
        values, which belong to the model, and not the LLM client)."""
        return {
            "type": type(self).__name__,
            "format": STATE_FORMAT,
            "parameters": [p.py_name for p in self.parameters],
            "step_count": self.step_count,
            "llm_calls": self.llm_calls,
            "steps": [record.to_dict() for record in self._steps],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; parameters and LLM are left as they are.

        Raises:
            TypeError: ``state`` is not a mapping.
            ValueError: ``state`` has an unknown format version or is malformed.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}.")
        fmt = state.get("format", STATE_FORMAT)
        if fmt != STATE_FORMAT:
            raise ValueError(
                f"cannot load optimizer state of format {fmt!r}; this version reads format "
                f"{STATE_FORMAT}. Save it again with a matching opto-optimizers version."
            )
        kind = state.get("type")
        if kind is not None and kind != type(self).__name__:
            logger.warning("Loading %s state into a %s.", kind, type(self).__name__)
        names = [p.py_name for p in self.parameters]
        saved = state.get("parameters")
        if saved is not None and list(saved) != names:
            logger.warning(
                "The saved state was for parameters %s; this optimizer has %s.", saved, names
            )
        try:
            step_count = int(state.get("step_count", 0))
            llm_calls = int(state.get("llm_calls", 0))
            records = [StepRecord.from_dict(item) for item in state.get("steps", ())]
        except (TypeError, ValueError, AttributeError) as error:
            raise ValueError(
                f"the optimizer state is malformed ({type(error).__name__}: {error}); load a "
                "state written by state_dict()/save() of the same optimizer."
            ) from None
        self.step_count = step_count
        self.llm_calls = llm_calls
        self._steps.clear()
        self._steps.extend(records)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`state_dict` as JSON to ``path`` atomically; returns the path."""
        return atomic_write_text(path, json.dumps(self.state_dict(), indent=2, ensure_ascii=False))

    def load(self, path: str | os.PathLike[str]) -> None:
        """Read a JSON state written by :meth:`save` into this optimizer.

        Raises:
            ValueError: the file is not valid JSON (or nested too deeply) or not a state.
        """
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise ValueError(f"{path} is not an optimizer state file: {error}") from None
        self.load_state_dict(state)

    def fork(self, parameters: Iterable[ParameterNode] | None = None) -> Optimizer:
        """A copy of this optimizer that optimizes ``parameters`` instead of its own.

        ``parameters`` correspond one to one, in order, to :attr:`parameters` (e.g. the
        same parameters of a copy of the model; None: the same nodes). The fork keeps the
        optimizer's configuration, counters and memory of earlier steps, shares its LLM
        client, and starts with fresh per-step state: no step records and no step in
        progress. Every reference to an original parameter inside the optimizer's state
        points to its counterpart in the fork. Use a fork per concurrent step, or to
        continue this optimizer's search on other nodes without touching the original.

        Raises:
            TypeError: ``parameters`` is not an iterable of ParameterNodes.
            ValueError: it does not have one node per parameter of this optimizer.
        """
        own = list(self.parameters)
        nodes = own if parameters is None else _validate_parameters(parameters)
        if len(nodes) != len(own):
            raise ValueError(
                f"fork needs one parameter per parameter of the optimizer ({len(own)}: "
                f"{[p.py_name for p in own]}), got {len(nodes)}; pass the counterparts in "
                "the same order."
            )
        memo: dict[int, Any] = {id(old): new for old, new in zip(own, nodes)}
        fork = copy.deepcopy(self, memo)
        fork.parameters = nodes
        fork._steps = deque(maxlen=self._steps.maxlen)
        fork._active = None
        return fork

    def __deepcopy__(self, memo: dict[int, Any]) -> Optimizer:
        """A copy with its own state that optimizes the same parameters with the same LLM."""
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key == "parameters":
                new.__dict__[key] = list(value)
            elif key in self._shared_on_copy:
                # Shared, and the same object wherever else it appears in this deepcopy call
                # (e.g. deepcopy((optimizer, llm)) gives a pair whose optimizer uses its llm).
                new.__dict__[key] = memo.setdefault(id(value), value)
            elif key == "_active":
                new.__dict__[key] = None
            else:
                new.__dict__[key] = copy.deepcopy(value, memo)
        return new
