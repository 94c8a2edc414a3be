"""`opto-runs`: inspect the optimization runs kept in an opto run storage.

    opto-runs list                       # the runs: status, steps, best score, usage
    opto-runs latest [--feedback]        # the newest run, shown as `show` does
    opto-runs show RUN [--feedback]      # each step: scores, parameter changes, usage
    opto-runs best RUN [--key test]      # the best step's parameters
    opto-runs export RUN -o run.json     # the whole run as JSON

The storage is `--storage URL` (before or after the command), else `OPTO_STORAGE_URL`,
else `opto-runs.db` in the working directory; a plain file path means a SQLite file.
Trainers write to that same default unless given `storage=`, so runs are found without
naming it. RUN is a run's name or numeric id, or `latest` for the newest run. `list`,
`latest`, `show` and `best` take `--json` for scripts.

Exit codes: 0 success; 1 the storage could not be read; 2 bad arguments, a bad storage URL
or a missing database file; 3 no such run (or, for `best`, no step with that score).

The storage is opened read-only and never created: a read-only database file can be
inspected, and a database without opto's tables is reported, not changed. Stored text is
shown with control characters escaped (`\x1b`, `\u202e`...), so run names, prompts and
feedback cannot drive the terminal. JSON output (`--json`, `export`) is standard JSON:
NaN and infinite numbers are written as `null`.

Only the standard library is imported up front; the storage (SQLAlchemy) is opened when a
command runs.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from opto.utils.errors import OptoError
from opto.utils.files import atomic_write

if TYPE_CHECKING:
    from opto.utils.storage import RunRecord, StepRecord, Storage

__all__ = [
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_STORAGE",
    "EXIT_USAGE",
    "CLIError",
    "TerminalWriter",
    "inline",
    "main",
    "printable",
]

EXIT_OK = 0
EXIT_STORAGE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

DEFAULT_URL = "sqlite:///opto-runs.db"
#: The RUN argument naming the newest run (unless a run is called that).
LATEST = "latest"
#: Score keys `best` tries, in order, when no `--key` is given.
PREFERRED_KEYS = ("test", "validation", "score", "train")
#: Usage fields shown by `list` and `show` (trainer runs record these per step).
USAGE_FIELDS = (("calls", "calls"), ("total_tokens", "tokens"), ("cost_usd", "USD"))
_SHORT_VALUE = 60
# C0 and C1 control characters and DEL (terminal escapes, carriage returns, bells...) and the
# bidirectional overrides that reorder displayed text; tab and newline are kept in text blocks.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_INLINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Characters json.dumps(ensure_ascii=False) leaves raw: DEL, C1 and bidi overrides.
_CONTROL_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class CLIError(OptoError):
    """A command failed; `code` is the process exit code, the message says what to do."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- terminal safety -------------------------------------------------------------------------


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(match.group())
    return named or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """`text` with control characters escaped (`\\x1b`), keeping newlines and tabs."""
    return _CONTROL.sub(_escape, text)


def inline(text: str) -> str:
    """`text` for one line of output: also newlines and tabs are escaped (`\\n`)."""
    return _CONTROL_INLINE.sub(_escape, text)


class TerminalWriter:
    """A text stream wrapper that escapes control characters in everything written."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(printable(text))

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.stream.flush()


# -- opening the storage ---------------------------------------------------------------------


def storage_url(value: str | None) -> str:
    """The storage URL: `value`, else the default shared with trainers (`OPTO_STORAGE_URL`,
    else `opto-runs.db` in the working directory); a path means SQLite."""
    from opto.utils.storage import default_storage_url, storage_url_of

    return storage_url_of(value) if value else default_storage_url()


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other backends and in-memory URLs)."""
    scheme, _, rest = url.partition("://")
    if scheme.split("+")[0] != "sqlite":
        return None
    database = rest[1:].split("?")[0] if rest.startswith("/") else ""
    return Path(database).expanduser() if database not in ("", ":memory:") else None


