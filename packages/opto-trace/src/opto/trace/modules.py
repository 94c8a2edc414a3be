"""Trainable modules (provisional base; completed by the modules work)."""

from __future__ import annotations

from typing import Any

from opto.trace.containers import ParameterContainer


class Module(ParameterContainer):
    """A ParameterContainer with a `forward` method; calling the module calls `forward`."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)
