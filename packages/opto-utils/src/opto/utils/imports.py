"""Import an optional dependency, or explain which extra installs it.

``require("litellm", "litellm")`` returns the module; when it is not installed it raises
`MissingExtraError` whose message names both ways to get it::

    pip install 'opto-utils[litellm]'                      # an installed opto
    uv sync --all-packages --extra litellm                 # a checkout of the workspace
"""

from __future__ import annotations

import importlib
from types import ModuleType

from opto.utils.errors import MissingExtraError

__all__ = ["install_hint", "require"]


def _distribution(package: str) -> str:
    return package if package.startswith("opto-") else f"opto-{package}"


def install_hint(extra: str, package: str = "utils") -> str:
    """How to install `extra` of the opto distribution `package` (``"utils"`` or
    ``"opto-utils"``): the pip command, and the uv command for a workspace checkout."""
    return (
        f"pip install '{_distribution(package)}[{extra}]' "
        f"(in a checkout of the opto workspace: uv sync --all-packages --extra {extra})"
    )


def require(
    module: str,
    extra: str,
    *,
    package: str = "utils",
    purpose: str | None = None,
    error: type[MissingExtraError] = MissingExtraError,
) -> ModuleType:
    """Import and return `module`, an optional dependency installed by `extra` of `package`.

    Raises `MissingExtraError` (an `ImportError` and an `OptoError`) naming what needs the
    module (`purpose`, e.g. ``"LiteLLM"``) and both install commands, with the original
    `ImportError` as ``__cause__``. `error` picks a subclass of `MissingExtraError` to raise
    (a package's own error family, e.g. the storage's `MissingDependencyError`).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        head = (
            f"{purpose} needs {module!r}, which" if purpose else f"the optional package {module!r}"
        )
        message = f"{head} is not installed; install it with: {install_hint(extra, package)}"
        raise error(message, module=module, extra=extra, package=_distribution(package)) from exc
