"""`TrainSession`: the bookkeeping of one `train` call, which every algorithm's loop drives.

It counts steps, evaluates on the test set when due, logs, records every step and
checkpoints atomically in run storage, resumes a run (refusing another agent or changed
hyperparameters, see `opto.trainers.resume_check`), enforces stop conditions and LLM
budgets, and turns Ctrl-C into a clean stop. `Trainer.session(...)` opens one.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opto.utils.storage import RunStatus
from opto.utils.usage import Budget, BudgetExceeded, UsageLedger, track_usage

from .checkpoint import RunStore, default_storage_url
from .evalcache import EvalCache, agent_scope
from .evaluation import ErrorBudget, TooManyErrorsError
from .guide import Guide
from .loader import as_dataset
from .options import TrainOptions, TrainResult
from .ranking import is_score
from .resume_check import agent_signature, check_resume
from .scoring import log_metrics, scalar, split_scores
from .stopping import StopConditions, StopReason
from .utils import get_paramset, safe_mean, to_jsonable

if TYPE_CHECKING:
    from .algorithms.base import Trainer

__all__ = ["TrainSession"]

logger = logging.getLogger(__name__)

_USAGE_KEYS = (
    "calls",
    "requests",
    "errors",
    "cached_calls",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "unknown_cost_calls",
)
# Evaluation-cache lookups: in the run's usage, and per step in the step record's info
# (not in the step's LLM usage, which is the same with or without run storage).
_EVAL_CACHE_KEYS = ("eval_cache_hits", "eval_cache_misses")


def _add_usage(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    return {key: a.get(key, 0) + b.get(key, 0) for key in (*_USAGE_KEYS, *_EVAL_CACHE_KEYS)}


def _remaining(budget: Budget, used: Mapping[str, Any]) -> Budget:
    """`budget` minus what earlier sessions of the run already used."""

    def left(limit: Any, spent: Any) -> Any:
        return None if limit is None else max(0, limit - spent)

    sent = max(used.get("requests", 0), used.get("calls", 0) - used.get("cached_calls", 0))
    return Budget(
        max_calls=left(budget.max_calls, sent),
        max_tokens=left(budget.max_tokens, used.get("total_tokens", 0)),
        max_usd=left(budget.max_usd, used.get("cost_usd", 0.0)),
    )


class TrainSession:
    """The bookkeeping of one `train` call; algorithms drive it from their loop.

    Typical loop::

        with self.session(guide, options, config=...) as run:
            while not run.should_stop():
                ...  # one step: rollouts, proposals, validation, update
                run.complete_step(train_score=..., feedback=..., observe=...)
        return run.result

    `run.resumed` tells whether a checkpoint was loaded. `complete_step` counts the step,
    evaluates on the test set when due, logs, records the step and checkpoints. A
    `KeyboardInterrupt` or `BudgetExceeded` inside the `with` rolls the trainer back to the
    last completed step, checkpoints it and ends the run cleanly (`result.stopped` says
    why); other exceptions checkpoint the last completed step and propagate.
    """

    def __init__(
        self, trainer: Trainer, guide: Guide, options: TrainOptions, *, config: dict[str, Any]
    ) -> None:
        self.trainer = trainer
        self.guide = guide
        self.options = options
        self.config = config
        trainer.errors = ErrorBudget(options.max_errors)
        trainer.eval_cache = None
        self.test_data = (
            None
            if options.test_dataset is None
            else as_dataset(options.test_dataset, name="test_dataset")
        )
        self.test_guide = options.test_guide or guide
        self.eval_frequency = options.eval_frequency or 0
        self.log_frequency = options.log_frequency or self.eval_frequency or 1
        self.stop = StopConditions(
            max_steps=options.max_steps,
            patience=options.patience,
            min_delta=options.min_delta,
            stop_file=options.stop_file,
        )
        self.stopped: str | None = None
        self.resumed = False
        self.store: RunStore | None = None
        self._prior_usage: dict[str, Any] = dict.fromkeys((*_USAGE_KEYS, *_EVAL_CACHE_KEYS), 0)
        self._ledger: UsageLedger | None = None
        self._step_usage_mark: dict[str, Any] = dict(self._prior_usage)
        self._last_state: dict[str, Any] | None = None
        self._test_metrics: dict[str, float] | None = None
        self.result: TrainResult | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _running(self, total_steps: int | None) -> Iterator[None]:
        trainer, options = self.trainer, self.options
        verbose = bool(options.verbose)
        if hasattr(trainer.logger, "verbose"):
            trainer.logger.verbose = verbose
        status = RunStatus.COMPLETED
        try:
            self._open_store()
            self._open_eval_cache()
            budget = options.llm_budget
            if budget is not None:
                budget = _remaining(budget, self._prior_usage)
            with track_usage(budget, all_threads=True) as ledger:
                self._ledger = ledger
                self._last_state = trainer.state_dict()
                trainer.logger.start(total=total_steps, description=type(trainer).__name__)
                trainer.logger.advance(trainer.n_iters)
                try:
                    if self.store is not None:
                        self.store.event(
                            "resumed" if self.resumed else "started", {"n_iters": trainer.n_iters}
                        )
                    yield
                except KeyboardInterrupt:
                    self._roll_back()
                    self.stopped = StopReason.INTERRUPTED
                    status = RunStatus.INTERRUPTED
                    logger.warning(
                        "training interrupted; checkpointed after step %d", trainer.n_iters
                    )
                except BudgetExceeded as exc:
                    self._roll_back()
                    self.stopped = StopReason.BUDGET
                    logger.warning("LLM budget reached after step %d: %s", trainer.n_iters, exc)
                    if self.store is not None:
                        self.store.event(
                            "budget_exceeded", {"limit": exc.limit}, iteration=trainer.n_iters
                        )
                except BaseException as exc:
                    self._roll_back()
                    status = RunStatus.FAILED
                    if isinstance(exc, TooManyErrorsError) and self.store is not None:
                        self.store.event("too_many_errors", {"failures": to_jsonable(exc.failures)})
                    try:
                        self._checkpoint()
                    except Exception:  # keep the original error; this one is secondary
                        logger.exception("could not checkpoint the failed run")
                    raise
                else:
                    if self.stopped is None:
                        self.stopped = StopReason.COMPLETED
                    self._final_evaluation()
                finally:
                    trainer.logger.close()
            self._checkpoint()
            self.result = self._result()
        finally:
            trainer.eval_cache = None
            if self.store is not None:
                with contextlib.suppress(Exception):
                    self.store.finish(status)
                self.store.close()

    def _open_eval_cache(self) -> None:
        """Give the trainer the run storage's evaluation cache (unless `eval_cache=False`)."""
        setting = self.options.eval_cache
        if self.store is None or setting is False:
            return
        namespace = setting if isinstance(setting, str) else None
        self.trainer.eval_cache = EvalCache(
            self.store.storage, agent_scope(self.trainer.agent, namespace)
        )

    def _open_store(self) -> None:
        options, trainer = self.options, self.trainer
        if options.storage is None and not options.resume and options.save_frequency is None:
            return
        storage = options.storage
        if storage is None:
            storage = default_storage_url()
        config = {**self.config, "agent": agent_signature(trainer.agent)}
        self.store = RunStore(
            storage,
            run_name=options.run_name,
            prefix=type(trainer).__name__,
            resume=options.resume,
            config=config,
            seed=trainer.seed,
        )
        if options.resume and not self.store.created:
            state = self.store.latest_state(type(trainer).__name__)
            check_resume(
                self.store.name, self.store.run.config, config, state, options.resume_overrides
            )
            if state is not None:
                state = self.store.check_parameters(state, trainer.agent, options.trust_code)
                trainer.load_state_dict(state)
                self.stop.load_state_dict(state["stop"])
                trainer.errors.errors = int(state.get("errors", 0))
                self._prior_usage = dict(state["usage"])
                self._step_usage_mark = dict(self._prior_usage)
                self.resumed = True
                logger.info("resumed run %s after step %d", self.store.name, trainer.n_iters)

    def _final_evaluation(self) -> None:
        """Evaluate the final parameters unless the last step already did."""
        trainer = self.trainer
        if self.test_data is None or self.eval_frequency <= 0:
            return
        if self._evaluated_at(trainer.n_iters):
            return
        try:
            self.evaluate_test()
        except (KeyboardInterrupt, BudgetExceeded) as exc:
            logger.warning("final evaluation skipped: %s", type(exc).__name__)
            return
        self._last_state = trainer.state_dict()

    def _roll_back(self) -> None:
        """Return the trainer to the state after the last completed step."""
        if self._last_state is not None:
            self.trainer.load_state_dict(self._last_state)

    # -- usage ------------------------------------------------------------------------------

    @property
    def usage(self) -> dict[str, Any]:
        """LLM usage of the whole run so far (earlier sessions included)."""
        current = self._ledger.summary() if self._ledger is not None else {}
        return _add_usage(self._prior_usage, current)

    def _step_usage(self) -> tuple[dict[str, Any], dict[str, int]]:
        """The step's LLM usage and its evaluation-cache `{"hits", "misses"}`."""
        now = self.usage
        delta = {k: now[k] - self._step_usage_mark.get(k, 0) for k in _USAGE_KEYS}
        hits, misses = (now[k] - self._step_usage_mark.get(k, 0) for k in _EVAL_CACHE_KEYS)
        self._step_usage_mark = now
        return delta, {"hits": hits, "misses": misses}

    # -- the loop ---------------------------------------------------------------------------

    def should_stop(self) -> bool:
        """Whether a stop condition holds (it is recorded in `stopped`)."""
        if self.stopped is not None:
            return True
        reason = self.stop.check(self.trainer.n_iters)
        if reason is not None:
            self.stopped = reason
            logger.info("stopping after step %d: %s", self.trainer.n_iters, reason)
            return True
        return False

    def _evaluated_at(self, step: int) -> bool:
        return any(entry["step"] == step for entry in self.trainer.test_scores)

    def initial_evaluation(self) -> None:
        """Evaluate the starting parameters on the test set (once, when evaluations are on)."""
        if self.test_data is not None and self.eval_frequency > 0 and not self._evaluated_at(0):
            if self.trainer.n_iters == 0:
                self.evaluate_test()
                self._last_state = self.trainer.state_dict()

    def evaluate_test(self) -> float | None:
        """Evaluate the agent on the test set now; logs, tracks best and patience."""
        trainer, options = self.trainer, self.options
        assert self.test_data is not None
        score = trainer.evaluate(
            trainer.agent,
            self.test_guide,
            self.test_data["inputs"],
            self.test_data["infos"],
            min_score=options.min_score,
            num_samples=options.num_test_samples,
            max_errors=options.max_errors,
            objective_config=options.objective_config,
        )
        self._test_metrics = score if isinstance(score, Mapping) else None
        score = scalar(score, options.objective_config)
        if self._test_metrics is not None:
            log_metrics(trainer.logger, {"Average test score": self._test_metrics}, trainer.n_iters)
        entry = {"step": trainer.n_iters, "score": score}
        if self._test_metrics is not None:
            entry["metrics"] = dict(self._test_metrics)
        trainer.test_scores.append(entry)
        trainer.logger.log_table(trainer.n_iters, {"Average test score": score})
        self._observe(score)
        return score

    def _observe(self, score: float | None) -> None:
        trainer = self.trainer
        if self.stop.observe(score) or trainer.best["parameters"] is None:
            trainer.best = {
                "score": score if is_score(score) else None,
                "parameters": get_paramset(trainer.agent),
                "iteration": trainer.n_iters,
            }

    def complete_step(
        self,
        *,
        train_score: float | None,
        feedback: Any = None,
        scores: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        observe: float | None = None,
    ) -> None:
        """Close a finished step: count, evaluate if due, log, record and checkpoint.

        `observe` is the score that drives best-so-far and patience when there is no test
        set (e.g. a validation score); `scores` are extra named scores for the record. The
        examples that failed since the last step go to the record's `info["failures"]`, and
        the step's evaluation-cache lookups (with the cache on) to `info["eval_cache"]`
        (`{"hits": ..., "misses": ...}`).
        """
        trainer, options = self.trainer, self.options
        trainer.n_iters += 1
        step = trainer.n_iters
        if trainer.loader is not None:
            trainer.n_epochs = trainer.loader.n_epochs
        if train_score is not None:
            trainer.train_scores.append(train_score)
        test_score = None
        if (
            self.test_data is not None
            and self.eval_frequency > 0
            and step % self.eval_frequency == 0
        ):
            test_score = self.evaluate_test()
        elif self.test_data is None and observe is not None:
            self._observe(observe)
        all_scores: dict[str, Any] = {"train": train_score}
        if test_score is not None:
            all_scores["test"] = test_score
            if self._test_metrics is not None:
                all_scores.update(split_scores({"test": self._test_metrics}))
        all_scores.update(split_scores(scores or {}, options.objective_config))
        usage, cache = self._step_usage()
        failures = trainer.errors.drain()  # the examples whose agent or guide raised
        info = {**(info or {}), **({"failures": failures} if failures else {})}
        if trainer.eval_cache is not None:
            info["eval_cache"] = cache
        entry = {"step": step, "epoch": trainer.n_epochs, "scores": all_scores, "usage": usage}
        trainer.history.append(entry)
        if step % self.log_frequency == 0:
            self._log_step(train_score)
            log_metrics(trainer.logger, scores or {}, step)
        if self.store is not None:
            self.store.record_step(
                step,
                parameters=to_jsonable(get_paramset(trainer.agent)),
                scores={k: _finite_or_none(v) for k, v in all_scores.items()},
                feedback=to_jsonable(feedback),
                usage=usage,
                info=to_jsonable({"epoch": trainer.n_epochs, **info}),
            )
        self._last_state = trainer.state_dict()
        if options.save_frequency is not None and step % options.save_frequency == 0:
            self._checkpoint()
            trainer.save_agent(options.save_path)
        elif self.store is not None and options.save_frequency is None:
            self._checkpoint()
        trainer.logger.advance(step)

    def _log_step(self, train_score: float | None) -> None:
        trainer = self.trainer
        step = trainer.n_iters
        trainer.logger.log("Instantaneous train score", train_score, step)
        trainer.logger.log("Average train score", safe_mean(trainer.train_scores), step)
        for path, value in get_paramset(trainer.agent).items():
            trainer.logger.log(f"Parameter: {path}", value, step, color="red")

    def _checkpoint(self) -> None:
        if self.store is None or self._last_state is None:
            return
        state = dict(self._last_state)
        state["stop"] = self.stop.state_dict()
        state["usage"] = self.usage
        state["errors"] = self.trainer.errors.errors
        self.store.save(state, iteration=state["n_iters"])

    def _result(self) -> TrainResult:
        trainer = self.trainer
        final = get_paramset(trainer.agent)
        best = trainer.best
        tests = trainer.test_scores
        return TrainResult(
            best_parameters=best["parameters"] if best["parameters"] is not None else final,
            best_score=best["score"],
            final_parameters=final,
            train_scores=list(trainer.train_scores),
            test_scores=copy.deepcopy(tests),
            final_test_score=tests[-1]["score"] if tests else None,
            history=copy.deepcopy(trainer.history),
            usage=self.usage,
            n_iters=trainer.n_iters,
            n_epochs=trainer.n_epochs,
            stopped=self.stopped or StopReason.COMPLETED,
            run_name=None if self.store is None else self.store.name,
            storage_url=None if self.store is None else self.store.url,
            save_path=self.options.save_path if self.options.save_frequency else None,
        )


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None
