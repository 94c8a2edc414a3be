"""Detect trace-opt installed beside opto, which breaks both.

trace-opt (the PyPI distribution of Trace) and the opto distributions all put files under
`opto/` in site-packages. Installing one over the other overwrites files, and uninstalling
trace-opt afterwards deletes opto's modules. The check is one directory listing of the
site-packages directory that holds opto (no package metadata is read), run once per
process by `import opto.utils` (which `import opto.trace` performs).
"""

from __future__ import annotations

import os
import warnings

__all__ = ["TraceOptConflictWarning", "find_trace_opt", "warn_if_trace_opt_installed"]

_PREFIX = "trace_opt-"
_SUFFIXES = (".dist-info", ".egg-info")

FIX = (
    "Fix: `pip uninstall trace-opt`, then reinstall opto so that its files are complete: "
    "`pip install --force-reinstall opto-utils opto-trace opto-optimizers opto-trainers` "
    "(only the ones you use). Code written for trace-opt runs on opto: see the migration "
    "section of docs/guide.md."
)


class TraceOptConflictWarning(UserWarning):
    """trace-opt is installed in the same site-packages directory as opto."""


def find_trace_opt(site_dir: str) -> str | None:
    """The version of a trace-opt installed in `site_dir` ("unknown" if unreadable), else None."""
    try:
        entries = os.scandir(site_dir)
    except OSError:
        return None
    with entries:
        for entry in entries:
            name = entry.name.lower()
            if name.startswith(_PREFIX) and name.endswith(_SUFFIXES):
                version = entry.name[len(_PREFIX) :].rsplit(".", 1)[0].split("-py", 1)[0]
                return version or "unknown"
    return None


def _site_dir() -> str:
    # This file is <site>/opto/utils/coinstall.py; keep symlinked paths as they are.
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_checked = False


def warn_if_trace_opt_installed(site_dir: str | None = None) -> str | None:
    """Warn (`TraceOptConflictWarning`) if trace-opt shares opto's site-packages directory.

    Returns the trace-opt version found, else None. Without `site_dir` it checks the
    directory opto is installed in, once per process.
    """
    global _checked
    if site_dir is None:
        if _checked:
            return None
        _checked = True
        site_dir = _site_dir()
    version = find_trace_opt(site_dir)
    if version is not None:
        warnings.warn(
            f"trace-opt {version} is installed in {site_dir} next to opto. Both install files "
            "under opto/: installing one over the other overwrites files, and uninstalling "
            f"trace-opt deletes opto's modules. {FIX}",
            TraceOptConflictWarning,
            stacklevel=2,
        )
    return version
