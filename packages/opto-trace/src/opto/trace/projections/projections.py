"""The ``Projection`` base class."""

from __future__ import annotations

import abc
from typing import Any

__all__ = ["Projection"]


class Projection(abc.ABC):
    """Maps a proposed parameter value to a valid one; ``projection(x)`` calls ``project``.

    Optimizers apply a parameter's projections in order after each update, so ``project``
    should be idempotent: projecting an already valid value returns it unchanged.
    """

    def __call__(self, x: Any) -> Any:
        return self.project(x)

    @abc.abstractmethod
    def project(self, x: Any) -> Any:
        """Return the projected value of ``x``."""
