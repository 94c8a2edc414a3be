"""Lazy exports for a package ``__init__``: names are imported on first attribute access.

A package lists where each public name lives and lets `lazy_exports` build its module-level
``__getattr__`` and ``__dir__``; type checkers and IDEs still see every name through the
usual ``if TYPE_CHECKING:`` import block::

    from typing import TYPE_CHECKING
    from opto.utils.lazy import lazy_exports

    if TYPE_CHECKING:
        from mypkg.heavy import Heavy

    _EXPORTS = {"Heavy": "mypkg.heavy"}
    __all__ = ["Heavy"]
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

The top-level opto packages (``opto.utils``, ``opto.trace``, ``opto.optimizers``,
``opto.trainers``) call `init_package` instead, which also silences their logger.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["init_package", "lazy_exports"]

Target = str | tuple[str, str | None]
"""Where a name lives: ``"module"`` (the attribute of the same name), ``("module", "attr")``,
or ``("module", None)`` for the module itself. Relative module names (``".sub"``) are
resolved against the package."""


def lazy_exports(
    package: str, exports: Mapping[str, Target]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the module `package` exporting `exports` lazily.

    The first access of a name imports its module and caches the value in the package's
    namespace, so later accesses cost nothing. `exports` is read on every miss (not copied).
    A name whose module is absent from the installation raises `AttributeError` naming the
    module; any other import error propagates unchanged. ``__dir__`` lists the package's
    globals and every exported name.
    """

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, attr = (target, name) if isinstance(target, str) else target
        try:
            module = importlib.import_module(module_name, package)
        except ModuleNotFoundError as error:
            absolute = importlib.util.resolve_name(module_name, package)
            if error.name != absolute:
                raise
            raise AttributeError(
                f"{package}.{name} is not available: module {absolute!r} is missing from "
                "this installation"
            ) from error
        value = module if attr is None else getattr(module, attr)
        sys.modules[package].__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*sys.modules[package].__dict__, *exports})

    return __getattr__, __dir__


def init_package(
    package: str, exports: Mapping[str, Target]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Set up a top-level opto package; return its lazy ``(__getattr__, __dir__)``.

    Besides `lazy_exports`, it gives the package's logger a `logging.NullHandler`: a library
    never prints, and without a handler its warnings (a retried LLM call, a budget stop)
    would reach stderr through Python's last-resort handler when the application configured
    no logging. Records still propagate to whatever handlers the application sets up.
    """
    logging.getLogger(package).addHandler(logging.NullHandler())
    return lazy_exports(package, exports)
