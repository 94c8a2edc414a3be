"""Run the benchmark workloads against opto.trace and trace-opt and print the comparison.

Each workload runs in its own fresh interpreter (``workloads.py``), first with this
interpreter (our opto.trace), then with ``--reference-python`` (trace-opt), so import costs,
caches and leaks of one workload never affect another. Prints a table (workload, ours,
trace-opt, ratio, target, result) and writes ``results.json`` next to this file.

    python benchmarks/run.py --reference-python /path/to/trace-opt-venv/bin/python
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
from metrics import judge_rows
from table import render
from workloads import WORKLOADS

HERE = Path(__file__).resolve().parent
WORKLOAD_SCRIPT = HERE / "workloads.py"
STDERR_LINES = 20  # kept in results.json when a workload fails, for diagnosis


def _environment(pycache: str) -> dict[str, str]:
    """The caller's environment for a workload, made comparable across both sides.

    PYTHONPATH is dropped so each interpreter sees only its own venv. Bytecode caching is
    switched on (some shells set PYTHONDONTWRITEBYTECODE), as after a normal install, so
    imports are not measured while compiling sources; the caches go to a private prefix that
    keeps the source tree and the venvs clean.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def run_workload(python: str, name: str, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """Run one workload in a fresh `python`; its result, or {"error": ...} if it failed."""
    with tempfile.TemporaryDirectory(prefix="opto-bench-") as tmp:
        out = Path(tmp) / "result.json"
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [python, str(WORKLOAD_SCRIPT), name, str(out)],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        except OSError as exc:
            return {"error": f"cannot start {python}: {exc}"}
        elapsed = time.perf_counter() - start
        stderr = done.stderr.strip().splitlines()
        if out.exists():
            result: dict[str, Any] = json.loads(out.read_text())
        else:
            result = {"error": (stderr or [f"exit status {done.returncode}"])[-1]}
        if "error" in result:
            result["stderr_tail"] = stderr[-STDERR_LINES:]
    result["wall_s"] = elapsed
    return result


def run_side(
    label: str, python: str, names: list[str], timeout: float, env: dict[str, str]
) -> dict[str, Any]:
    """Every selected workload on one interpreter, reporting progress on stderr."""
    results: dict[str, Any] = {}
    for name in names:
        print(f"[{label}] {name} ...", end="", file=sys.stderr, flush=True)
        results[name] = run_workload(python, name, timeout, env)
        status = "error" if "error" in results[name] else "ok"
        print(
            f" {status} ({results[name]['wall_s']:.1f} s)"
            if "wall_s" in results[name]
            else f" {status}",
            file=sys.stderr,
            flush=True,
        )
    return results


def _library(results: dict[str, Any]) -> dict[str, Any] | None:
    """The library a side actually imported (from its first successful workload)."""
    return next((r["library"] for r in results.values() if "library" in r), None)


def _describe(library: dict[str, Any] | None) -> str:
    """One line naming a side's distribution, version, Python and location."""
    if library is None:
        return "unknown (no workload succeeded)"
    return (
        f"{library['distribution']} {library['version']} on Python {library['python']} "
        f"({library['file']})"
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference-python",
        help="interpreter with trace-opt installed; without it only our side runs",
    )
    parser.add_argument(
        "--ours-python",
        default=sys.executable,
        help="interpreter with our opto.trace (default: this one)",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=list(WORKLOADS),
        default=list(WORKLOADS),
        help="run only these workloads",
    )
    parser.add_argument(
        "--output", type=Path, default=HERE / "results.json", help="where to write the JSON results"
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds allowed per workload and side"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when a target is missed or a workload fails",
    )
    args = parser.parse_args(argv)
    # Workloads run in a temporary folder: make interpreter paths absolute (not resolved,
    # since a venv's python is a symlink that must stay inside its venv).
    args.ours_python = os.path.abspath(args.ours_python)
    if args.reference_python:
        args.reference_python = os.path.abspath(args.reference_python)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run both sides, print the table, write the JSON; the exit status follows --strict."""
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="opto-bench-pycache-") as pycache:
        env = _environment(pycache)
        ours = run_side("ours", args.ours_python, args.workloads, args.timeout, env)
        reference = None
        if args.reference_python:
            reference = run_side(
                "trace-opt", args.reference_python, args.workloads, args.timeout, env
            )
    rows = judge_rows(ours, reference)

    ours_lib, ref_lib = _library(ours), _library(reference or {})
    print(f"ours:      {_describe(ours_lib)}")
    print(f"trace-opt: {_describe(ref_lib) if reference is not None else 'not run'}")
    if ours_lib and ours_lib.get("distribution") != "opto-trace":
        print("WARNING: our side did not import the opto-trace distribution")
    print(f"{platform.platform()}, {os.cpu_count()} CPUs\n")
    print(render(rows, reference_ran=reference is not None))

    args.output.write_text(
        json.dumps(
            {
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"
                ),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "ours": {"python": args.ours_python, "library": ours_lib, "results": ours},
                "reference": None
                if reference is None
                else {"python": args.reference_python, "library": ref_lib, "results": reference},
                "rows": [attrs.asdict(row) for row in rows],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {args.output}")
    missed = [r for r in rows if r.verdict in ("FAIL", "error")]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
