"""Shared test agents, optimizers, guides and loggers for the opto-trainers tests.

Holds no tests. `conftest.py` loads this file by path as the module
`opto_trainers_test_support` (so it works with `--import-mode=importlib` and against an
installed wheel); test modules use `import opto_trainers_test_support as S`.

Search trainers (BeamSearch, UCBSearch, PrioritySearch, Ray): find the
integer `a` with `a * x == y` for the examples ({1..4} -> {3, 6, 9, 12}, so a = 3),
starting from a = 1. The guide says "too small"/"too large"; the optimizer asks a
scripted LLM, which moves the value one step in the direction most feedback lines ask for.
Everything is deterministic given the prompt, so runs on threads and on Ray agree.

Minibatch-family trainers: `prompt_agent(llm)` builds an agent with one trainable string
`prompt` that answers through a scripted LLM, and `StepOptimizer` asks its own LLM for the
next value (`increment` turns "vN" into "vN+1").
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import threading
import time
from typing import Any

from opto import trace
from opto.optimizers.optimizer import Optimizer
from opto.trainers.executors import SerialExecutor
from opto.trainers.guide import Guide
from opto.trainers.loggers import BaseLogger
from opto.utils.testing import ScriptedLLM

DATA = {"inputs": [1, 2, 3, 4], "infos": [3, 6, 9, 12]}
TARGET = 3


@trace.model
class Scale:
    """`a * x` with a trainable integer `a`."""

    def __init__(self, a: int = 1) -> None:
        self.a = trace.node(a, trainable=True, name="a")

    def forward(self, x: Any) -> Any:
        return self.a * x


class _LoopLog(list):
    """A list of event loops that pickles as an empty list.

    Ray pickles this module by value (`register_pickle_by_value`), and with
    `AsyncScale.forward` the globals it names, so this log. Loops hold weakrefs (they cannot
    be pickled) and belong to this process: a copy shipped to a worker starts empty.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, ())


LOOPS: list[asyncio.AbstractEventLoop] = _LoopLog()
"""The event loops `AsyncScale.forward` ran on in this process (tests clear it first)."""


@trace.model
class AsyncScale:
    """`a * x` like `Scale`, through an `async def forward` (traced operators inside)."""

    def __init__(self, a: int = 1) -> None:
        self.a = trace.node(a, trainable=True, name="a")

    async def forward(self, x: Any) -> Any:
        LOOPS.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return self.a * x


BAD = 2
"""The example `FlakyScale` and `FlakyGuide` fail on."""


@trace.model
class FlakyScale(Scale):
    """`Scale` whose forward raises (outside any traced operator) on x == BAD."""

    def forward(self, x: Any) -> Any:
        if x == BAD:
            raise ConnectionError(f"backend down for {x}")
        return self.a * x


class TargetGuide(Guide):
    """Score `1 - |error| / reference` (1.0 when exact); the feedback says which way."""

    def get_feedback(self, query: Any, response: Any, reference: Any = None, **kwargs: Any):
        if response == reference:
            return 1.0, "correct"
        score = max(0.0, 1.0 - abs(response - reference) / abs(reference))
        return score, "too small" if response < reference else "too large"


class MetricsGuide(TargetGuide):
    """`TargetGuide` that also reports two metrics: `closeness` (its score) and `size`
    (the magnitude of the response)."""

    def get_score_dict(self, query: Any, response: Any, reference: Any = None, **kwargs: Any):
        return {
            "closeness": self.get_feedback(query, response, reference)[0],
            "size": float(abs(response)),
        }


def nudge(messages: list[dict[str, Any]], **_: Any) -> str:
    """The scripted LLM: one step up if most feedback says too small, else one step down."""
    text = messages[-1]["content"]
    value = int(re.search(r"value=(-?\d+)", text).group(1))
    small, large = text.count("too small"), text.count("too large")
    if small == large == 0:
        return str(value)
    return str(value + 1 if small >= large else value - 1)


