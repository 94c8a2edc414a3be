"""The evaluation cache: scoring results kept in run storage across runs and resumes."""

from __future__ import annotations

import importlib.util
import logging
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import opto_trainers_test_support as S
import pytest
from opto import trace

pytest.importorskip("sqlalchemy", reason="the evaluation cache lives in opto-utils[storage]")

from opto.trainers import ExactMatchGuide, LLMJudge, PrioritySearch, UCBSearch
from opto.trainers.evalcache import EvalCache, agent_scope
from opto.trainers.evaluation import evaluate
from opto.trainers.executors import SerialExecutor
from opto.trainers.guide import Guide
from opto.trainers.objectives import ObjectiveConfig
from opto.trainers.options import TrainOptions
from opto.utils.storage import open_storage
from opto.utils.storage.testing import PostgresServer, find_postgres_bindir
from opto.utils.testing import ScriptedLLM
from opto.utils.usage import BudgetExceeded

SEARCH = dict(batch_size=2, num_candidates=2, num_proposals=2, num_steps=3)


class CountingGuide(S.TargetGuide):
    """`TargetGuide` that records every `(x, response)` it judges (in all copies)."""

    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def get_feedback(self, query, response, reference=None, **kwargs):
        with self.lock:
            self.calls.append((query, response))
        return super().get_feedback(query, response, reference)


@pytest.fixture(autouse=True)
def fresh_counts():
    CountingGuide.calls = []


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'runs.db'}"


def search(storage, **kwargs):
    trainer, agent, _ = S.make(PrioritySearch)
    result = trainer.train(
        S.TargetGuide(), S.DATA, validate_guide=CountingGuide(), storage=storage, **SEARCH, **kwargs
    )
    return result, agent


# -- across runs ---------------------------------------------------------------------------


def _postgres_url():
    if importlib.util.find_spec("psycopg") is None or find_postgres_bindir() is None:
        pytest.skip("needs psycopg and the PostgreSQL server binaries")
    server = PostgresServer()
    server.start()
    return server, server.create_database()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_repeated_search_with_the_same_seed_pays_nothing_for_scoring(backend, db):
    server = None
    if backend == "postgresql":
        server, db = _postgres_url()
    try:
        first, first_agent = search(db)
        first_calls = list(CountingGuide.calls)
        CountingGuide.calls = []
        second, second_agent = search(db)
    finally:
        if server is not None:
            server.stop()
    assert first_calls and CountingGuide.calls == []
    assert first.usage["eval_cache_misses"] == len(first_calls)
    assert first.usage["eval_cache_hits"] == 0
    assert second.usage["eval_cache_hits"] == len(first_calls)
    assert second.usage["eval_cache_misses"] == 0
    assert second.train_scores == first.train_scores
    assert second_agent.a.data == first_agent.a.data == S.TARGET


def test_eval_cache_false_turns_it_off(db):
    search(db, eval_cache=False)
    first_calls = len(CountingGuide.calls)
    result, _ = search(db, eval_cache=False)
    assert len(CountingGuide.calls) == 2 * first_calls
    assert result.usage["eval_cache_hits"] == result.usage["eval_cache_misses"] == 0
    with open_storage(db) as storage:
        assert storage.count_cached_evaluations() == 0


def test_a_namespace_keeps_its_own_entries(db):
    search(db)
    calls = len(CountingGuide.calls)
    search(db, eval_cache="v2")
    assert len(CountingGuide.calls) == 2 * calls
    with open_storage(db) as storage:
        scope = agent_scope(S.Scale())
        assert storage.count_cached_evaluations(scope) == calls
        assert storage.count_cached_evaluations(f"{scope}:v2") == calls
    with pytest.raises(ValueError, match="namespace string"):
        TrainOptions(eval_cache="")


