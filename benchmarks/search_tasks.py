"""Tasks and the seeded noisy oracle of the search-efficiency benchmark.

The oracle (`NoisyOracle`) is an `opto.optimizers.Optimizer` that stands in for the LLM:
each step reads its parameters' values and the joined batch feedback, and with
probability `p_improve` makes the task's *informed* move (one that follows the feedback,
so it usually improves the examples the feedback came from) and otherwise a random
perturbation (neutral or worse). Its randomness is a hash of the seed and the request
(values, feedback, chain length, fork index) and of how many times that exact request
was made before (a repeated request gets a fresh sample, as from an LLM), so a run
depends only on the trainer's decisions, not on thread timing (two identical requests in
flight at once may swap their replies); it can sleep `latency` seconds per proposal to
simulate an LLM call.

`Meter` counts proposals and metric calls (one per rollout that reached the guide),
stops a run at a budget (`BudgetExceeded`, which every trainer treats as a clean stop),
records the (candidate, example) pairs evaluated and the time span of each proposal.

Tasks (`TASKS`), every score in [0, 1] except the multi-objective scalar:
* `convex`: minimise a convex quadratic of four parameters (the anchor's "convex
  function" example, with the guide as the environment: the feedback gives f and its
  gradient);
* `multiobjective`: the same point scored on two metrics, `fit` (maximise) and `norm`
  (minimise), compared with a weighted `ObjectiveConfig`;
* `multiinstance`: four skill levels, 16 instances of four kinds and four difficulties
  (an instance passes when its kind's level reaches its difficulty). The informed move
  fixes a failed case of the minibatch and, like an LLM overfitting its minibatch, may
  lose a level of each kind the minibatch did not show: candidates specialise, different
  ones win on different instances, and a proposal that looks good on its own minibatch
  may be worse overall, so validating beyond the minibatch and keeping or merging
  specialists pays;
* `code`: a trainable `slugify` method the oracle edits line by line; each example is a
  unit test, so a candidate's mean score is the fraction of tests it passes.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opto import trace
from opto.optimizers import Optimizer
from opto.trainers import Guide
from opto.trainers.objectives import ObjectiveConfig
from opto.utils.usage import BudgetExceeded

__all__ = ["TASKS", "Meter", "NoisyOracle", "Task", "TaskGuide"]

Values = dict[str, Any]

# -- bookkeeping -------------------------------------------------------------------------------

_ROLLOUT = threading.local()  # the (candidate, example) pair of the rollout in this thread


def _note_rollout(values: Sequence[Any], x: Any) -> None:
    """Called by every agent's forward: the pair the guide is about to score."""
    _ROLLOUT.pair = json.dumps([list(values), x], sort_keys=True, default=repr)
    _ROLLOUT.counted = False