def _check_sqlite_file(url: str) -> None:
    """A missing SQLite file is a usage error (the storage itself refuses to create it)."""
    path = _sqlite_file(url)
    if path is None:
        return
    if not path.is_file():
        raise CLIError(
            f"no run storage at {url}: {path} does not exist. Pass the storage your runs were "
            "written to with --storage URL (or set OPTO_STORAGE_URL); trainers write to "
            "the same default ($OPTO_STORAGE_URL, else ./opto-runs.db) unless given storage=...",
            EXIT_USAGE,
        )


def open_existing(url: str) -> Storage:
    """Open the run storage at `url` read-only (never creating anything), translating
    storage errors into `CLIError`s."""
    from opto.utils.storage import StorageError, StorageURLError, open_storage

    try:
        _check_sqlite_file(url)
        return open_storage(url, create=False, read_only=True)
    except StorageURLError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from exc
    except (StorageError, ImportError) as exc:
        raise CLIError(str(exc), EXIT_STORAGE) from exc


def find_run(storage: Storage, ref: str) -> RunRecord:
    """The run named `ref`, else the run whose id is `ref`, else for `latest` the newest run;
    `CLIError` naming the runs."""
    from opto.utils.storage import RunNotFoundError

    try:
        return storage.get_run(ref)
    except RunNotFoundError:
        if ref == LATEST:
            return latest_run(storage)
        if ref.isdigit():
            try:
                return storage.get_run(int(ref))
            except RunNotFoundError:
                pass
    names = [run.name for run in storage.list_runs()]
    known = ", ".join(inline(name) for name in names[-10:]) if names else "none"
    close = difflib.get_close_matches(ref, names, n=1)
    hint = f" Did you mean {inline(repr(close[0]))}?" if close else ""
    raise CLIError(
        f"no run {inline(repr(ref))} in {storage.url}.{hint} Runs there: {known} (`opto-runs list`)",
        EXIT_NOT_FOUND,
    )


def latest_run(storage: Storage) -> RunRecord:
    """The most recently created run (the highest id on ties); `CLIError` when none."""
    runs = storage.list_runs()
    if not runs:
        raise CLIError(
            f"no runs in {storage.url} yet: train with storage=... pointing there, or pass the "
            "storage your runs were written to with --storage URL",
            EXIT_NOT_FOUND,
        )
    return max(runs, key=lambda run: (run.created_at, run.id))


# -- formatting ------------------------------------------------------------------------------


def _plain(value: Any) -> str:
    """One-line text of a scalar: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else _json_text(value)


def readable_lines(value: Any, indent: str = "    ") -> list[str]:
    """`value` (stored feedback: text, or records of examples) as indented readable lines:
    multi-line text keeps its lines, mappings show `key: value`, lists number their items.
    Control characters are escaped."""
    if isinstance(value, str):
        return [f"{indent}{printable(line)}" for line in value.splitlines() or [""]]
    if isinstance(value, Mapping):
        lines = []
        for key, item in value.items():
            nested = isinstance(item, (Mapping, list, tuple)) and bool(item)
            if nested or (isinstance(item, str) and "\n" in item):
                lines.append(f"{indent}{inline(str(key))}:")
                lines.extend(readable_lines(item, indent + "  "))
            else:
                lines.append(f"{indent}{inline(str(key))}: {inline(_plain(item))}")
        return lines or [f"{indent}{{}}"]
    if isinstance(value, (list, tuple)):
        lines = []
        for index, item in enumerate(value, 1):
            lines.append(f"{indent}[{index}]")
            lines.extend(readable_lines(item, indent + "  "))
        return lines or [f"{indent}[]"]
    return [f"{indent}{inline(_plain(value))}"]


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _short(value: Any, width: int = _SHORT_VALUE) -> str:
    text = inline(value if isinstance(value, str) else _json_text(value))
    return text if len(text) <= width else text[: width - 3] + "..."


def _time(moment: Any) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with left-aligned columns."""
    cells = [[inline(str(cell)) for cell in row] for row in [header, *rows]]
    widths = [max(len(cell) for cell in column) for column in zip(*cells)]
    lines = [[cell.ljust(width) for cell, width in zip(row, widths)] for row in cells]
    lines.insert(1, ["-" * width for width in widths])
    return "\n".join("  ".join(line).rstrip() for line in lines)