def test_hits_are_free_in_the_ledger_and_counted_in_the_step_records(db):
    judge_llm = ScriptedLLM(lambda messages, **kw: "Correct [TERMINATE]", cost_per_call=0.25)

    def run():
        trainer, _, _ = S.make(UCBSearch)
        return trainer.train(
            S.TargetGuide(),
            S.DATA,
            validate_guide=LLMJudge(llm=judge_llm),
            storage=db,
            num_search_iterations=3,
            evaluation_batch_size=2,
        )

    first = run()
    judged = judge_llm.calls
    second = run()
    assert judged > 0 and judge_llm.calls == judged  # no judge call in the second run
    assert second.usage["calls"] == first.usage["calls"] - judged
    assert first.usage["cost_usd"] == 0.25 * judged and second.usage["cost_usd"] == 0
    assert first.usage["eval_cache_misses"] == judged  # one judge call per miss
    total = first.usage["eval_cache_hits"] + judged  # (a search re-scores some candidates)
    assert second.usage["eval_cache_hits"] == total and second.usage["eval_cache_misses"] == 0
    with open_storage(db) as storage:
        run_name = second.run_name
        steps = storage.list_steps(run_name)
    assert sum(step.info["eval_cache"]["hits"] for step in steps) == total
    assert all(step.info["eval_cache"]["misses"] == 0 for step in steps)
    assert all("eval_cache_hits" not in entry["usage"] for entry in second.history)


def test_basic_search_validations_and_test_evaluations_are_cached(db):
    from opto.trainers import BasicSearchAlgorithm

    def run():
        agent = S.EchoAgent()
        optimizer = S.StepOptimizer(agent.parameters(), ScriptedLLM(S.increment))
        trainer = BasicSearchAlgorithm(agent, optimizer, num_threads=2)
        data = {"inputs": ["a", "b"], "infos": ["v2", "v2"]}
        return trainer.train(
            ExactMatchGuide(), data, test_dataset=data, storage=db, batch_size=2,
            num_proposals=2, max_steps=2,
        )  # fmt: skip

    first, second = run(), run()
    assert first.usage["eval_cache_misses"] > 0
    assert second.usage["eval_cache_misses"] == 0
    assert second.usage["eval_cache_hits"] == (
        first.usage["eval_cache_hits"] + first.usage["eval_cache_misses"]
    )
    assert second.test_scores == first.test_scores
    assert second.final_parameters == first.final_parameters


def test_score_dicts_are_cached_for_multi_objective_searches(db):
    class Metrics(CountingGuide, S.MetricsGuide):
        pass

    def run():
        trainer, agent, _ = S.make(PrioritySearch)
        result = trainer.train(
            S.TargetGuide(),
            S.DATA,
            validate_guide=Metrics(),
            storage=db,
            objective_config=ObjectiveConfig(
                mode="weighted", weights={"closeness": 1.0, "size": 0.0}
            ),
            **SEARCH,
        )
        return result, agent

    first, first_agent = run()
    calls = len(CountingGuide.calls)
    second, second_agent = run()
    assert calls > 0 and len(CountingGuide.calls) == calls
    assert first.usage["eval_cache_misses"] == calls
    assert second.usage["eval_cache_misses"] == 0 and second.usage["eval_cache_hits"] >= calls
    assert (second.train_scores, second_agent.a.data) == (first.train_scores, first_agent.a.data)


# -- a killed run, resumed -----------------------------------------------------------------

CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import support as S
from opto.trainers import PrioritySearch


class LoggingGuide(S.TargetGuide):
    def __init__(self, log, kill_at):
        self.log, self.kill_at = log, kill_at

    def cache_identity(self):
        return "logging-target-guide"  # where it logs and when it dies do not change scores

    def get_feedback(self, query, response, reference=None, **kwargs):
        with open(self.log, "a") as f:
            done = sum(1 for _ in open(self.log)) if os.path.exists(self.log) else 0
            if done == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            f.write(f"{{query}} {{response}}\\n")
        return super().get_feedback(query, response, reference)


