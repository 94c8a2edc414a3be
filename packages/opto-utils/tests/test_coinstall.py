"""trace-opt installed beside opto is detected at import and reported with the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import opto.utils
import pytest
from opto.utils.coinstall import (
    TraceOptConflictWarning,
    find_trace_opt,
    warn_if_trace_opt_installed,
)


def test_find_trace_opt_reads_the_dist_info_name(tmp_path):
    assert find_trace_opt(str(tmp_path)) is None
    (tmp_path / "opto_trace-0.1.1.dist-info").mkdir()
    (tmp_path / "trace_optimizer-1.0.dist-info").mkdir()  # another project
    assert find_trace_opt(str(tmp_path)) is None
    (tmp_path / "trace_opt-0.1.3.8.dist-info").mkdir()
    assert find_trace_opt(str(tmp_path)) == "0.1.3.8"
    assert find_trace_opt(str(tmp_path / "missing")) is None


def test_old_egg_info_installs_are_found_too(tmp_path):
    (tmp_path / "trace_opt-0.1.3-py3.11.egg-info").mkdir()
    assert find_trace_opt(str(tmp_path)) == "0.1.3"


def test_warning_names_the_problem_and_the_fix(tmp_path):
    (tmp_path / "trace_opt-0.1.3.8.dist-info").mkdir()
    with pytest.warns(TraceOptConflictWarning) as caught:
        assert warn_if_trace_opt_installed(str(tmp_path)) == "0.1.3.8"
    message = str(caught[0].message)
    assert "trace-opt 0.1.3.8" in message and "deletes opto's modules" in message
    assert "pip uninstall trace-opt" in message and "--force-reinstall" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_trace_opt_installed(str(tmp_path / "clean")) is None


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="symlinks")
def test_import_warns_when_opto_sits_next_to_a_trace_opt_install(tmp_path):
    """A site directory holding opto.utils and a trace_opt dist-info, as pip leaves it."""
    site = tmp_path / "site"
    (site / "opto").mkdir(parents=True)
    os.symlink(Path(opto.utils.__file__).parent, site / "opto" / "utils")
    (site / "trace_opt-0.1.3.8.dist-info").mkdir()
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    import opto.utils, opto.utils.llm\n"
        "print(sum('trace-opt 0.1.3.8' in str(w.message) for w in caught))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"  # once per process
    clean = subprocess.run([sys.executable, "-W", "error", "-c", "import opto.utils"],
                           capture_output=True, text=True)  # fmt: skip
    assert clean.returncode == 0, clean.stderr
