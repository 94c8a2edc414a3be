"""Plain-text rendering of the judged rows (fixed-width columns, errors listed below)."""

from __future__ import annotations

from metrics import Row

HEADERS = ("workload", "ours", "trace-opt", "ratio", "target", "result")


def format_value(value: float | None, unit: str) -> str:
    """A human-readable value in the row's unit ('error' when it was not measured)."""
    if value is None:
        return "error"
    if unit == "s":
        return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "us":
        return f"{value:.2f} us"
    if unit == "x":
        return f"{value:.1f}x"
    if unit == "B":
        for scale, suffix in ((1 << 20, "MB"), (1 << 10, "KB")):
            if abs(value) >= scale:
                return f"{value / scale:.1f} {suffix}"
        return f"{value:.0f} B"
    return f"{value:.0f}"


def _ratio(row: Row) -> str:
    """trace-opt / ours ('-' when undefined: no reference, or ours is zero)."""
    if row.ratio is None:
        return "-"
    return ">1000x" if row.ratio > 1000 else f"{row.ratio:.1f}x"


def render(rows: list[Row], reference_ran: bool) -> str:
    """The table as text; errors (which would not fit a cell) follow it in full."""
    cells = [
        (
            row.label,
            format_value(row.ours, row.unit),
            format_value(row.reference, row.unit) if reference_ran else "not run",
            _ratio(row),
            row.target,
            row.verdict,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [HEADERS, *cells]) for i in range(len(HEADERS))]

    def line(values: tuple[str, ...]) -> str:
        first, *rest = values
        parts = [first.ljust(widths[0])]
        parts += [v.rjust(w) for v, w in zip(rest, widths[1:])]
        return "  ".join(parts).rstrip()

    out = [line(HEADERS), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in cells]
    by_workload = {row.workload: row.error for row in rows if row.error}
    errors = [f"  {workload}: {error}" for workload, error in by_workload.items()]
    if errors:
        out += ["", "errors:", *errors]
    return "\n".join(out)