db, log, kill_at, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
trainer, agent, _ = S.make(PrioritySearch, num_threads=1)
result = trainer.train(
    S.TargetGuide(), S.DATA, validate_guide=LoggingGuide(log, kill_at), storage=db,
    run_name="killed", resume=resume, batch_size=2, num_candidates=2, num_proposals=2,
    num_steps=4,
)
print(result.n_iters, agent.a.data, result.usage["eval_cache_hits"])
"""


def _child(db, log, kill_at, resume):
    script = CHILD.format(tests=str(Path(S.__file__).parent))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), db, str(log), str(kill_at), resume],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _evaluations(path):
    return [tuple(line.split()) for line in Path(path).read_text().splitlines()]


def test_a_run_killed_mid_validation_and_resumed_evaluates_nothing_twice(db, tmp_path):
    killed = _child(db, tmp_path / "first.log", 3, "0")
    assert killed.returncode == -9, killed.stderr
    before = _evaluations(tmp_path / "first.log")
    assert len(before) == 3
    resumed = _child(db, tmp_path / "second.log", -1, "1")
    assert resumed.returncode == 0, resumed.stderr
    after = _evaluations(tmp_path / "second.log")
    assert after and not set(after) & set(before)
    n_iters, value, hits = resumed.stdout.split()
    assert int(n_iters) == 4 and int(value) == S.TARGET and int(hits) > 0


# -- what is cached --------------------------------------------------------------------------


class FlakyOnce(S.TargetGuide):
    """Fails the first time it judges x == BAD (a transient error), then works."""

    failed: list[int] = []

    def get_feedback(self, query, response, reference=None, **kwargs):
        CountingGuide.calls.append((query, response))
        if query == S.BAD and not self.failed:
            self.failed.append(query)
            raise ConnectionError("judge timed out")
        return super().get_feedback(query, response, reference)


def _evaluate(cache, guide, agent=None, **kwargs):
    return evaluate(
        agent or S.Scale(3),
        guide,
        S.DATA["inputs"],
        S.DATA["infos"],
        min_score=0.0,
        executor=SerialExecutor(),
        cache=cache,
        **kwargs,
    )


def test_a_transient_failure_is_never_cached(db):
    FlakyOnce.failed = []
    with open_storage(db) as storage:
        cache = EvalCache(storage, "scope")
        assert _evaluate(cache, FlakyOnce()) == [1.0, 0.0, 1.0, 1.0]
        assert storage.count_cached_evaluations("scope") == 3
        CountingGuide.calls = []
        assert _evaluate(cache, FlakyOnce()) == [1.0, 1.0, 1.0, 1.0]
        assert CountingGuide.calls == [(S.BAD, 3 * S.BAD)]  # only the failed one ran again
        assert (cache.hits, cache.misses) == (3, 5)


def test_an_llm_judge_whose_llm_failed_is_asked_again(db):
    from opto.utils.llm.errors import LLMTimeoutError

    down = [True]

    def grade(messages, **kwargs):
        if down[0] and "Student answer:\n6" in messages[-1]["content"]:
            raise LLMTimeoutError("no reply in 60s", model="scripted")
        return "Correct [TERMINATE]"

    llm = ScriptedLLM(grade)
    with open_storage(db) as storage:
        cache = EvalCache(storage, "scope")
        assert _evaluate(cache, LLMJudge(llm=llm)) == [1.0, 0.0, 1.0, 1.0]
        assert storage.count_cached_evaluations("scope") == 3
        down[0], asked = False, len(llm.requests)
        assert _evaluate(cache, LLMJudge(llm=llm)) == [1.0] * 4
        assert len(llm.requests) == asked + 1  # only the example whose judge timed out


def test_a_guide_that_breaks_its_contract_stores_nothing_it_broke_on(db):
    from opto.trainers.guide import GuideError

    class NoScoreOn2(CountingGuide):
        def get_feedback(self, query, response, reference=None, **kwargs):
            score, feedback = super().get_feedback(query, response, reference)
            return (None if query == 2 else score), feedback

    with open_storage(db) as storage:
        cache = EvalCache(storage, "scope")
        with pytest.raises(GuideError, match="NoScoreOn2"):
            _evaluate(cache, NoScoreOn2())
        assert storage.count_cached_evaluations("scope") == 1  # x=1, judged before x=2


def test_an_agent_that_raised_is_never_cached(db):
    with open_storage(db) as storage:
        cache = EvalCache(storage, "scope")
        scores = _evaluate(cache, CountingGuide(), agent=S.FlakyScale(3))
        assert scores == [1.0, 0.0, 1.0, 1.0]
        assert storage.count_cached_evaluations("scope") == 3
        CountingGuide.calls = []
        assert _evaluate(cache, CountingGuide(), agent=S.FlakyScale(3)) == scores
        assert CountingGuide.calls == []
        assert cache.misses == 4 + 1  # the failing example runs (and fails) again


class BudgetGuide(CountingGuide):
    """Raises `BudgetExceeded` on its `at`-th call."""

    def __init__(self, at):
        self.at = at

    def cache_identity(self):
        return "budget-guide"

    def get_feedback(self, query, response, reference=None, **kwargs):
        if len(CountingGuide.calls) + 1 == self.at:
            raise BudgetExceeded("out of budget", limit="calls", budget=1, used=1)
        return super().get_feedback(query, response, reference)


def test_a_batch_cut_short_by_the_budget_keeps_what_completed(db):
    with open_storage(db) as storage:
        cache = EvalCache(storage, "scope")
        with pytest.raises(BudgetExceeded):
            _evaluate(cache, BudgetGuide(at=3))
        assert storage.count_cached_evaluations("scope") == 2  # stored as they completed
        CountingGuide.calls = []
        assert _evaluate(cache, BudgetGuide(at=0)) == [1.0] * 4
        assert CountingGuide.calls == [(3, 9), (4, 12)]


def test_evaluations_finished_on_many_threads_are_all_stored(db):
    from opto.trainers.executors import ThreadExecutor

    xs = list(range(1, 61))
    with open_storage(db) as storage, ThreadExecutor(8) as executor:
        cache = EvalCache(storage, "scope")
        for _ in range(2):
            evaluate(
                S.Scale(3), CountingGuide(), xs, [3 * x for x in xs], executor=executor, cache=cache
            )
        assert storage.count_cached_evaluations("scope") == 60
    assert len(CountingGuide.calls) == 60 and (cache.hits, cache.misses) == (60, 60)


def test_samples_of_one_evaluation_are_kept_apart(db):
    with open_storage(db) as storage:
        cache = EvalCache(storage, "scope")
        assert _evaluate(cache, CountingGuide(), num_samples=3) == [[1.0] * 3] * 4
        assert len(CountingGuide.calls) == 12
        assert storage.count_cached_evaluations("scope") == 12
        _evaluate(cache, CountingGuide(), num_samples=4)
        assert len(CountingGuide.calls) == 12 + 4  # only the 4th sample of each input ran


def test_outputs_and_feedback_come_back_from_the_cache(db):
    records = []
    with open_storage(db) as storage:
        cache = EvalCache(storage, "scope")
        for _ in range(2):
            evaluate(
                S.Scale(2),
                CountingGuide(),
                [1, 2],
                [3, 6],
                executor=SerialExecutor(),
                cache=cache,
                on_rollouts=records.append,
            )
    computed, cached = ([r.to_dict() for r in batch] for batch in records)
    assert cached == computed
    assert cached[0]["output"] == 2 and cached[0]["feedback"] == "too small"


# -- guide identity --------------------------------------------------------------------------


def test_a_different_guide_configuration_misses(db):
    with open_storage(db) as storage:
        cache = EvalCache(storage, "scope")
        agent = S.EchoAgent()
        xs, infos = ["a", "b"], ["V0", "v0"]

        def run(guide):
            return evaluate(agent, guide, xs, infos, executor=SerialExecutor(), cache=cache)

        assert run(ExactMatchGuide()) == [0.0, 1.0]
        assert run(ExactMatchGuide(normalize=True)) == [1.0, 1.0]  # not the cached verdicts
        assert run(ExactMatchGuide()) == [0.0, 1.0]
        assert (cache.hits, cache.misses) == (2, 4)


class Client:
    """Stands for a client object of the guide's (it has no stable identity)."""


