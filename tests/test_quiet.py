"""Library code never prints: warnings stay in logging even when the app configured none."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_library_warnings_do_not_reach_stderr_without_logging_config():
    script = textwrap.dedent(
        """
        import logging
        import opto.utils, opto.trace, opto.optimizers, opto.trainers
        for name in ("opto.utils.llm", "opto.trace.bundle", "opto.optimizers.optimizer",
                     "opto.trainers.algorithms"):
            logging.getLogger(name).warning("should stay inside logging")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
