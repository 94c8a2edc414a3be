"""Propagator interfaces: how feedback flows from a child node to its parents.

A propagator is called once per ``MessageNode`` during ``backward``: it reads the feedback
the node received from its children (``child.feedback``) and returns one feedback value per
parent. ``Propagator`` adds per-operator overrides; ``SumPropagator`` is the simplest
concrete one (it forwards the combined feedback unchanged to every parent).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any

from opto.trace.nodes import MessageNode, Node
from opto.trace.propagators.errors import PropagationError

__all__ = [
    "AbstractFeedback",
    "AbstractPropagator",
    "Propagator",
    "SumPropagator",
    "add_feedback",
]


class AbstractFeedback(abc.ABC):
    """Feedback that can be summed; ``sum(feedbacks)`` works because ``0 + fb`` is ``fb``."""

    @abc.abstractmethod
    def __add__(self, other: Any) -> AbstractFeedback:
        """Combine two feedbacks into one."""

    def __radd__(self, other: Any) -> AbstractFeedback:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented


class AbstractPropagator(abc.ABC):
    """Maps a child node's received feedback to one feedback value per parent."""

    def __call__(self, child: MessageNode) -> dict[Node, Any]:
        """Propagate ``child``'s feedback to its parents, checking the propagator contract."""
        if not isinstance(child, MessageNode):
            raise TypeError(
                f"Only MessageNodes propagate feedback to parents; got {type(child).__name__}. "
                "Call backward on an output of an operator or bundle."
            )
        for key, items in child.feedback.items():
            if len(items) > 1:
                raise PropagationError(
                    f"{child.name} holds {len(items)} feedback items from {_key_name(key)}; "
                    "a child must contribute at most one. Call zero_feedback() before re-running."
                )
        propagated = self.propagate(child)
        if not isinstance(propagated, Mapping):
            raise PropagationError(
                f"{type(self).__name__}.propagate must return a dict parent -> feedback, "
                f"got {type(propagated).__name__}."
            )
        missing = [p.name for p in child.parents if p not in propagated]
        if missing:
            raise PropagationError(
                f"{type(self).__name__}.propagate returned no feedback for parents {missing} "
                f"of {child.name}; return one entry per parent."
            )
        return dict(propagated)

    @abc.abstractmethod
    def init_feedback(self, node: Node, feedback: Any) -> Any:
        """Turn the user's feedback on ``node`` into the propagator's feedback type."""

    @abc.abstractmethod
    def propagate(self, child: MessageNode) -> dict[Node, Any]:
        """Return ``{parent: feedback}`` for every parent of ``child``."""


class Propagator(AbstractPropagator):
    """A propagator with per-operator overrides, keyed by the child's op name."""

    def __init__(self) -> None:
        self.override: dict[str, Callable[[MessageNode], dict[Node, Any]]] = {}

    def register(
        self, operator_name: str, propagate_function: Callable[[MessageNode], dict[Node, Any]]
    ) -> None:
        """Use ``propagate_function(child)`` for children whose op name is ``operator_name``."""
        self.override[operator_name] = propagate_function

    def propagate(self, child: MessageNode) -> dict[Node, Any]:
        """Dispatch to a registered override for the child's operator, else ``_propagate``."""
        function = self.override.get(child.op_name)
        if function is not None:
            return function(child)
        return self._propagate(child)

    @abc.abstractmethod
    def _propagate(self, child: MessageNode) -> dict[Node, Any]:
        """Default propagation rule."""


class SumPropagator(Propagator):
    """Sends the combined feedback of a child, unchanged, to every parent.

    String feedbacks are joined with newlines, other feedbacks are summed with ``+``.
    A legacy ``"user"`` key, when present, is used on its own.
    """

    def init_feedback(self, node: Node, feedback: Any) -> Any:
        """The user's feedback is propagated as is."""
        return feedback

    def _propagate(self, child: MessageNode) -> dict[Node, Any]:
        if "user" in child.feedback:
            items = list(child.feedback["user"])
        else:
            items = [fb for group in child.feedback.values() for fb in group]
        if not items:
            raise PropagationError(f"{child.name} received no feedback to propagate.")
        if all(isinstance(fb, str) for fb in items):
            combined: Any = "\n".join(items)
        elif any(isinstance(fb, str) for fb in items):
            kinds = sorted({type(fb).__name__ for fb in items})
            raise TypeError(
                f"SumPropagator cannot combine feedback of types {kinds} at {child.name}; "
                "give every output feedback of one type."
            )
        else:
            combined = sum(items[1:], items[0])
        return {parent: combined for parent in child.parents}


def add_feedback(target: Node, child: Any, feedback: Any) -> None:
    """Record ``feedback`` from ``child`` on ``target``, keeping one entry per child.

    A second contribution from the same child (e.g. ``backward(retain_graph=True)`` twice
    through a shared node) is summed into the existing entry instead of appended, so later
    aggregation never sees duplicates.
    """
    existing = target._feedback.get(child)
    if existing:
        existing[-1] = existing[-1] + feedback
    else:
        target._add_feedback(child, feedback)


def _key_name(key: Any) -> str:
    return getattr(key, "name", None) or repr(key)