class Locked(S.TargetGuide):
    def __init__(self):
        self.client = Client()


class Versioned(Locked):
    def cache_identity(self):
        return {"version": 1}


class OptedOut(S.TargetGuide):
    def cache_identity(self):
        return None


def test_guides_without_an_identity_are_not_cached_and_say_so(db, caplog):
    with open_storage(db) as storage:
        cache = EvalCache(storage, "scope")
        with caplog.at_level(logging.INFO, logger="opto.trainers.evalcache"):
            for guide in (Locked(), Locked(), OptedOut(), Versioned(), Versioned()):
                _evaluate(cache, guide)
        assert storage.count_cached_evaluations("scope") == 4  # the Versioned ones
        assert (cache.hits, cache.misses) == (4, 4)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Locked are not cached" in m for m in messages) == 1  # told once
    assert any("OptedOut are not cached: its cache_identity() is None" in m for m in messages)


def test_function_guides_are_identified_by_code_and_captured_values():
    from opto.trainers import FunctionGuide

    def judge_with(threshold):
        return FunctionGuide(lambda q, r, i: float(r >= threshold))

    assert judge_with(1).cache_identity() == judge_with(1).cache_identity()
    assert judge_with(1).cache_identity() != judge_with(2).cache_identity()
    other = FunctionGuide(lambda q, r, i: float(r > 1))
    assert other.cache_identity() != judge_with(1).cache_identity()
    judge_a = LLMJudge(llm=ScriptedLLM(lambda m, **kw: "", model="judge-a"))
    judge_b = LLMJudge(llm=ScriptedLLM(lambda m, **kw: "", model="judge-b"))
    assert judge_a.cache_identity() != judge_b.cache_identity()
    assert Guide().cache_identity() == Guide().cache_identity()


