"""Resume safety: a run continues only with the agent and hyperparameters it started with.

A new run stores its configuration (the algorithm's hyperparameters) and the agent's
signature (the trainable parameters' names and value types). Resuming compares them
with the resuming call's and refuses with `ResumeMismatchError`, naming every difference:

* another agent (parameters added, missing or of another type) is always refused: its
  checkpoint cannot be loaded into this agent;
* changed hyperparameters are refused unless `resume_overrides` allows them (True: any;
  a list of names: those). The run's length and cadence (`MAY_CHANGE`, e.g. `max_steps`,
  `num_epochs`) may always change, so a stopped run can be continued further.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opto.trace.modules import Module

from .checkpoint import CheckpointError

__all__ = [
    "MAY_CHANGE",
    "ResumeMismatchError",
    "agent_signature",
    "check_overrides",
    "check_resume",
]

logger = logging.getLogger(__name__)

#: Configuration keys a resumed run may change freely (how long and how often, not how).
MAY_CHANGE = frozenset(
    {
        "num_epochs",
        "max_steps",
        "max_depth",
        "num_search_iterations",
        "patience",
        "min_delta",
        "eval_frequency",
    }
)


class ResumeMismatchError(CheckpointError):
    """Resuming a run with another agent, or with hyperparameters it was not started with."""


def agent_signature(agent: Module) -> dict[str, str]:
    """`{parameter path: value type name}` of the agent's trainable parameters."""
    return {path: type(node.data).__name__ for path, node in agent.named_parameters()}


def check_overrides(_instance: Any, _attribute: Any, value: Any) -> None:
    """Validate a `resume_overrides` value: True/False or a list of names."""
    names = isinstance(value, Sequence) and not isinstance(value, str)
    if not (isinstance(value, bool) or (names and all(isinstance(v, str) for v in value))):
        raise TypeError(
            f"resume_overrides must be True/False or a list of hyperparameter names, not {value!r}"
        )


def _plain(value: Any) -> Any:
    """`value` as it reads back from storage (JSON types; tuples become lists)."""
    return json.loads(json.dumps(value, default=repr))


def _agent_differences(stored: Mapping[str, Any], current: Mapping[str, str]) -> list[str]:
    problems = []
    missing = sorted(set(stored) - set(current))
    extra = sorted(set(current) - set(stored))
    if missing:
        problems.append(f"parameters {missing} are in the run but not in this agent")
    if extra:
        problems.append(f"parameters {extra} are in this agent but not in the run")
    for path in sorted(set(stored) & set(current)):
        if stored[path] is not None and stored[path] != current[path]:
            problems.append(f"parameter {path!r} is a {current[path]}, the run's a {stored[path]}")
    return problems


def check_resume(
    run_name: str,
    stored_config: Any,
    config: Mapping[str, Any],
    state: Mapping[str, Any] | None,
    overrides: bool | Sequence[str] = False,
) -> None:
    """Refuse to resume `run_name` with another agent or changed hyperparameters.

    `stored_config` is the run's stored configuration, `config` the resuming call's (both
    with the agent's signature under "agent"); `state` is the latest checkpoint (its
    parameter names stand in for a signature the run did not store).
    """
    stored = dict(stored_config) if isinstance(stored_config, Mapping) else {}
    current = _plain(dict(config))
    signature = stored.get("agent")
    if not isinstance(signature, Mapping) and state is not None:
        signature = dict.fromkeys(state.get("parameters") or {})
    if isinstance(signature, Mapping):
        problems = _agent_differences(signature, current.get("agent") or {})
        if problems:
            raise ResumeMismatchError(
                f"run {run_name!r} was started with another agent: {'; '.join(problems)}. "
                "Resume it with the agent it was started with, or start a new run (another "
                "run_name, resume=False)"
            )
    changed = {
        key: (stored.get(key), current.get(key))
        for key in sorted(set(stored) | set(current))
        if key != "agent" and key not in MAY_CHANGE and stored.get(key) != current.get(key)
    }
    if not changed:
        return
    check_overrides(None, None, overrides)
    allowed = set(changed) if overrides is True else set(overrides or ())
    refused = {key: pair for key, pair in changed.items() if key not in allowed}
    if refused:
        listed = "; ".join(
            f"{key}: run {old!r}, now {new!r}" for key, (old, new) in refused.items()
        )
        raise ResumeMismatchError(
            f"run {run_name!r} was started with other hyperparameters ({listed}). Resume "
            f"with the run's values, or pass resume_overrides={sorted(refused)!r} (or True) "
            "to continue with the new ones"
        )
    for key, (old, new) in changed.items():
        logger.warning("resuming run %r with %s changed: %r -> %r", run_name, key, old, new)