def usage_totals(steps: Sequence[StepRecord]) -> dict[str, float]:
    """Sum of the numeric usage fields of the steps (trainer steps record per-step usage)."""
    totals: dict[str, float] = {}
    for step in steps:
        if isinstance(step.usage, Mapping):
            for key, value in step.usage.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
    return totals


def format_usage(usage: Any) -> str:
    """`calls=3 tokens=812 USD=0.002` from a usage mapping (other JSON shown as is)."""
    if usage is None:
        return "-"
    if not isinstance(usage, Mapping):
        return _short(usage)
    shown = [f"{label}={_number(usage[key])}" for key, label in USAGE_FIELDS if key in usage]
    if not shown:
        shown = [f"{inline(str(key))}={_number(value)}" for key, value in usage.items()]
    return " ".join(shown) or "-"


def format_scores(scores: Mapping[str, Any]) -> str:
    """`test=0.8 train=0.5` (keys sorted)."""
    return " ".join(f"{inline(key)}={_number(scores[key])}" for key in sorted(scores)) or "-"


def parameter_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> Iterator[str]:
    """Lines describing how the parameters changed between two steps.

    Short values show as `name: old -> new`; multi-line or long text (prompts, code) as a
    unified diff.
    """
    for name in sorted(set(before) | set(after)):
        shown = inline(name)
        if name not in before:
            yield f"+ {shown} = {_short(after[name])}"
            continue
        if name not in after:
            yield f"- {shown} (removed)"
            continue
        old, new = before[name], after[name]
        if old == new:
            continue
        if isinstance(old, str) and isinstance(new, str) and ("\n" in old + new or len(new) > 60):
            diff = difflib.unified_diff(
                old.splitlines(),
                new.splitlines(),
                f"{shown} (before)",
                f"{shown} (after)",
                lineterm="",
            )
            yield f"~ {shown}:"
            yield from (f"    {inline(line)}" for line in diff)
        else:
            yield f"~ {shown}: {_short(old)} -> {_short(new)}"


def pick_key(steps: Sequence[StepRecord], key: str | None) -> str | None:
    """`key`, or the first of `PREFERRED_KEYS` (then any key) some step has a score for."""
    if key is not None:
        return key
    present = {k for step in steps for k, v in step.scores.items() if _is_score(v)}
    for candidate in PREFERRED_KEYS:
        if candidate in present:
            return candidate
    return min(present) if present else None