@trace.model
class Offset:
    """`a * x + offset`: `offset` is configuration, not a trainable parameter."""

    def __init__(self, offset, llm=None):
        self.a = trace.node(3, trainable=True)
        self.offset = offset
        self.llm = llm

    def forward(self, x):
        return self.a * x + self.offset


def test_agents_built_differently_do_not_share_evaluations(db):
    def llm(model):
        return ScriptedLLM(lambda m, **kw: "", model=model)

    assert agent_scope(S.Scale(1)) == agent_scope(S.Scale(5))  # values are in the key
    assert agent_scope(Offset(0)) != agent_scope(Offset(1))
    assert agent_scope(Offset(0, llm("a"))) != agent_scope(Offset(0, llm("b")))
    assert agent_scope(Offset(0, llm("a"))) == agent_scope(Offset(0, llm("a")))
    with open_storage(db) as storage:
        scores = [
            _evaluate(EvalCache(storage, agent_scope(agent)), CountingGuide(), agent=agent)
            for agent in (Offset(0), Offset(3))
        ]
    assert scores[0] == [1.0] * 4 and scores[1] != scores[0]
    assert len(CountingGuide.calls) == 8


def test_describe_identifies_plain_configuration_and_refuses_the_rest():
    import dataclasses
    import enum
    import functools
    import math

    from opto.trainers.identity import Unidentifiable, describe

    class Mode(enum.Enum):
        FAST = 1

    @dataclasses.dataclass
    class Settings:
        level: int

    def scale(x, k=2):
        return x * k

    config = {
        "numbers": (1, 2.5, math.inf, True, None),
        "tags": {"b", "a"},
        "mode": Mode.FAST,
        "settings": Settings(3),
        "partial": functools.partial(scale, k=3),
        "kind": Settings,
    }
    assert describe(config) == describe(dict(reversed(list(config.items()))))
    assert describe({"tags": {"a", "b"}}) == describe({"tags": {"b", "a"}})
    assert describe(Settings(3)) != describe(Settings(4))
    assert describe(functools.partial(scale, k=3)) != describe(functools.partial(scale, k=4))
    for opaque in (object(), {1: "non-string key"}, [threading.Lock()]):
        with pytest.raises(Unidentifiable):
            describe(opaque)
    nested = []
    nested.append(nested)
    with pytest.raises(Unidentifiable, match="nests too deeply"):
        describe(nested)


# -- executors that ship tasks ---------------------------------------------------------------


class ShippingExecutor(SerialExecutor):
    """Runs each task on an unpickled copy of it, like an executor that runs tasks in other
    processes (`in_process = False`): what a task changes never comes back."""

    in_process = False
    task_threads = 1

    def map(self, fn, items):
        return [pickle.loads(pickle.dumps(fn))(item) for item in items]


def test_out_of_process_scoring_is_looked_up_and_stored_in_the_driver(db):
    def run():
        agent = S.Scale(1)
        optimizer = S.NudgeOptimizer(agent.parameters(), S.ScriptedLLM(S.nudge))
        trainer = PrioritySearch(agent, optimizer, executor=ShippingExecutor(), seed=0)
        result = trainer.train(S.TargetGuide(), S.DATA, storage=db, **SEARCH)
        return result, agent

    first, first_agent = run()
    second, second_agent = run()
    assert first.usage["eval_cache_misses"] > 0
    assert second.usage["eval_cache_hits"] == first.usage["eval_cache_misses"]
    assert second.usage["eval_cache_misses"] == 0
    assert (second.train_scores, second_agent.a.data) == (first.train_scores, first_agent.a.data)
    with open_storage(db) as storage:
        assert storage.count_cached_evaluations() == first.usage["eval_cache_misses"]
