"""Loggers: where a trainer reports metrics and parameters.

Protocol (the reference's): `log(name, data, step, **kwargs)`. Trainers also call
`start(total=..., description=...)` when a run begins, `advance(step)` after each step,
`log_table(step, metrics)` after each evaluation, and `close()` at the end; the base class
gives sensible defaults. Provided: `ConsoleLogger` (logging records, plus a rich progress
bar and per-evaluation table when verbose), `JSONLLogger`, `TensorboardLogger`
(`opto-trainers[tensorboard]`), `MLflowLogger` (`opto-trainers[mlflow]`) and
`MultiLogger`. `DefaultLogger` is `ConsoleLogger`.
"""

from __future__ import annotations

import json
import logging
import numbers
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opto.utils.errors import MissingExtraError
from opto.utils.imports import require
from opto.utils.jsonable import jsonable

__all__ = [
    "BaseLogger",
    "ConsoleLogger",
    "DefaultLogger",
    "JSONLLogger",
    "MLflowLogger",
    "MissingExtraError",
    "MultiLogger",
    "TensorboardLogger",
]


def _is_number(data: Any) -> bool:
    return isinstance(data, numbers.Real) and not isinstance(data, bool)


class BaseLogger:
    """Base of the loggers: implement `log`; the other hooks have working defaults."""

    verbose: bool = True

    def log(self, name: str, data: Any, step: int, **kwargs: Any) -> None:
        """Record `data` under `name` at `step` (kwargs such as `color` are hints)."""
        raise NotImplementedError(f"{type(self).__name__} must implement log(name, data, step)")

    def log_table(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record several metrics of one evaluation (default: one `log` each)."""
        for name, value in metrics.items():
            self.log(name, value, step)

    def start(self, *, total: int | None = None, description: str = "training") -> None:
        """A run begins; `total` is the expected number of steps when known."""
        return

    def advance(self, step: int) -> None:
        """Step `step` completed."""
        return

    def close(self) -> None:
        """The run ended: flush and release resources."""
        return


class ConsoleLogger(BaseLogger):
    """Metrics as `logging` records; with `verbose`, a rich progress bar and tables on stderr.

    Records go to the `opto.trainers` logger at INFO as `[Step s] name: data` (shown only
    if the application configures logging). With `verbose=False` nothing is printed. The
    trainer sets `verbose` from `train(verbose=...)`; `progress`/`table` switch the two
    displays off individually.
    """

    def __init__(self, verbose: bool = True, *, progress: bool = True, table: bool = True) -> None:
        self.verbose = verbose
        self.progress = progress
        self.table = table
        self._log = logging.getLogger("opto.trainers")
        self._bar: Any = None
        self._task: Any = None
        self._lock = threading.Lock()

    def log(self, name: str, data: Any, step: int, **kwargs: Any) -> None:
        self._log.info("[Step %d] %s: %s", step, name, data)

    def log_table(self, step: int, metrics: Mapping[str, Any]) -> None:
        for name, value in metrics.items():
            self.log(name, value, step)
        if not (self.verbose and self.table):
            return
        from rich.table import Table

        table = Table(title=f"Evaluation at step {step}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in metrics.items():
            shown = f"{value:.4f}" if _is_number(value) else str(value)
            table.add_row(name, shown)
        self._console().print(table)

    def _console(self) -> Any:
        if self._bar is not None:
            return self._bar.console
        from rich.console import Console

        return Console(stderr=True)

    def start(self, *, total: int | None = None, description: str = "training") -> None:
        if not (self.verbose and self.progress):
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with self._lock:
            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total)

    def advance(self, step: int) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(self._task, completed=step)

    def close(self) -> None:
        with self._lock:
            bar, self._bar = self._bar, None
        if bar is not None:
            bar.stop()


#: The reference's default logger name.
DefaultLogger = ConsoleLogger


class JSONLLogger(BaseLogger):
    """Appends one JSON object per record to `path`: `{"time", "step", "name", "data"}`.

    Lines are standard JSON, by the rule of run exports (`opto.utils.jsonable.jsonable` with
    ``nonfinite="null"``): NaN and infinite numbers are written as `null`, values that are not
    JSON-able as their `repr`. Each line is flushed, so a killed run keeps everything logged
    so far.
    """

    def __init__(self, path: str | Path = "logs/train.jsonl") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: Any = None
        self._lock = threading.Lock()

    def log(self, name: str, data: Any, step: int, **kwargs: Any) -> None:
        line = json.dumps(
            {
                "time": time.time(),
                "step": step,
                "name": name,
                "data": jsonable(data, nonfinite="null"),
            }
        )
        with self._lock:
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            file, self._file = self._file, None
        if file is not None:
            file.close()


class TensorboardLogger(BaseLogger):
    """TensorBoard event files in `log_dir` through tensorboardX (`opto-trainers[tensorboard]`).

    Numbers become scalars (tensorboardX replaces spaces and other characters TensorBoard
    does not accept in scalar tags by `_`: "Average test score" is `Average_test_score`);
    anything else becomes text under `<name>/text_summary`. Events are flushed every
    `flush_secs` seconds and on `close()`.
    """

    def __init__(self, log_dir: str | Path = "./logs", *, flush_secs: int = 10) -> None:
        tensorboardx = require(
            "tensorboardX", "tensorboard", package="trainers", purpose="TensorboardLogger"
        )
        self.log_dir = str(log_dir)
        self._writer = tensorboardx.SummaryWriter(logdir=self.log_dir, flush_secs=flush_secs)

    def log(self, name: str, data: Any, step: int, **kwargs: Any) -> None:
        if _is_number(data):
            self._writer.add_scalar(name, float(data), global_step=step)
        else:
            self._writer.add_text(name, str(data), global_step=step)

    def close(self) -> None:
        self._writer.close()


_MLFLOW_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


class MLflowLogger(BaseLogger):
    """Logs to MLflow (`opto-trainers[mlflow]`): numbers as metrics, others as text artifacts.

    Uses the active run, or starts one (named `run_name`, in `experiment` if given) that
    `close()` ends. Metric keys keep letters, digits and `_-. /` (others become `_`); a
    text is the artifact `<key>/step_<step>.txt`. `tracking_uri` is MLflow's (a server
    `http://...`, `sqlite:///runs.db`, ...); without it MLflow's default applies, which
    since MLflow 3 is `sqlite:///mlflow.db` in the working directory (the extra installs
    what that store needs). MLflow 3 refuses local `file:` stores unless the environment
    sets `MLFLOW_ALLOW_FILE_STORE=true`.
    """

    def __init__(
        self,
        experiment: str | None = None,
        run_name: str | None = None,
        tracking_uri: str | None = None,
    ) -> None:
        self._mlflow = require("mlflow", "mlflow", package="trainers", purpose="MLflowLogger")
        if tracking_uri is not None:
            self._mlflow.set_tracking_uri(tracking_uri)
        if experiment is not None:
            self._mlflow.set_experiment(experiment)
        self._owned = self._mlflow.active_run() is None
        if self._owned:
            self._mlflow.start_run(run_name=run_name)

    def log(self, name: str, data: Any, step: int, **kwargs: Any) -> None:
        key = _MLFLOW_KEY.sub("_", name)
        if _is_number(data):
            self._mlflow.log_metric(key, float(data), step=step)
        else:
            self._mlflow.log_text(str(data), f"{key.replace(' ', '_')}/step_{step}.txt")

    def close(self) -> None:
        if self._owned and self._mlflow.active_run() is not None:
            self._mlflow.end_run()


class MultiLogger(BaseLogger):
    """Sends every record and hook to each of `loggers`."""

    def __init__(self, loggers: Sequence[BaseLogger]) -> None:
        self.loggers = list(loggers)

    @property  # type: ignore[override]
    def verbose(self) -> bool:
        return any(getattr(lg, "verbose", False) for lg in self.loggers)

    @verbose.setter
    def verbose(self, value: bool) -> None:
        for lg in self.loggers:
            if hasattr(lg, "verbose"):
                lg.verbose = value

    def log(self, name: str, data: Any, step: int, **kwargs: Any) -> None:
        for lg in self.loggers:
            lg.log(name, data, step, **kwargs)

    def log_table(self, step: int, metrics: Mapping[str, Any]) -> None:
        for lg in self.loggers:
            lg.log_table(step, metrics)

    def start(self, *, total: int | None = None, description: str = "training") -> None:
        for lg in self.loggers:
            lg.start(total=total, description=description)

    def advance(self, step: int) -> None:
        for lg in self.loggers:
            lg.advance(step)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
