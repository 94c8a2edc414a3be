"""`POLCA`: `PrioritySearch` with an epsilon-net over candidates and a rollout summarizer.

* **Epsilon-net.** Every new proposal's parameter text (`path: value` lines, sorted by
  path) is embedded (`opto.utils.llm.embed`; the vector is cached on the candidate and in
  its checkpoint) and scaled to unit length. Proposals are then admitted greedily,
  farthest first: the proposal whose Euclidean (L2) distance to its nearest neighbour
  among the memory, this iteration's explorers and the proposals already admitted is
  largest joins, as long as that distance exceeds `epsilon`. The rest are near-duplicates
  and are dropped before validation, so they cost no metric calls. On unit vectors
  L2 = sqrt(2 - 2 cos), so `epsilon=0.1` keeps proposals with cosine similarity below
  0.995 to everything known; `epsilon=0` disables the filter (and embeds nothing).
* **Summarizer** (`use_summarizer=True`). Candidates keep their full rollouts; before each
  iteration's proposals a `Summarizer` merges trajectories of new candidates into a
  running summary, which every explorer's optimizer receives with its feedback (the
  exploration job's `context`). A malformed summary reply is logged and the previous
  summary kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from opto.utils.errors import OptoError
from opto.utils.llm.embeddings import get_embedder, unit_vector
from opto.utils.llm.errors import LLMError

from ..algorithms.priority_search import PrioritySearch, PrioritySearchOptions
from ..guide import Guide
from ..options import positive_int
from ..utils import to_jsonable
from .candidate import Candidate
from .summarizer import Summarizer, SummaryFormatError

__all__ = ["POLCA", "EmbeddingShapeError", "POLCAOptions", "epsilon_net", "parameter_text"]

logger = logging.getLogger(__name__)

#: The heading of the summary in the optimizer's feedback.
SUMMARY_HEADING = "--- Summary of past attempts ---"


class EmbeddingShapeError(OptoError, ValueError):
    """The embedding model did not return one vector of one fixed length per text."""


def _epsilon(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"epsilon must be a finite number >= 0, not {value!r}; pass e.g. epsilon=0.1 "
            "(0 disables the epsilon-net)"
        )


def _embedding_model(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str) and not callable(value):
        raise TypeError(
            f"embedding_model must be a model id (e.g. 'openai/text-embedding-3-small' or "
            f"'ngram'), a callable texts -> vectors, or None, not {type(value).__name__}"
        )


@attrs.frozen(kw_only=True)
class POLCAOptions(PrioritySearchOptions):
    """`POLCA.train`'s keywords: `PrioritySearchOptions` plus the epsilon-net and summarizer.

    `epsilon` (0.1; 0 disables the net), `embedding_model` (a model id for
    `opto.utils.llm.embed`, `"ngram"`, or a callable texts -> vectors; None:
    `OPTO_EMBEDDING_MODEL`, else the offline n-gram vectorizer), `use_summarizer` (False),
    `summarizer` (a `Summarizer` to use instead of the default one), `summarizer_llm`
    (the summarizer's LLM; default: the first optimizer's `llm`, else `LLM()`),
    `max_candidates_in_prompt` (5) and `success_threshold` (0.0) of the default summarizer.
    """

    epsilon: float = attrs.field(default=0.1, validator=_epsilon)
    embedding_model: str | Callable[[Sequence[str]], list[list[float]]] | None = attrs.field(
        default=None, validator=_embedding_model
    )
    use_summarizer: bool = False
    summarizer: Summarizer | None = None
    summarizer_llm: Any = None
    max_candidates_in_prompt: int = attrs.field(default=5, validator=positive_int)
    success_threshold: float = 0.0

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if not self.use_summarizer and (
            self.summarizer is not None or self.summarizer_llm is not None
        ):
            raise ValueError(
                "summarizer/summarizer_llm are set but use_summarizer is False; pass "
                "use_summarizer=True to summarize past rollouts"
            )
        if self.summarizer is not None and not isinstance(self.summarizer, Summarizer):
            raise TypeError(
                f"summarizer must be a Summarizer, not {type(self.summarizer).__name__}"
            )


def parameter_text(paramset: Mapping[str, Any]) -> str:
    """The text a candidate is embedded by: `path: value` lines, sorted by path."""
    return "\n".join(f"{path}: {value}" for path, value in sorted(paramset.items()))


def _vector(candidate: Candidate) -> list[float]:
    if candidate.embedding is None:
        raise ValueError(f"{candidate!r} has no embedding; embed the candidates first")
    return candidate.embedding


def epsilon_net(
    new: Sequence[Candidate], known: Sequence[Candidate], epsilon: float
) -> list[Candidate]:
    """The members of `new` admitted farthest-first while their L2 distance to the nearest
    of `known` and of those already admitted exceeds `epsilon` (in `new`'s order; ties go
    to the earlier one). Every candidate must carry an `embedding`."""
    points = [_vector(c) for c in new]
    references = [_vector(k) for k in known]
    nearest = [min((math.dist(p, r) for r in references), default=math.inf) for p in points]
    remaining = list(range(len(new)))
    chosen: list[int] = []
    while remaining:
        best = max(remaining, key=lambda i: (nearest[i], -i))
        if nearest[best] <= epsilon:
            break
        chosen.append(best)
        remaining.remove(best)
        for i in remaining:
            nearest[i] = min(nearest[i], math.dist(points[i], points[best]))
    return [new[i] for i in sorted(chosen)]


class POLCA(PrioritySearch):
    """Priority search that drops near-duplicate proposals (an epsilon-net over parameter
    embeddings) and can steer its optimizers with a summary of past rollouts.

    Takes `PrioritySearch`'s arguments; `train` takes `POLCAOptions` (`epsilon`,
    `embedding_model`, `use_summarizer`, ...). The constructor also
    takes `epsilon`, `embedding_model`, `use_summarizer`, `summarizer` and `summarizer_llm`
    (the defaults of `train`). See the module docstring for the net's
    distance and the summarizer's path into the optimizers' feedback.
    """

    options_class = POLCAOptions

    #: `train` keywords the constructor also takes (as the defaults of every `train` call).
    INIT_OPTIONS = ("epsilon", "embedding_model", "use_summarizer", "summarizer", "summarizer_llm")

    def __init__(
        self,
        agent: Any,
        optimizer: Any = None,
        num_threads: int | None = None,
        logger: Any = None,
        *,
        executor: Any = None,
        seed: int | None = None,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - set(self.INIT_OPTIONS))
        if unknown:
            raise TypeError(
                f"POLCA() got unexpected keyword arguments {unknown}: the constructor takes "
                f"{', '.join(self.INIT_OPTIONS)}; pass other options to train()"
            )
        POLCAOptions(**options)  # fail now on a bad value, not at train()
        super().__init__(agent, optimizer, num_threads, logger, executor=executor, seed=seed)
        self.init_options = options

    def train(self, guide: Guide, train_dataset: Any, **kwargs: Any) -> Any:
        """`PrioritySearch.train` with `POLCAOptions`; keywords given to the constructor are
        the defaults, keywords given here win."""
        return super().train(guide, train_dataset, **{**self.init_options, **kwargs})

    def _configure(self, guide: Guide, train_dataset: Any, options: PrioritySearchOptions) -> None:
        super()._configure(guide, train_dataset, options)
        assert isinstance(options, POLCAOptions)
        self.epsilon = float(options.epsilon)
        self.embedder = get_embedder(options.embedding_model) if self.epsilon > 0 else None
        self.summarizer: Summarizer | None = None
        if options.use_summarizer:
            self.long_term_memory.processing_fun = None  # the summarizer reads full rollouts
            self.summarizer = options.summarizer or Summarizer(
                options.summarizer_llm or getattr(self.optimizer, "llm", None),
                success_threshold=options.success_threshold,
                max_candidates_in_prompt=options.max_candidates_in_prompt,
                seed=0 if self.seed is None else self.seed,
            )
        model = None
        if self.embedder is not None:
            model = getattr(self.embedder, "model_name", type(self.embedder).__name__)
        self._config.update(
            epsilon=self.epsilon, embedding_model=model, use_summarizer=options.use_summarizer
        )

    def _known(self, explorers: Sequence[Candidate]) -> list[Candidate]:
        """Every candidate in memory and the explorers (each once)."""
        pool = [c for m in (self.long_term_memory, self.short_term_memory) for c in m]
        return list({id(c): c for c in [*pool, *explorers]}.values())

    def _embed(self, candidates: Sequence[Candidate]) -> None:
        """Give every candidate without one its unit-length embedding (one call)."""
        missing = [c for c in candidates if c.embedding is None]
        if not missing or self.embedder is None:
            return
        texts = list(dict.fromkeys(parameter_text(c.paramset) for c in missing))
        vectors = self.embedder(texts)
        known = {len(c.embedding) for c in candidates if c.embedding is not None}
        if len(vectors) != len(texts) or len({len(v) for v in vectors} | known) > 1:
            raise EmbeddingShapeError(
                f"the embedding model returned {len(vectors)} vectors (of lengths "
                f"{sorted({len(v) for v in vectors})}) for {len(texts)} texts, next to stored "
                f"vectors of lengths {sorted(known)}; it must return one vector of one fixed "
                "length per text (resume with the embedding_model the run started with)"
            )
        by_text = {text: unit_vector(vector) for text, vector in zip(texts, vectors)}
        for candidate in missing:
            candidate.embedding = by_text[parameter_text(candidate.paramset)]

    def filter_candidates(
        self, proposals: list[Candidate], explorers: list[Candidate]
    ) -> list[Candidate]:
        """The proposals of an epsilon-net around everything known (all when epsilon=0)."""
        if self.embedder is None or not proposals:
            return proposals
        known = self._known(explorers)
        self._embed([*known, *proposals])
        kept = epsilon_net(proposals, known, self.epsilon)
        dropped = len(proposals) - len(kept)
        if dropped:
            logger.info("epsilon-net dropped %d of %d proposals", dropped, len(proposals))
        self.logger.log("Update/num_dropped_by_epsilon_net", dropped, self.n_iters + 1)
        return kept

    def exploration_context(self, explorers: list[Candidate]) -> str | None:
        """The summary of past rollouts (when summarizing), under a heading."""
        if self.summarizer is None:
            return None
        try:
            summary = self.summarizer.summarize(self._known(explorers))
        except (SummaryFormatError, LLMError) as exc:
            logger.warning(
                "summarizer failed (%s: %s); keeping the previous summary", type(exc).__name__, exc
            )
            summary = self.summarizer.summary
        return f"\n\n{SUMMARY_HEADING}\n{summary}" if summary else None

    # -- checkpoints ------------------------------------------------------------------------

    def _algorithm_state(self) -> Any:
        state = super()._algorithm_state()
        summarizer = getattr(self, "summarizer", None)
        if summarizer is not None:
            # Full rollouts of the candidates the summarizer has yet to read (checkpoints
            # otherwise keep scores only).
            state["summarizer"] = summarizer.state_dict()
            state["pending_rollouts"] = {
                name: [
                    None if c.key in summarizer.summarized else to_jsonable(c.rollouts)
                    for c in memory
                ]
                for name, memory in self._named_memories()
            }
        return state

    def _load_algorithm_state(self, state: Any) -> None:
        super()._load_algorithm_state(state)
        if state is None or self.summarizer is None or "summarizer" not in state:
            return
        self.summarizer.load_state_dict(state["summarizer"])
        for name, memory in self._named_memories():
            for candidate, rows in zip(memory, state["pending_rollouts"][name]):
                if rows is not None:
                    candidate.rollouts = [dict(r) for r in rows]

    def _named_memories(self) -> list[tuple[str, Any]]:
        return [
            ("long_term_memory", self.long_term_memory),
            ("short_term_memory", self.short_term_memory),
        ]