def _is_score(value: Any) -> bool:
    """A real number that can rank (None and NaN cannot)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _json_text(data: Any, indent: int | None = None) -> str:
    """Standard JSON (non-finite numbers as null) with no raw control characters."""
    from opto.utils.storage import standard_json

    text = json.dumps(standard_json(data), indent=indent, ensure_ascii=False, allow_nan=False)
    return _CONTROL_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _dump(data: Any, out: TextIO) -> None:
    out.write(_json_text(data, indent=2))
    out.write("\n")


# -- commands --------------------------------------------------------------------------------


def cmd_list(storage: Storage, args: argparse.Namespace, out: TextIO) -> int:
    """List the runs: id, name, status, steps, best score, usage, times."""
    runs = storage.list_runs(status=args.status)
    summaries = []
    for run in runs:
        steps = storage.list_steps(run)
        key = pick_key(steps, None)
        best = None if key is None else storage.best_step(run, key)
        summaries.append(
            {
                "id": run.id,
                "name": run.name,
                "status": run.status.value,
                "steps": len(steps),
                "best_key": key,
                "best_score": None if best is None else best.scores.get(key),
                "best_iteration": None if best is None else best.iteration,
                "usage": usage_totals(steps),
                "created_at": run.created_at.isoformat(),
                "updated_at": run.updated_at.isoformat(),
            }
        )
    if args.json:
        _dump(summaries, out)
        return EXIT_OK
    if not runs:
        out.write(f"no runs in {storage.url}\n")
        return EXIT_OK
    rows = [
        [
            str(s["id"]),
            s["name"],
            s["status"],
            str(s["steps"]),
            "-" if s["best_key"] is None else f"{s['best_key']}={_number(s['best_score'])}",
            format_usage(s["usage"]),
            _time(run.updated_at),
        ]
        for s, run in zip(summaries, runs)
    ]
    out.write(f"runs in {storage.url}\n")
    out.write(table(["id", "name", "status", "steps", "best", "usage", "updated (UTC)"], rows))
    out.write("\n")
    return EXIT_OK


def cmd_latest(storage: Storage, args: argparse.Namespace, out: TextIO) -> int:
    """Show the newest run as `show` does."""
    args.run = latest_run(storage).name
    return cmd_show(storage, args, out)


def cmd_show(storage: Storage, args: argparse.Namespace, out: TextIO) -> int:
    """Show a run's record and every step: scores, usage and parameter changes."""
    run = find_run(storage, args.run)
    steps = storage.list_steps(run)
    if args.json:
        _dump({"run": run.to_dict(), "steps": [s.to_dict() for s in steps]}, out)
        return EXIT_OK
    out.write(f"run {inline(repr(run.name))} (id {run.id}) in {inline(storage.url)}\n")
    out.write(f"  status:  {run.status.value}")
    out.write(f"  (created {_time(run.created_at)}, finished {_time(run.finished_at)} UTC)\n")
    if run.seed is not None:
        out.write(f"  seed:    {run.seed}\n")
    if run.config:
        out.write(f"  config:  {_short(run.config, 200)}\n")
    out.write(f"  steps:   {len(steps)}   usage: {format_usage(usage_totals(steps))}\n")
    previous: Mapping[str, Any] | None = None
    for step in steps:
        out.write(
            f"\nstep {step.iteration}: {format_scores(step.scores)}   "
            f"usage: {format_usage(step.usage)}\n"
        )
        if previous is None:
            for name in sorted(step.parameters):
                out.write(f"  {inline(name)} = {_short(step.parameters[name])}\n")
        else:
            changes = list(parameter_changes(previous, step.parameters))
            for line in changes or ["(parameters unchanged)"]:
                out.write(f"  {line}\n")
        if args.feedback and step.feedback is not None:
            out.write("  feedback:\n")
            out.writelines(f"{line}\n" for line in readable_lines(step.feedback))
        previous = step.parameters
    return EXIT_OK


def cmd_best(storage: Storage, args: argparse.Namespace, out: TextIO) -> int:
    """Print the parameters of the run's best step by a score key."""
    run = find_run(storage, args.run)
    steps = storage.list_steps(run)
    key = pick_key(steps, args.key)
    best = None if key is None else storage.best_step(run, key, mode=args.mode)
    if best is None:
        keys = sorted({k for step in steps for k in step.scores})
        raise CLIError(
            f"run {inline(repr(run.name))} has no step with a score "
            + (inline(repr(key)) if key else "at all")
            + (
                f"; its score keys are {inline(', '.join(keys))} (choose one with --key)"
                if keys
                else ""
            ),
            EXIT_NOT_FOUND,
        )
    if args.json:
        _dump(
            {
                "run": run.name,
                "iteration": best.iteration,
                "key": key,
                "score": best.scores[key],
                "scores": best.scores,
                "parameters": best.parameters,
            },
            out,
        )
        return EXIT_OK
    shown_key = inline(key)
    out.write(
        f"best step of {inline(repr(run.name))} by {shown_key} ({args.mode}): step "
        f"{best.iteration}, {shown_key}={_number(best.scores[key])}   "
        f"scores: {format_scores(best.scores)}\n"
    )
    for name in sorted(best.parameters):
        value = best.parameters[name]
        text = value if isinstance(value, str) else _json_text(value)
        if "\n" in text:
            out.write(f"\n{inline(name)}:\n")
            out.writelines(f"    {printable(line)}\n" for line in text.splitlines())
        else:
            out.write(f"\n{inline(name)}: {inline(text)}\n")
    return EXIT_OK


