"""The table's rows: which measured value each row shows and the target it must meet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

Judge = Callable[[float, float | None], bool | None]


def faster_by(factor: float) -> Judge:
    """Ours must be at least `factor` times smaller (faster/cheaper) than trace-opt's."""

    def judge(ours: float, reference: float | None) -> bool | None:
        if reference is None:
            return None
        return ours > 0 and reference / ours >= factor

    return judge


def at_most(limit: float) -> Judge:
    """Ours must not exceed `limit` (an absolute bound; trace-opt's value is irrelevant)."""

    def judge(ours: float, reference: float | None) -> bool | None:
        return ours <= limit

    return judge


@attrs.frozen(kw_only=True)
class Metric:
    """One row: the value `key` of `workload`, shown in `unit`, judged by `judge`."""

    label: str
    workload: str
    key: str
    unit: str  # "s", "us", "B", "x" or "count"
    target: str = "-"
    judge: Judge | None = None


METRICS: tuple[Metric, ...] = (
    Metric(
        label="import opto.trace (fresh interpreter, best of 5)",
        workload="import",
        key="import_s",
        unit="s",
        target="ours >= 5x faster",
        judge=faster_by(5),
    ),
    Metric(
        label="traced x = x + 1, per op (20k chain)",
        workload="chain",
        key="op_us",
        unit="us",
        target="ours >= 10x cheaper",
        judge=faster_by(10),
    ),
    Metric(label="traced + vs plain Python int +", workload="chain", key="vs_plain", unit="x"),
    Metric(
        label="@bundle() call, per call",
        workload="bundle",
        key="call_us",
        unit="us",
        target="ours >= 10x cheaper",
        judge=faster_by(10),
    ),
    Metric(
        label="backward, 1,000-node chain", workload="backward", key="backward_1000_s", unit="s"
    ),
    Metric(
        label="backward, 4,000-node chain",
        workload="backward",
        key="backward_4000_s",
        unit="s",
        target="ours >= 10x faster",
        judge=faster_by(10),
    ),
    Metric(
        label="backward growth 4k/1k",
        workload="backward",
        key="growth",
        unit="x",
        target="ours <= 4.5x",
        judge=at_most(4.5),
    ),
    Metric(
        label="backward, fan-in of 1,000 parameters", workload="fan_in", key="backward_s", unit="s"
    ),
    Metric(
        label="bytes per traced op (live 5k chain)",
        workload="bytes_per_op",
        key="bytes_per_op",
        unit="B",
        target="ours <= 600 B",
        judge=at_most(600),
    ),
    Metric(
        label="bytes kept after 20 dropped graphs",
        workload="memory_kept",
        key="kept_bytes",
        unit="B",
        target="ours < 50 KB",
        judge=at_most(50 * 1024),
    ),
    Metric(
        label="nodes kept after 20 dropped graphs",
        workload="memory_kept",
        key="nodes_kept",
        unit="count",
        target="ours = 0",
        judge=at_most(0),
    ),
    Metric(
        label="bytes kept by a parameter after 20k calls, no backward",
        workload="calls_kept",
        key="kept_bytes",
        unit="B",
        target="ours < 1 MB",
        judge=at_most(1024 * 1024),
    ),
    Metric(
        label="nodes kept by a parameter after 20k calls, no backward",
        workload="calls_kept",
        key="nodes_kept",
        unit="count",
        target="ours = 0",
        judge=at_most(0),
    ),
)


@attrs.frozen(kw_only=True)
class Row:
    """A judged row of the table; `verdict` is pass, FAIL, n/a (no reference) or error."""

    label: str
    workload: str
    unit: str
    ours: float | None
    reference: float | None
    ratio: float | None  # trace-opt / ours: how many times ours is smaller
    target: str
    verdict: str
    error: str | None = None


def _value(result: dict[str, Any] | None, key: str) -> tuple[float | None, str | None]:
    """The measured value, or the workload's error message."""
    if result is None:
        return None, None
    if "error" in result:
        return None, str(result["error"])
    return float(result[key]), None


def judge_rows(
    ours: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]] | None
) -> list[Row]:
    """One row per metric whose workload ran on our side, judged against its target."""
    rows: list[Row] = []
    for metric in METRICS:
        if metric.workload not in ours:
            continue
        mine, my_error = _value(ours[metric.workload], metric.key)
        theirs, their_error = _value((reference or {}).get(metric.workload), metric.key)
        ratio = theirs / mine if mine and theirs is not None and mine > 0 else None
        if mine is None:
            verdict = "error"
        elif metric.judge is None:
            verdict = "-"
        else:
            outcome = metric.judge(mine, theirs)
            verdict = "n/a" if outcome is None else ("pass" if outcome else "FAIL")
        errors = [
            f"ours: {my_error}" if my_error else "",
            f"trace-opt: {their_error}" if their_error else "",
        ]
        rows.append(
            Row(
                label=metric.label,
                workload=metric.workload,
                unit=metric.unit,
                ours=mine,
                reference=theirs,
                ratio=ratio,
                target=metric.target,
                verdict=verdict,
                error="; ".join(e for e in errors if e) or None,
            )
        )
    return rows
