"""The root of every opto exception, and the error for a missing optional dependency.

Every exception raised on purpose by an opto package derives from `OptoError`, so an
application can catch all of them with one `except OptoError`. Each one keeps its natural
built-in base as well (`ValueError`, `ImportError`, ...), so existing `except` clauses work.
"""

from __future__ import annotations

__all__ = ["MissingExtraError", "OptoError"]


class OptoError(Exception):
    """Base class of every exception raised by opto-utils, opto-trace, opto-optimizers and
    opto-trainers."""


class MissingExtraError(OptoError, ImportError):
    """An optional dependency is not installed; the message says which extra installs it.

    `extra` is the extra's name (e.g. ``"litellm"``), `package` the distribution that declares
    it (e.g. ``"opto-utils"``) and `module` the module that could not be imported (each None
    when not known). Packages subclass it for their own families (e.g. the storage's
    `MissingDependencyError`), so ``except MissingExtraError`` catches every such case.
    """

    def __init__(
        self,
        message: str,
        *,
        module: str | None = None,
        extra: str | None = None,
        package: str | None = None,
    ) -> None:
        super().__init__(message, name=module)
        self.module = module
        self.extra = extra
        self.package = package