class Meter:
    """Shared counters of one run: proposals, metric calls, pairs evaluated, LLM spans.

    `metric_budget` / `proposal_budget`: the call that would pass the budget raises
    `BudgetExceeded` instead (the trainer rolls back to its last step and stops).
    """

    def __init__(
        self, metric_budget: int | None = None, proposal_budget: int | None = None
    ) -> None:
        self.metric_budget = metric_budget
        self.proposal_budget = proposal_budget
        self.metric_calls = 0
        self.proposals = 0
        self.pairs: dict[tuple[str, str], int] = {}  # (kind, pair) -> calls
        self.spans: list[tuple[float, float]] = []
        self.requests: dict[bytes, int] = {}  # how often each exact request was made
        self.step = 0  # the trainer's completed steps (set by the benchmark's logger)
        self.proposal_steps: set[int] = set()  # steps that made a proposal
        self.lock = threading.Lock()

    def metric_call(self, kind: str) -> None:
        """Count the current rollout once (a guide asked twice for it counts once).

        `kind`: "feedback" for a rollout whose feedback the guide wrote (a training
        rollout, whose trace feeds a proposal), "score" for a score-only one (validation).
        """
        if getattr(_ROLLOUT, "counted", True):
            return
        with self.lock:
            if self.metric_budget is not None and self.metric_calls >= self.metric_budget:
                raise BudgetExceeded(
                    f"metric-call budget of {self.metric_budget} reached",
                    limit="calls",
                    budget=self.metric_budget,
                    used=self.metric_calls,
                )
            self.metric_calls += 1
            key = (kind, _ROLLOUT.pair)
            self.pairs[key] = self.pairs.get(key, 0) + 1
        _ROLLOUT.counted = True

    def proposal(self) -> None:
        with self.lock:
            if self.proposal_budget is not None and self.proposals >= self.proposal_budget:
                raise BudgetExceeded(
                    f"proposal budget of {self.proposal_budget} reached",
                    limit="calls",
                    budget=self.proposal_budget,
                    used=self.proposals,
                )
            self.proposals += 1
            self.proposal_steps.add(self.step)

    def occurrence(self, request: bytes) -> int:
        """How many times `request` was made before (a fresh sample each time, like an
        LLM at a non-zero temperature)."""
        with self.lock:
            count = self.requests.get(request, 0)
            self.requests[request] = count + 1
        return count

    def span(self, start: float, end: float) -> None:
        with self.lock:
            self.spans.append((start, end))

    def rounds(self) -> int:
        """The critical path in LLM latencies: a trainer's proposals within one step never
        depend on each other, so one step with proposals is one round."""
        return len(self.proposal_steps)

    def waves(self) -> int:
        """Groups of proposals that overlapped in time (each group ran as one round)."""
        count, end = 0, -math.inf
        for start, stop in sorted(self.spans):
            if start >= end:
                count += 1
                end = stop
            else:
                end = max(end, stop)
        return count


# -- the oracle --------------------------------------------------------------------------------


