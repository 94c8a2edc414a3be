"""`EvalCache`: scoring results kept in run storage, so no search pays twice for one.

A scoring rollout (a candidate's parameters on one example, judged by a guide, keeping
no graph) is looked up before it runs and stored after it completes. Its key is the
SHA-256 of:

* the candidate's parameter values (`paramset_key`: canonical JSON, trainable code
  included);
* the example: its input and info as canonical JSON (`opto.utils.jsonable`: values JSON
  cannot hold become their `repr`, so an object whose repr shows its memory address
  never hits in a later process);
* the guide's identity (`Guide.cache_identity()`: by default its class and attributes;
  a guide whose identity is None is never cached, see `Guide.cache_identity`);
* what was asked (scores only, or score dicts too) and the sample number: the k-th
  evaluation of one candidate on one example within one batch (`repeats`,
  `num_samples`) is sample k, so repeated samples are kept apart.

Entries live in the storage's `opto_eval_cache` table under a scope naming the agent's
class and a digest of its other attributes (`agent_config`: e.g. the LLM it calls), plus
an optional namespace, shared by every run of that storage: a resumed run and a repeated
search with the same seed read back what was already evaluated. Only completed
evaluations are stored: output and feedback (as JSON data, `opto.utils.jsonable`), score
and score dict. A rollout whose agent or guide raised (an LLM error, a timeout...) or that
was skipped runs again next time. With an in-process executor each evaluation is stored
as soon as it finishes, so a batch cut short (`BudgetExceeded`, Ctrl-C, a kill) keeps
the finished ones; out of process (Ray) the driver stores a batch when it returns.

The cache treats an evaluation as reproducible: with an agent or judge that samples
(temperature > 0) and a search that means to re-draw on re-evaluation, turn it off
(`eval_cache=False`). Code outside the trainable parameters is not part of the key:
after changing it, clear the cache (`Storage.clear_cached_evaluations`) or pass a new
namespace (`eval_cache="v2"`).

Hits and misses are counted in the usage ledger (`opto.utils.usage.record_evaluations`),
so a run's usage shows `eval_cache_hits` / `eval_cache_misses` (and each step record's
`info["eval_cache"]` the step's); a hit makes no call, so it costs nothing and uses no
budget.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opto.trace.modules import Module
from opto.trace.nodes import Node, ParameterNode
from opto.utils.jsonable import jsonable
from opto.utils.storage import StorageError
from opto.utils.usage import record_evaluations

from .evaluation import Rollout
from .identity import Unidentifiable, describe, qualified_name
from .utils import ParamSet, paramset_key

__all__ = ["CACHE_FORMAT", "EvalCache", "Keep", "agent_config", "agent_scope", "is_cacheable"]

logger = logging.getLogger(__name__)

#: `keep(i, record)`: store evaluation i's record as soon as it completes (returns it).
Keep = Callable[[int, Rollout], Rollout]

#: Part of every key: raising it invalidates entries written by an older layout.
CACHE_FORMAT = 1


def agent_scope(agent: Module, namespace: str | None = None) -> str:
    """The cache scope of `agent`'s evaluations: its class, a digest of its configuration
    (`agent_config`), and `namespace` if given."""
    digest = hashlib.sha256(_canonical(agent_config(agent)).encode()).hexdigest()[:16]
    scope = f"{qualified_name(type(agent))}#{digest}"
    return scope if namespace is None else f"{scope}:{namespace}"


def agent_config(agent: Module, _depth: int = 0) -> dict[str, Any]:
    """What identifies an agent besides its trainable values: its attributes that are not
    trainable parameters (sub-modules by their own configuration, other nodes by their
    data), as `identity.describe` sees them; one without a stable identity counts by its
    type. So two agents of one class built differently (e.g. on other LLMs) never share
    cached evaluations."""
    config: dict[str, Any] = {}
    for name, value in sorted(vars(agent).items()):
        if isinstance(value, ParameterNode):
            continue  # part of every key
        if isinstance(value, Module) and _depth < 10:
            config[name] = {
                "module": qualified_name(type(value)),
                "config": agent_config(value, _depth + 1),
            }
            continue
        if isinstance(value, Node):
            value = value.data
        try:
            config[name] = describe(value)
        except Unidentifiable:
            config[name] = {"type": qualified_name(type(value))}
    return config


def is_cacheable(record: Rollout) -> bool:
    """Whether a rollout is a completed evaluation (scored, nothing raised)."""
    if record.error_kind is not None or record.exception is not None:
        return False
    return record.score is not None or record.score_dict is not None


def _canonical(value: Any) -> str:
    return json.dumps(jsonable(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _digest(identity: str, params: str, x: str, info: str, mode: str, sample: int) -> str:
    text = "\n".join(
        [f"opto-eval-cache/{CACHE_FORMAT}", identity, params, x, info, mode, str(sample)]
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _entry(record: Rollout) -> dict[str, Any]:
    return {
        "output": jsonable(record.output),
        "score": dict(record.score) if isinstance(record.score, Mapping) else record.score,
        "score_dict": record.score_dict,
        "feedback": jsonable(record.feedback),
    }


def _hit(entry: Mapping[str, Any], x: Any, info: Any) -> Rollout:
    return Rollout(
        x=x,
        info=info,
        output=entry.get("output"),
        score=entry.get("score"),
        feedback=entry.get("feedback"),
        score_dict=entry.get("score_dict"),
    )


class EvalCache:
    """Evaluation results of one agent class in a run storage (see the module docstring).

    Thread-safe: lookups and stores are storage transactions; `hits` and `misses` count
    this object's lookups. A storage that fails is logged and treated as a miss (the
    evaluation runs), never as an error of the run.

    Args:
        storage: an open `opto.utils.storage.Storage` (writable).
        scope: the scope of the entries (`agent_scope(agent)`).
    """

    def __init__(self, storage: Any, scope: str) -> None:
        self.storage = storage
        self.scope = scope
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._told: set[str] = set()
        self._pending: dict[str, Any] = {}  # kept entries not yet written (see `_keep`)
        self._flushing = False

    def __repr__(self) -> str:
        return f"EvalCache({self.storage!r}, scope={self.scope!r})"

    def identity(self, guide: Any) -> str | None:
        """The guide's identity as canonical JSON, or None when it is not cacheable."""
        method = getattr(guide, "cache_identity", None)
        identity = None
        reason = "it has no cache_identity() method"
        if callable(method):
            try:
                identity = method()
                reason = "its cache_identity() is None"
            except Exception as exc:  # a broken override: do not cache, do not fail the run
                reason = f"its cache_identity() raised {type(exc).__name__}: {exc}"
        if identity is None:
            name = qualified_name(type(guide))
            with self._lock:
                told = name in self._told
                self._told.add(name)
            if not told:
                logger.info(
                    "evaluations judged by %s are not cached: %s (override "
                    "Guide.cache_identity() to make it cacheable)",
                    name,
                    reason,
                )
            return None
        return _canonical({"class": qualified_name(type(guide)), "identity": identity})

    def run(
        self,
        guides: Sequence[Any],
        paramsets: Sequence[ParamSet],
        xs: Sequence[Any],
        infos: Sequence[Any],
        compute: Callable[[list[int], Keep], list[Rollout]],
        *,
        score_dicts: bool,
    ) -> list[Rollout]:
        """Evaluation i is `paramsets[i]` on `(xs[i], infos[i])` judged by `guides[i]`.

        Cached ones are read back; `compute(indices, keep)` runs the others and returns
        one record per index, in order. An in-process `compute` calls `keep(i, record)`
        in each task as it finishes, so a completed evaluation is stored at once (a run
        killed mid-batch keeps it); the records it did not keep are stored at the end.
        """
        n = len(xs)
        keys = self._keys(guides, paramsets, xs, infos, "score_dicts" if score_dicts else "scores")
        found = self._lookup([k for k in keys if k is not None])
        todo = [i for i, k in enumerate(keys) if k is None or k not in found]
        kept: set[int] = set()

        def keep(i: int, record: Rollout) -> Rollout:
            key = keys[i]
            if key is not None and is_cacheable(record):
                with self._lock:
                    kept.add(i)
                self._keep(key, _entry(record))
            return record

        computed = compute(todo, keep) if todo else []
        if len(computed) != len(todo):
            raise RuntimeError(f"compute returned {len(computed)} records for {len(todo)} items")
        results: list[Rollout | None] = [None] * n
        fresh: dict[str, Any] = {}
        for i, record in zip(todo, computed):
            results[i] = record
            key = keys[i]
            if key is not None and i not in kept and is_cacheable(record):
                fresh[key] = _entry(record)
        self._store(fresh)
        self._flush()  # whatever is still pending (normally nothing)
        for i, key in enumerate(keys):
            if results[i] is None:
                assert key is not None
                results[i] = _hit(found[key], xs[i], infos[i])
        hits = n - len(todo)
        misses = sum(keys[i] is not None for i in todo)
        with self._lock:
            self.hits += hits
            self.misses += misses
        record_evaluations(hits=hits, misses=misses)
        return results  # type: ignore[return-value]

    def _keys(
        self,
        guides: Sequence[Any],
        paramsets: Sequence[ParamSet],
        xs: Sequence[Any],
        infos: Sequence[Any],
        mode: str,
    ) -> list[str | None]:
        """Each evaluation's key (None: its guide is not cacheable); the k-th repeat of one
        evaluation in the batch is sample k."""
        identities: dict[int, str | None] = {}
        params: dict[int, str] = {}  # a batch repeats few parameter sets many times
        keys: list[str | None] = []
        seen: dict[str, int] = {}
        for guide, paramset, x, info in zip(guides, paramsets, xs, infos):
            if id(guide) not in identities:
                identities[id(guide)] = self.identity(guide)
            identity = identities[id(guide)]
            if identity is None:
                keys.append(None)
                continue
            if id(paramset) not in params:
                params[id(paramset)] = paramset_key(paramset)
            parts = (identity, params[id(paramset)], _canonical(x), _canonical(info), mode)
            key = _digest(*parts, 0)
            sample = seen.get(key, 0)
            seen[key] = sample + 1
            keys.append(_digest(*parts, sample) if sample else key)
        return keys

    def _keep(self, key: str, entry: dict[str, Any]) -> None:
        """Store one finished evaluation now, grouped with those other threads keep
        meanwhile (group commit, see `_flush`)."""
        with self._lock:
            self._pending[key] = entry
        self._flush()

    def _flush(self) -> None:
        """Write the pending entries: the first thread to get here writes all of them in
        one transaction, and again until none is left; a thread arriving meanwhile leaves
        its entry to it (one transaction per batch of finished evaluations, not one each)."""
        with self._lock:
            if self._flushing:
                return
            self._flushing = True
        try:
            while True:
                with self._lock:
                    batch, self._pending = self._pending, {}
                    if not batch:
                        self._flushing = False
                        return
                self._store(batch)
        except BaseException:
            with self._lock:
                self._flushing = False
            raise

    def _lookup(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        try:
            return self.storage.get_cached_evaluations(self.scope, keys)
        except StorageError as exc:
            logger.warning("evaluation cache lookup failed (%s); evaluating instead", exc)
            return {}

    def _store(self, entries: dict[str, Any]) -> None:
        if not entries:
            return
        try:
            self.storage.put_cached_evaluations(self.scope, entries)
        except StorageError as exc:
            logger.warning("could not store %d evaluations in the cache: %s", len(entries), exc)
