"""Projections for code parameters (the ``__code`` of trainable bundles)."""

from __future__ import annotations

import logging
from typing import Any

from opto.trace.projections.projections import Projection
from opto.utils.imports import require

__all__ = ["BlackCodeFormatter", "DocstringProjection"]

logger = logging.getLogger(__name__)

_TRIPLE_QUOTE = '"""'


class BlackCodeFormatter(Projection):
    """Formats code (strings containing ``def``) with black's default style.

    Needs black: ``pip install 'opto-trace[black]'``. Code black cannot parse is returned
    unchanged (with a warning), so a bad suggestion fails later when run, with feedback.
    """

    def project(self, x: Any) -> Any:
        """``x`` formatted by black when it is a string of code, else ``x`` unchanged."""
        if not isinstance(x, str) or "def" not in x:
            return x
        black = require("black", "black", package="trace", purpose="BlackCodeFormatter")
        try:
            return black.format_str(x, mode=black.Mode())
        except black.InvalidInput as error:
            logger.warning(
                "BlackCodeFormatter left code unchanged, black cannot parse it: %s", error
            )
            return x


class DocstringProjection(Projection):
    """Restores a fixed docstring: the text between the first two ``\"\"\"`` is replaced.

    Values without two triple quotes are returned unchanged.
    """

    def __init__(self, docstring: str) -> None:
        self.docstring = docstring

    def project(self, x: Any) -> Any:
        """``x`` with its first triple-quoted block set to the stored docstring."""
        if not isinstance(x, str):
            return x
        start = x.find(_TRIPLE_QUOTE)
        if start < 0:
            return x
        body = start + len(_TRIPLE_QUOTE)
        end = x.find(_TRIPLE_QUOTE, body)
        if end < 0:
            return x
        return x[:body] + self.docstring + x[end:]