class NoisyOracle(Optimizer):
    """A seeded stochastic proposer in place of the LLM (see the module docstring).

    Args:
        agent: the agent (the oracle optimizes all its parameters, named by their paths).
        task: supplies `improve(values, feedback, rng)` and `perturb(values, rng)`.
        meter: counts proposals (shared by every fork).
        seed: the run's seed.
        p_improve: probability of the informed move.
        latency: seconds each proposal sleeps (the simulated LLM call).
    """

    _shared_on_copy = (*Optimizer._shared_on_copy, "task", "meter", "paths")

    def __init__(
        self,
        agent: Any,
        task: Task,
        meter: Meter,
        *,
        seed: int = 0,
        p_improve: float = 0.5,
        latency: float = 0.0,
    ) -> None:
        named = list(agent.named_parameters())
        super().__init__([node for _, node in named])
        self.paths = [path for path, _ in named]  # forks keep the parameters' order
        self.task = task
        self.meter = meter
        self.seed = seed
        self.p_improve = p_improve
        self.latency = latency
        self.forks = 0  # forks made so far: each fork draws its own index
        self.draw = -1

    def __deepcopy__(self, memo: dict[int, Any]) -> NoisyOracle:
        new = super().__deepcopy__(memo)
        assert isinstance(new, NoisyOracle)
        new.draw, new.forks = self.forks, 0
        self.forks += 1
        return new

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "oracle_forks": self.forks, "oracle_draw": self.draw}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.forks = int(state.get("oracle_forks", 0))
        self.draw = int(state.get("oracle_draw", -1))

    def _step(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        self.meter.proposal()
        start = time.perf_counter()
        params = list(self.parameters)
        values = {path: p.data for path, p in zip(self.paths, params)}
        feedback = str(getattr(self.trace_graph, "user_feedback", ""))  # 0 without feedback
        request = json.dumps([values, feedback, self.step_count, self.draw], default=repr)
        digest = hashlib.sha256(request.encode()).digest()
        nth = self.meter.occurrence(digest)
        rng = random.Random(hashlib.sha256(b"%d:%d:" % (self.seed, nth) + digest).digest())
        if rng.random() < self.p_improve:
            new = self.task.improve(values, feedback, rng)
        else:
            new = self.task.perturb(values, rng)
        if self.latency:
            time.sleep(self.latency)
        self.meter.span(start, time.perf_counter())
        return {p: new[path] for path, p in zip(self.paths, params)}


# -- tasks -------------------------------------------------------------------------------------


@dataclass
class Task:
    """One benchmark task: agent, data, guide behaviour, oracle moves and the true score.

    `true_score(values)` is what the benchmark plots: the score of parameter values on the
    whole task, computed without the guide (never counted as a metric call).
    """

    name: str
    names: list[str]
    make_agent: Callable[[], Any]
    data: dict[str, list[Any]]
    feedback: Callable[[Any, Any, Any], tuple[float, str]]
    improve: Callable[[Values, str, random.Random], Values]
    perturb: Callable[[Values, random.Random], Values]
    true_score: Callable[[Values], float]
    score_dict: Callable[[Any, Any, Any], dict[str, float]] | None = None
    objective: ObjectiveConfig | None = None
    batch_size: int = 1


class TaskGuide(Guide):
    """The task's guide; every rollout it scores is one metric call on the `meter`."""

    def __init__(self, task: Task, meter: Meter) -> None:
        self.task = task
        self.meter = meter

    def copy(self) -> TaskGuide:
        return self  # stateless; copies would only hide the shared meter

    def cache_identity(self) -> Any:
        """The task decides every verdict (the meter only counts)."""
        return f"opto-search-benchmark/{self.task.name}"

    def get_feedback(
        self, query: Any, response: Any, reference: Any = None, **kwargs: Any
    ) -> tuple[Any, Any]:
        self.meter.metric_call("feedback")
        return self.task.feedback(query, response, reference)

    def metric(self, query: Any, response: Any, reference: Any = None, **kwargs: Any) -> Any:
        """The score alone (what trainers ask for validation rollouts)."""
        self.meter.metric_call("score")
        return self.task.feedback(query, response, reference)[0]

    def get_score_dict(
        self, query: Any, response: Any, reference: Any = None, **kwargs: Any
    ) -> dict[str, float]:
        if self.task.score_dict is None:
            return super().get_score_dict(query, response, reference, **kwargs)
        self.meter.metric_call("score")
        return self.task.score_dict(query, response, reference)


@trace.bundle()
def pack(a: Any, b: Any, c: Any, d: Any) -> list[Any]:
    """The agent's answer: its four values."""
    return [a, b, c, d]


@trace.model
class FourValues:
    """An agent with four trainable values `names`, answering with all four."""

    def __init__(self, names: Sequence[str], start: Any) -> None:
        self.names = list(names)
        for name in self.names:
            setattr(self, name, trace.node(start, trainable=True, name=name))

    def forward(self, x: Any) -> Any:
        nodes = [getattr(self, name) for name in self.names]
        _note_rollout([n.data for n in nodes], x)
        return pack(*nodes)


# convex / multiobjective: f(x) = sum w_i (x_i - c_i)^2, start at 0.
_XS = ["x0", "x1", "x2", "x3"]
_CENTER = [1.5, -2.0, 0.5, 3.0]
_WEIGHT = [1.0, 2.0, 0.5, 1.5]
_NORM_SCALE = sum(c * c for c in _CENTER)
_OBJECTIVE = ObjectiveConfig(mode="weighted", weights={"fit": 1.0, "norm": 0.1}, minimize={"norm"})


def _f(point: Sequence[float]) -> float:
    return math.fsum(w * (x - c) ** 2 for x, c, w in zip(point, _CENTER, _WEIGHT))


def _convex_feedback(x: Any, response: Any, info: Any) -> tuple[float, str]:
    grad = [2 * w * (v - c) for v, c, w in zip(response, _CENTER, _WEIGHT)]
    value = _f(response)
    text = f"f(x) = {value:.4f}; gradient = {json.dumps([round(g, 4) for g in grad])}"
    return 1.0 / (1.0 + value), text


def _convex_improve(values: Values, feedback: str, rng: random.Random) -> Values:
    """Read the gradient and move one coordinate part of the way to its minimum."""
    found = re.findall(r"gradient = (\[[^\]]*\])", feedback)
    if not found:
        return _convex_perturb(values, rng)
    grad = json.loads(found[-1])
    i = rng.randrange(len(_XS))
    step = rng.uniform(0.3, 1.0) * grad[i] / (2 * _WEIGHT[i])
    return {**values, _XS[i]: round(values[_XS[i]] - step, 2)}


def _convex_perturb(values: Values, rng: random.Random) -> Values:
    i = rng.randrange(len(_XS))
    return {**values, _XS[i]: round(values[_XS[i]] + rng.gauss(0.0, 1.0), 2)}


def _norm(point: Sequence[float]) -> float:
    return math.fsum(v * v for v in point) / _NORM_SCALE


def _mo_score_dict(x: Any, response: Any, info: Any) -> dict[str, float]:
    return {"fit": 1.0 / (1.0 + _f(response)), "norm": _norm(response)}


def _mo_truth(values: Values) -> float:
    point = [values[n] for n in _XS]
    return 1.0 / (1.0 + _f(point)) - 0.1 * _norm(point)


# multiinstance: four kinds x four difficulties; instance (kind, d) passes if level >= d.
_KINDS = ["alpha", "beta", "gamma", "delta"]
_LEVELS = [2, 4, 6, 8]
_MAX_LEVEL = 10
_FORGET = 0.5


def _skills_feedback(x: Any, response: Any, info: Any) -> tuple[float, str]:
    kind, need = x
    level = response[_KINDS.index(kind)]
    if level >= need:
        return 1.0, f"{kind} case (needs {need}): passed"
    return 0.0, f"{kind} case failed: needs {kind} >= {need}, has {level}"


def _skills_improve(values: Values, feedback: str, rng: random.Random) -> Values:
    """Fix one failed case of the batch; the rewrite may lose what the batch did not show.

    Kinds the feedback mentions stay as they are (the proposer sees them); every other kind
    loses a level with probability `_FORGET` (it overfits the minibatch).
    """
    failed = re.findall(r"(\w+) case failed: needs \w+ >= (\d+)", feedback)
    if not failed:
        return _skills_perturb(values, rng)
    seen = set(re.findall(r"(\w+) case", feedback))
    kind, _ = rng.choice(failed)
    new = dict(values)
    new[kind] = min(_MAX_LEVEL, new[kind] + rng.choice((1, 2)))
    for other in _KINDS:
        if other not in seen and rng.random() < _FORGET:
            new[other] = max(0, new[other] - 1)
    return new


def _skills_perturb(values: Values, rng: random.Random) -> Values:
    kind = rng.choice(_KINDS)
    return {**values, kind: min(_MAX_LEVEL, max(0, values[kind] + rng.choice((-2, -1, 1, 2))))}


def _skills_truth(values: Values) -> float:
    passed = sum(values[kind] >= need for kind in _KINDS for need in _LEVELS)
    return passed / (len(_KINDS) * len(_LEVELS))


# code: slugify, edited line by line.
_STEPS = [
    "text = text.strip()",
    "text = text.lower()",
    'text = re.sub(r"[^\\w\\s-]", "", text)',
    'text = re.sub(r"[\\s_]+", "-", text)',
    'text = re.sub(r"-+", "-", text)',
    'text = text.strip("-")',
]
_BUGS = [
    "text = text.upper()",
    'text = text.replace(" ", "")',
    "text = text[1:]",
    'text = text.replace("-", "_")',
    "text = text.title()",
]
_TESTS = [
    ("hello", "hello"),
    ("Hello", "hello"),
    ("  hi  ", "hi"),
    ("hello world", "hello-world"),
    ("Hello, World!", "hello-world"),
    ("a  b", "a-b"),
    ("a - b", "a-b"),
    ("-a-", "a"),
    ("snake_case", "snake-case"),
    ("Tom's Diner", "toms-diner"),
]
_HEADER = "def slugify(self, text):"


def _source(lines: Sequence[str]) -> str:
    body = "".join(f"    {line}\n" for line in lines)
    return f"{_HEADER}\n{body}    return text\n"


def _lines(source: str) -> list[str]:
    rows = [row.strip() for row in source.splitlines()[1:]]
    return [row for row in rows if row and row != "return text"]


def _run_lines(lines: Sequence[str], text: str) -> Any:
    namespace: dict[str, Any] = {"re": re}
    try:
        exec(compile(_source(lines), "<slugify>", "exec"), namespace)
        return namespace["slugify"](None, text)
    except Exception as exc:  # a broken candidate fails the test
        return f"<{type(exc).__name__}>"


#: The steps each test needs: removing one of them from the correct pipeline fails it.
_NEEDS = {
    text: [i for i in range(len(_STEPS)) if _run_lines(_STEPS[:i] + _STEPS[i + 1 :], text) != want]
    for text, want in _TESTS
}


@trace.model
class Slugger:
    """An agent whose trainable code is `slugify`; it starts as the identity."""

    @trace.bundle(trainable=True)
    def slugify(self, text):
        return text

    def forward(self, x: Any) -> Any:
        _note_rollout([self.slugify.parameter.data], x)
        return self.slugify(x)


def _code_feedback(x: Any, response: Any, info: Any) -> tuple[float, str]:
    if response == info:
        return 1.0, f"test slugify({x!r}) passed"
    return 0.0, f"test slugify({x!r}) failed: returned {response!r}, expected {info!r}"


def _code_improve(values: Values, feedback: str, rng: random.Random) -> Values:
    """Fix a failed test of the batch: add a step it needs, or delete a wrong line."""
    lines = _lines(values["slugify"])
    failed = [t for t in re.findall(r"test slugify\((.*?)\) failed", feedback)]
    fixes: list[tuple[str, Any]] = [("drop", line) for line in lines if line not in _STEPS]
    for text in failed:
        try:
            wanted = _NEEDS[ast.literal_eval(text)]
        except (KeyError, SyntaxError, ValueError):
            continue
        fixes += [("add", i) for i in wanted if _STEPS[i] not in lines]
    if not fixes:
        return _code_perturb(values, rng)
    kind, what = rng.choice(fixes)
    if kind == "drop":
        lines.remove(what)
    else:
        position = sum(1 for line in lines if line in _STEPS and _STEPS.index(line) < what)
        lines.insert(position, _STEPS[what])
    return {"slugify": _source(lines)}


def _code_perturb(values: Values, rng: random.Random) -> Values:
    lines = _lines(values["slugify"])
    roll = rng.random()
    if roll < 0.5 or not lines:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(_BUGS))
    elif roll < 0.75:
        lines.pop(rng.randrange(len(lines)))
    elif len(lines) > 1:
        i = rng.randrange(len(lines) - 1)
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return {"slugify": _source(lines)}