class NudgeOptimizer(Optimizer):
    """Asks its LLM for the next value of its single parameter from the joined feedback.

    `events` (shared by every copy) records `(id(optimizer), feedback text)` per step.
    """

    _shared_on_copy = (*Optimizer._shared_on_copy, "events", "lock")

    def __init__(self, parameters: Any, llm: Any) -> None:
        super().__init__(parameters)
        self.llm = llm
        self.events: list[tuple[int, str]] = []
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def _step(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        param = self.trainable_parameters[0]
        feedback = str(self.trace_graph.user_feedback)
        with self.lock:
            self.events.append((id(self), feedback))
        reply = self.llm(messages=[{"role": "user", "content": f"value={param.data}\n{feedback}"}])
        return {param: int(reply.choices[0].message.content)}


class RecordingLogger(BaseLogger):
    """Keeps every `(name, data, step)` it is given."""

    def __init__(self) -> None:
        self.records: list[tuple[str, Any, int]] = []

    def log(self, name: str, data: Any, step: int, **kwargs: Any) -> None:
        self.records.append((name, data, step))

    def values(self, name: str) -> list[Any]:
        return [data for n, data, _ in self.records if n == name]


class FlakyGuide(TargetGuide):
    """`TargetGuide` that raises on x == BAD."""

    def get_feedback(self, query: Any, response: Any, reference: Any = None, **kwargs: Any):
        if query == BAD:
            raise ConnectionError(f"judge down for {query}")
        return super().get_feedback(query, response, reference)


class InterruptingGuide(TargetGuide):
    """Raises KeyboardInterrupt on call number `at` (counted across copies)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls = [0]
        self.lock = threading.Lock()

    def copy(self) -> InterruptingGuide:
        return self

    def get_feedback(self, query: Any, response: Any, reference: Any = None, **kwargs: Any):
        with self.lock:
            self.calls[0] += 1
            hit = self.calls[0] == self.at
        if hit:
            raise KeyboardInterrupt
        return super().get_feedback(query, response, reference)


def make(cls: type, *, a: int = 1, **init: Any) -> tuple[Any, Scale, NudgeOptimizer]:
    """A trainer of `cls` on a fresh agent and optimizer (seeded, 4 threads by default)."""
    agent = Scale(a)
    optimizer = NudgeOptimizer(agent.parameters(), ScriptedLLM(nudge))
    init.setdefault("num_threads", 4)
    init.setdefault("seed", 0)
    return cls(agent, optimizer, **init), agent, optimizer


# -- minibatch-family agents and optimizers ----------------------------------------------------


def prompt_agent(llm: Any) -> type:
    """A trace model class whose trainable string `prompt` answers `x` through `llm`.

    The agent sends `"{prompt}|{x}"` as the user message and returns the reply's content.
    """

    @trace.bundle()
    def answer(prompt, x):
        """Answer x with the prompt."""
        return llm(messages=[{"role": "user", "content": f"{prompt}|{x}"}]).content

    @trace.model
    class Agent:
        def __init__(self):
            self.prompt = trace.node("v0", trainable=True)

        def forward(self, x):
            return answer(self.prompt, x)

    return Agent


ECHO_LLM = ScriptedLLM(lambda messages, **kw: messages[-1]["content"].split("|")[0])
"""An agent LLM that answers with the prompt it was given."""

EchoAgent = prompt_agent(ECHO_LLM)
"""An agent whose answer is its `prompt` (starts at "v0")."""


class StepOptimizer(Optimizer):
    """Asks its LLM for the next value of its single parameter; records the feedback seen.

    With `show_feedback` the message also carries the feedback (`value=... feedback=...`).
    """

    def __init__(self, parameters: Any, llm: Any, show_feedback: bool = False) -> None:
        super().__init__(parameters)
        self.llm = llm
        self.show_feedback = show_feedback
        self.seen: list[Any] = []

    def _step(self, **kwargs: Any) -> dict[Any, Any]:
        (p,) = self.parameters
        feedback = self.trace_graph.user_feedback
        self.seen.append(feedback)
        text = f"value={p.data}" + (f" feedback={feedback}" if self.show_feedback else "")
        return {p: self.llm(messages=[{"role": "user", "content": text}]).content}


def increment(messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """The scripted optimizer LLM: "value=vN" -> "vN+1"."""
    number = re.search(r"value=v(\d+)", messages[-1]["content"]).group(1)
    return f"v{int(number) + 1}"


def straight_and_resumed(
    cls: type, tmp_path: Any, length: str, total: int, part: int, init: Any = None, **kwargs: Any
) -> tuple[tuple[Any, Scale, NudgeOptimizer, Any], tuple[Any, Scale, NudgeOptimizer, Any]]:
    """Trains `cls` on `DATA` for `length=total` straight, and again as a run stopped at
    `length=part` and resumed to `total` from SQLite storage under `tmp_path`.

    Returns `(trainer, agent, optimizer, result)` of the straight and of the resumed run.
    """
    init = init or {}
    straight, straight_agent, straight_opt = make(cls, **init)
    expected = straight.train(TargetGuide(), DATA, **{length: total}, **kwargs)
    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    first, _, _ = make(cls, **init)
    first.train(TargetGuide(), DATA, **{length: part}, storage=storage, run_name="r", **kwargs)
    second, agent, second_opt = make(cls, **init)
    resumed = second.train(
        TargetGuide(), DATA, **{length: total}, storage=storage, run_name="r", resume=True, **kwargs
    )
    return (straight, straight_agent, straight_opt, expected), (second, agent, second_opt, resumed)


def ask_once(item: Any) -> str:
    """One LLM request per item (budget tests of the executors)."""
    reply = ECHO_LLM(messages=[{"role": "user", "content": f"{item}|"}], cache=False)
    return reply.content or ""


def code_spec_of(bundle: Any) -> Any:
    """The code spec (defining source and policy) of a trainable bundle's code parameter."""
    from opto.trace.code_policy import code_spec

    return code_spec(bundle.parameter)


def steps_done(db: Any, name: str) -> int:
    """How many steps run `name` has recorded in the SQLite file `db` (0 before it exists)."""
    from opto.utils.storage import RunNotFoundError, open_storage

    with open_storage(f"sqlite:///{db}") as storage:
        try:
            return len(storage.list_steps(name))
        except RunNotFoundError:
            return 0


def run_script(command: list[str]) -> Any:
    """Run a training script to the end and return the JSON it prints."""
    done = subprocess.run(command, capture_output=True, check=True, text=True)
    return json.loads(done.stdout)


def kill_once_stored(command: list[str], db: Any, name: str, steps: int) -> None:
    """Start the training script `command`, SIGKILL it once run `name` has `steps` steps in
    the SQLite file `db`, and check that the kill landed mid-run (the script holds with
    `hold_once_stored`, so it cannot finish first)."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        while steps_done(db, name) < steps and child.poll() is None:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"


_HOLD_STORAGES: dict[str, Any] = {}
_HOLD_LOCK = threading.Lock()
_HOLDS_RELEASED = threading.Event()


def release_holds_on_sigint() -> None:
    """Make SIGINT release every `hold_once_stored` for good, then raise KeyboardInterrupt
    as usual: a run stopped with Ctrl-C goes on to its clean-up (a final evaluation calls
    the agent again), which a hold would otherwise block."""

    def on_sigint(signum: int, frame: Any) -> None:
        _HOLDS_RELEASED.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)


def hold_once_stored(db: Any, name: str, steps: int, *, seconds: float = 600.0) -> None:
    """Block (for `seconds`) once run `name` has `steps` steps in the SQLite file `db`.

    A kill test's child calls it from its slow LLM or guide: the test kills the child once
    it sees `steps` steps stored, and under load the child could otherwise run on and finish
    before the signal lands (leaving nothing to resume). With the hold the child stays mid-run
    (inside a call of the next step) until it is killed, or until a SIGINT after
    `release_holds_on_sigint()`.
    """
    from opto.utils.storage import RunNotFoundError, open_storage

    if _HOLDS_RELEASED.is_set():
        return
    with _HOLD_LOCK:
        storage = _HOLD_STORAGES.get(str(db))
        if storage is None:
            storage = _HOLD_STORAGES[str(db)] = open_storage(f"sqlite:///{db}")
    try:
        stored = len(storage.list_steps(name))
    except RunNotFoundError:
        return
    if stored >= steps:
        _HOLDS_RELEASED.wait(seconds)


class PicklingExecutor(SerialExecutor):
    """Stands in for a remote executor: tasks and results must survive pickling."""

    in_process = False
    max_workers = 2

    def map(self, fn: Any, items: Any) -> list[Any]:
        import pickle

        remote_fn = pickle.loads(pickle.dumps(fn))
        return [pickle.loads(pickle.dumps(remote_fn(pickle.loads(pickle.dumps(i))))) for i in items]