def cmd_export(storage: Storage, args: argparse.Namespace, out: TextIO) -> int:
    """Write the run (record, steps, events, checkpoints) as JSON to a file or stdout."""
    run = find_run(storage, args.run)
    data = storage.export_run(run, checkpoints=args.checkpoints)
    if args.output == "-":
        _dump(data, out)
        return EXIT_OK
    path = Path(args.output)
    if path.parent and not path.parent.is_dir():
        raise CLIError(f"cannot write {path}: directory {path.parent} does not exist", EXIT_USAGE)
    text = io.StringIO()
    _dump(data, text)
    atomic_write(path, text.getvalue())
    out.write(f"exported run {inline(repr(run.name))} ({len(data['steps'])} steps) to {path}\n")
    return EXIT_OK


# -- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The `opto-runs` argument parser."""
    storage = argparse.ArgumentParser(add_help=False)
    storage.add_argument(
        "--storage",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="run storage URL or SQLite file (default: $OPTO_STORAGE_URL, else ./opto-runs.db)",
    )
    parser = argparse.ArgumentParser(
        prog="opto-runs",
        description="Inspect optimization runs kept in an opto run storage.",
        parents=[storage],
        epilog="Exit codes: 0 ok, 1 storage unreadable, 2 usage/URL/missing file, 3 not found.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", parents=[storage], help="list the runs")
    listing.add_argument(
        "--status", choices=["running", "completed", "failed", "interrupted"], help="only these"
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_list)

    latest = commands.add_parser("latest", parents=[storage], help="show the newest run")
    latest.add_argument("--feedback", action="store_true", help="also print each step's feedback")
    latest.add_argument("--json", action="store_true", help="print JSON")
    latest.set_defaults(handler=cmd_latest)

    show = commands.add_parser("show", parents=[storage], help="show a run's steps")
    show.add_argument("run", metavar="RUN", help="run name or id ('latest': the newest)")
    show.add_argument("--feedback", action="store_true", help="also print each step's feedback")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)

    best = commands.add_parser("best", parents=[storage], help="print a run's best parameters")
    best.add_argument("run", metavar="RUN", help="run name or id")
    best.add_argument(
        "--key",
        help=f"score to rank by (default: the first present of {', '.join(PREFERRED_KEYS)})",
    )
    best.add_argument("--mode", choices=["max", "min"], default="max", help="higher or lower")
    best.add_argument("--json", action="store_true", help="print JSON")
    best.set_defaults(handler=cmd_best)

    export = commands.add_parser("export", parents=[storage], help="export a run to JSON")
    export.add_argument("run", metavar="RUN", help="run name or id")
    export.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="JSON file to write ('-': stdout)"
    )
    export.add_argument(
        "--checkpoints",
        choices=["latest", "all", "none"],
        default="latest",
        help="which checkpoints to include (default: latest)",
    )
    export.set_defaults(handler=cmd_export)
    return parser


def _run_command(storage: Storage, args: argparse.Namespace) -> int:
    """Run the chosen command; storage failures become `CLIError`s."""
    from opto.utils.storage import StorageError

    try:
        return int(args.handler(storage, args, TerminalWriter(sys.stdout)))
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_STORAGE) from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run `opto-runs` with `argv` (default: the command line); returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        with open_existing(storage_url(getattr(args, "storage", None))) as storage:
            return _run_command(storage, args)
    except CLIError as exc:
        sys.stderr.write(f"opto-runs: error: {printable(str(exc))}\n")
        return exc.code
    except BrokenPipeError:  # e.g. `opto-runs show RUN | head`
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