def _code_truth(values: Values) -> float:
    lines = _lines(values["slugify"])
    return sum(_run_lines(lines, text) == want for text, want in _TESTS) / len(_TESTS)


def _convex_task(name: str, multi: bool) -> Task:
    return Task(
        name=name,
        names=list(_XS),
        make_agent=lambda: FourValues(_XS, 0.0),
        data={"inputs": ["minimize f"], "infos": [None]},
        feedback=lambda x, r, i: _convex_feedback(x, r, i),
        improve=_convex_improve,
        perturb=_convex_perturb,
        true_score=_mo_truth if multi else (lambda v: 1.0 / (1.0 + _f([v[n] for n in _XS]))),
        score_dict=_mo_score_dict if multi else None,
        objective=copy.deepcopy(_OBJECTIVE) if multi else None,
    )


TASKS: dict[str, Callable[[], Task]] = {
    "convex": lambda: _convex_task("convex", multi=False),
    "multiobjective": lambda: _convex_task("multiobjective", multi=True),
    "multiinstance": lambda: Task(
        name="multiinstance",
        names=list(_KINDS),
        make_agent=lambda: FourValues(_KINDS, 0),
        data={
            "inputs": [[kind, need] for kind in _KINDS for need in _LEVELS],
            "infos": [None] * (len(_KINDS) * len(_LEVELS)),
        },
        feedback=_skills_feedback,
        improve=_skills_improve,
        perturb=_skills_perturb,
        true_score=_skills_truth,
        batch_size=2,
    ),
    "code": lambda: Task(
        name="code",
        names=["slugify"],
        make_agent=Slugger,
        data={"inputs": [t for t, _ in _TESTS], "infos": [w for _, w in _TESTS]},
        feedback=_code_feedback,
        improve=_code_improve,
        perturb=_code_perturb,
        true_score=_code_truth,
        batch_size=2,
    ),
}
"""Each task by name (a fresh `Task` per call)."""
