"""Checkpoints and step records of a training run, kept in opto.utils run storage.

`RunStore` ties one trainer run to a storage run (SQLite by default, PostgreSQL by URL):
each completed step is appended (parameters, scores, feedback, usage), checkpoints are the
trainer's JSON-able `state_dict()` written atomically (one transaction), and resuming
loads the latest checkpoint. Nothing is pickled.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from opto.trace.loading import LoadedValueError, check_loaded_state
from opto.utils.errors import OptoError
from opto.utils.storage import (
    RunExistsError,
    RunNotFoundError,
    RunRecord,
    RunStatus,
    default_storage_url,
    open_storage,
)

__all__ = ["CHECKPOINT_VERSION", "CheckpointError", "RunStore", "default_storage_url"]

#: Version of the trainer checkpoint layout (stored in every checkpoint).
CHECKPOINT_VERSION = 1


class CheckpointError(OptoError, RuntimeError):
    """A checkpoint cannot be used to resume (wrong algorithm, version or run)."""


class RunStore:
    """One trainer run in a storage: steps, checkpoints, events and status.

    Args:
        storage: a storage URL or an open `opto.utils.storage.Storage`.
        run_name: the run's name; with `resume` and no name, the latest run whose name
            starts with `prefix` is continued (a new one is created if there is none).
        prefix: generated names are `<prefix>-<UTC time>`.
        resume: continue an existing run; a `run_name` that does not exist is a
            `RunNotFoundError`.
        config: JSON-able configuration stored with a new run.
        seed: the trainer's seed, stored with a new run.
        keep_last: how many checkpoints to keep.
    """

    def __init__(
        self,
        storage: Any,
        *,
        run_name: str | None,
        prefix: str,
        resume: bool,
        config: Any = None,
        seed: int | None = None,
        keep_last: int = 2,
    ) -> None:
        self._owned = isinstance(storage, (str, os.PathLike))
        # A trainer writing a run asks for the storage: its tables may be added to any database.
        self.storage = open_storage(storage, create=True) if self._owned else storage
        self.keep_last = keep_last
        self.created = False  # whether this store created the run (rather than resumed it)
        try:
            self.run = self._open_run(run_name, prefix, resume, config, seed)
        except BaseException:
            self.close()
            raise

    def _open_run(
        self, name: str | None, prefix: str, resume: bool, config: Any, seed: int | None
    ) -> RunRecord:
        if resume and name is None:
            candidates = [r for r in self.storage.list_runs() if r.name.startswith(f"{prefix}-")]
            if candidates:
                run = candidates[-1]
                self.storage.set_status(run, RunStatus.RUNNING)
                return run
        if name is None:
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
            name = f"{prefix}-{stamp}"
        elif resume:
            try:
                run = self.storage.get_run(name)
            except RunNotFoundError:
                known = [r.name for r in self.storage.list_runs()][-5:]
                raise RunNotFoundError(
                    f"resume=True but {self.url} has no run named {name!r} (latest runs: "
                    f"{known or 'none'}); pass the name of an existing run, or resume=False "
                    "to start a new one"
                ) from None
            self.storage.set_status(run, RunStatus.RUNNING)
            return run
        try:
            run = self.storage.create_run(name, config=config, seed=seed)
            self.created = True
            return run
        except RunExistsError:
            # the storage suggests `load_if_exists`, which is no `train` keyword
            raise RunExistsError(
                f"a run named {name!r} already exists in {self.url}; pass resume=True to "
                "continue it, or choose another run_name"
            ) from None

    @property
    def name(self) -> str:
        """The run's name."""
        return self.run.name

    @property
    def url(self) -> str:
        """The storage URL (password hidden)."""
        return str(self.storage.url)

    def latest_state(
        self, algorithm: str, agent: Any = None, trust_code: bool = False
    ) -> dict[str, Any] | None:
        """The latest checkpointed trainer state, checked to belong to `algorithm`.

        With `agent` (a Module), the checkpoint's parameter values are checked like any
        loaded state (`opto.trace.loading.check_loaded_state`): trainable code that differs
        from its defining source is refused unless `trust_code`, loaded code passes the
        proposal checks, values keep their parameter's type. See docs/security.md.
        """
        record = self.storage.load_checkpoint(self.run)
        if record is None:
            return None
        state = record.state
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"run {self.name!r} holds a checkpoint this opto-trainers cannot read "
                f"(version {state.get('version') if isinstance(state, dict) else '?'}); start "
                "a new run"
            )
        if state.get("algorithm") != algorithm:
            raise CheckpointError(
                f"run {self.name!r} was checkpointed by {state.get('algorithm')}, not "
                f"{algorithm}; resume it with the same algorithm or choose another run_name"
            )
        if agent is not None:
            state = self.check_parameters(state, agent, trust_code)
        return state

    def check_parameters(
        self, state: dict[str, Any], agent: Any, trust_code: bool = False
    ) -> dict[str, Any]:
        """`state` with its parameter values checked against `agent` (see `latest_state`)."""
        where = f"the checkpoint of run {self.name!r}"
        try:
            own = dict(agent.named_parameters())
            state["parameters"] = check_loaded_state(
                own, state.get("parameters"), trust_code, where
            )
        except LoadedValueError as error:
            raise CheckpointError(str(error)) from None
        return state

    def save(self, state: dict[str, Any], iteration: int) -> None:
        """Store `state` as the run's latest checkpoint (atomic)."""
        self.storage.save_checkpoint(self.run, state, iteration=iteration, keep_last=self.keep_last)

    def record_step(self, iteration: int, **fields: Any) -> None:
        """Store one completed step (replacing a step redone after a resume)."""
        self.storage.append_step(self.run, iteration=iteration, replace=True, **fields)

    def event(self, kind: str, payload: Any = None, iteration: int | None = None) -> None:
        """Log an event (started, resumed, stopped...) on the run."""
        self.storage.log_event(self.run, kind, payload, iteration=iteration)

    def finish(self, status: RunStatus) -> None:
        """Mark the run finished with `status`."""
        self.storage.set_status(self.run, status)

    def close(self) -> None:
        """Close the storage if this store opened it."""
        if self._owned:
            self.storage.close()
