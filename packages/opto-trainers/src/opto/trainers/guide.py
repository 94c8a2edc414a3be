"""Guides: the feedback oracles that score an agent's output and say how to improve it.

A guide answers `get_feedback(query, response, reference, **kw) -> (score, feedback)`;
trainers call it as `guide(x, output_data, info)`. Provided: `ExactMatchGuide`,
`FunctionGuide` (adapts a plain function) and `LLMJudge` (an LLM as judge, on any
opto.utils LLM). `AutoGuide` and `VerbalJudgeGuide` are the reference's older names.
"""

from __future__ import annotations

import copy
import logging
import numbers
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from opto.utils.errors import OptoError

__all__ = [
    "AutoGuide",
    "ExactMatchGuide",
    "FunctionGuide",
    "Guide",
    "GuideError",
    "LLMJudge",
    "VerbalJudgeGuide",
    "build_guide",
    "check_guide",
    "exact_match_metric",
]

logger = logging.getLogger(__name__)


class GuideError(OptoError, ValueError):
    """A guide was used wrongly or returned something that is not `(score, feedback)`."""


class Guide:
    """Base class of feedback oracles.

    Subclasses implement `get_feedback` (or override `forward`); `metric` defaults to the
    score of `get_feedback` and may be overridden with something cheaper (evaluation uses
    `metric` only when it is overridden, otherwise one `get_feedback` call gives both).
    """

    def __call__(
        self, task: Any, response: Any, info: Any = None, **kwargs: Any
    ) -> tuple[Any, Any]:
        """Score `response` to `task` given `info`: delegates to `forward`."""
        return self.forward(task, response, info, **kwargs)

    def forward(self, task: Any, response: Any, info: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        """Delegates to `get_feedback`; override to change how a call is answered."""
        return self.get_feedback(task, response, info, **kwargs)

    def get_feedback(
        self, query: Any, response: Any, reference: Any = None, **kwargs: Any
    ) -> tuple[Any, Any]:
        """Return `(score, feedback)` for `response` to `query` (abstract)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_feedback(query, response, reference) "
            "-> (score, feedback), or override forward"
        )

    def metric(self, query: Any, response: Any, reference: Any = None, **kwargs: Any) -> Any:
        """The score alone (by default the score of `get_feedback`)."""
        return self.forward(query, response, reference, **kwargs)[0]

    def get_score_dict(
        self, query: Any, response: Any, reference: Any = None, **kwargs: Any
    ) -> dict[str, float]:
        """Scores by name: `{"score": score}`, or the score itself when it is a dict.

        Override it to report several metrics (e.g. `{"accuracy": ..., "cost": ...}`) that
        trainers given an `objective_config` compare; see `opto.trainers.objectives`.
        """
        score = self.metric(query, response, reference, **kwargs)
        if isinstance(score, Mapping):
            if not score:
                raise GuideError(f"{type(self).__name__} returned an empty score dict")
            return {str(k): _metric_value(self, k, v) for k, v in score.items()}
        return {"score": _metric_value(self, "score", score)}

    def cache_identity(self) -> Any:
        """What identifies this guide's verdicts in the evaluation cache; None: never cache.

        Guides with equal identities must judge every output alike, so a result cached
        for one answers the other (in later runs too). The default is the guide's class
        and attributes (`opto.trainers.identity.describe`: data, LLMs by model name and
        options, functions by code and captured values), so changing the configuration
        misses the cache; it is None when an attribute has no stable identity (e.g. a
        client object). Override to return JSON-able data (e.g. `"my-judge-v2"`) to make
        such a guide cacheable, or None to opt out (a judge that must be asked afresh).
        """
        from .identity import Unidentifiable, describe, qualified_name

        try:
            return {"guide": qualified_name(type(self)), "state": describe(dict(vars(self)))}
        except Unidentifiable as exc:
            logger.debug("%s has no cache identity: %s", type(self).__name__, exc)
            return None

    def copy(self) -> Guide:
        """An independent deep copy (parallel rollouts each get one) sharing LLM clients.

        Attributes holding an opto LLM are shared, not copied: clients are thread-safe and
        hold connections, caches and scripted replies.
        """
        from opto.utils.llm.base import AbstractModel

        memo = {id(v): v for v in vars(self).values() if isinstance(v, AbstractModel)}
        return copy.deepcopy(self, memo)

    def save(self, path: str | Path) -> None:
        """Pickle the guide's attributes to `path` (load only files you trust)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(self.__dict__))

    def load(self, path: str | Path) -> None:
        """Restore attributes saved by `save` (unpickles: only load files you trust)."""
        self.__dict__.update(pickle.loads(Path(path).read_bytes()))


def _metric_value(guide: Guide, name: Any, value: Any) -> float:
    if isinstance(value, numbers.Real):
        return float(value)
    raise GuideError(
        f"{type(guide).__name__} scored the metric {name!r} as {value!r:.80}; a score must be "
        "a number (or a dict of numbers)"
    )


#: The reference's original name of `Guide`.
AutoGuide = Guide


def check_guide(guide: Any, name: str) -> None:
    """Raise a clear TypeError when `guide` (the argument `name`) is not a `Guide`."""
    if isinstance(guide, Guide):
        return
    hint = (
        "; wrap a scoring function as FunctionGuide(fn) (from opto.trainers)"
        if callable(guide)
        else ""
    )
    raise TypeError(f"{name} must be an opto.trainers Guide, not {type(guide).__name__}{hint}")


def exact_match_metric(question: Any, student_answer: Any, info: Any) -> float:
    """1.0 if the answer equals the reference `info`, else 0.0 (a plain function)."""
    return float(student_answer == info)


class ExactMatchGuide(Guide):
    """Score 1.0 when the response equals the reference, else 0.0.

    With `normalize=True` both sides are compared as stripped, case-folded strings.
    """

    def __init__(self, normalize: bool = False) -> None:
        self.normalize = normalize

    def _same(self, response: Any, reference: Any) -> bool:
        if self.normalize:
            return str(response).strip().casefold() == str(reference).strip().casefold()
        return bool(response == reference)

    def get_feedback(
        self, query: Any, response: Any, reference: Any = None, **kwargs: Any
    ) -> tuple[float, str]:
        if self._same(response, reference):
            return 1.0, "Correct."
        return (
            0.0,
            f"Incorrect. The expected answer is {reference!r}, but the output was {response!r}.",
        )

    def metric(self, query: Any, response: Any, reference: Any = None, **kwargs: Any) -> float:
        return 1.0 if self._same(response, reference) else 0.0


class FunctionGuide(Guide):
    """Adapt a function `fn(query, response, reference)` into a guide.

    The function may return `(score, feedback)`, or just a score (a number or bool), in
    which case the feedback is `"Correct."` for a score of at least `pass_score` and
    `"Incorrect."` otherwise.
    """

    def __init__(self, fn: Callable[..., Any], pass_score: float = 1.0) -> None:
        if not callable(fn):
            raise GuideError(f"FunctionGuide needs a callable, not {type(fn).__name__}")
        self.fn = fn
        self.pass_score = pass_score

    def get_feedback(
        self, query: Any, response: Any, reference: Any = None, **kwargs: Any
    ) -> tuple[Any, Any]:
        result = self.fn(query, response, reference, **kwargs)
        if isinstance(result, tuple):
            if len(result) != 2:
                raise GuideError(
                    f"{self.fn!r} returned a {len(result)}-tuple; return (score, feedback) "
                    "or a bare score"
                )
            return result
        if isinstance(result, (bool, numbers.Real)):
            score = float(result)
            return score, "Correct." if score >= self.pass_score else "Incorrect."
        raise GuideError(
            f"{self.fn!r} returned {type(result).__name__}; return (score, feedback) or a number"
        )


class LLMJudge(Guide):
    """An LLM grades the response against the reference.

    The judge is asked to reason, then answer with `correctness_template` (default
    "Correct [TERMINATE]") when the response is right, or "Incorrect" plus actionable
    feedback. Score 1.0 iff the reply contains `correctness_template`. The feedback is the
    raw reply, or a formatted block (query, response, reference, reply) with
    `use_formatted_response=True`. Prompts are class attributes: subclass to change them.

    Args:
        model: model name for `opto.utils.llm.LLM(model)` when no `llm` is given.
        llm: any opto LLM (a callable taking `messages=` and returning an OpenAI-shaped
            response), created lazily from `model` when omitted.
        prompt_template: user prompt with `{query}`, `{response}`, `{reference}` and
            `{correctness_template}` fields.
        system_prompt: the judge's system prompt.
        correctness_template: the verdict text that marks a correct response.
    """

    DEFAULT_SYSTEM_PROMPT = "You are a strict but helpful grader of answers to questions."
    DEFAULT_PROMPT_TEMPLATE = (
        "Question:\n{query}\n\nStudent answer:\n{response}\n\nCorrect answer:\n{reference}\n\n"
        "Reason step by step about whether the student answer is correct. If it is, end your "
        "reply with exactly: {correctness_template}\n"
        "If it is not, say 'Incorrect' and give specific, actionable feedback on how to fix "
        "the answer, without revealing the correct answer outright."
    )
    DEFAULT_CORRECTNESS_TEMPLATE = "Correct [TERMINATE]"
    FORMATTED_RESPONSE = (
        "Query: {query}\n\nStudent answer: {response}\n\nReference: {reference}\n\n"
        "--------------------\n\nExpert feedback: {reply}"
    )

    def __init__(
        self,
        model: str | None = None,
        llm: Any = None,
        prompt_template: str | None = None,
        system_prompt: str | None = None,
        correctness_template: str | None = None,
        use_formatted_response: bool = False,
    ) -> None:
        self.model = model
        self._llm = llm
        self.prompt_template = prompt_template or self.DEFAULT_PROMPT_TEMPLATE
        self.system_prompt = system_prompt or self.DEFAULT_SYSTEM_PROMPT
        self.correctness_template = correctness_template or self.DEFAULT_CORRECTNESS_TEMPLATE
        self.use_formatted_response = use_formatted_response

    @property
    def llm(self) -> Any:
        """The judge LLM: the one given, else `LLM(model)`, else the default LLM (`LLM()`,
        which honours `opto.utils.llm.configure(llm=...)`), built on first use."""
        if self._llm is None:
            from opto.utils.llm import LLM, LLMConfigurationError

            if self.model is not None:
                self._llm = LLM(self.model)
            else:
                try:
                    self._llm = LLM()
                except LLMConfigurationError as exc:
                    msg = (
                        f"{type(self).__name__} (the default guide of train()) needs an LLM to "
                        "grade answers: pass guide_kwargs={'llm': ...} or {'model': ...}, "
                        "another guide (e.g. guide=ExactMatchGuide()), or configure a default "
                        f"LLM.\n{exc}"
                    )
                    raise LLMConfigurationError(msg) from exc
        return self._llm

    def cache_identity(self) -> Any:
        """The default identity, with the judge LLM resolved first (so it names the model
        that grades, not "the default LLM"); None when no LLM can be built."""
        from opto.utils.llm import LLMConfigurationError

        try:
            _ = self.llm
        except LLMConfigurationError:
            return None
        return super().cache_identity()

    def copy(self) -> LLMJudge:
        """A copy that shares the LLM client (clients are thread-safe and hold connections)."""
        memo = {} if self._llm is None else {id(self._llm): self._llm}
        return copy.deepcopy(self, memo)

    def get_feedback(
        self, query: Any, response: Any, reference: Any = None, **kwargs: Any
    ) -> tuple[float, str]:
        if reference is None:
            raise GuideError(
                "LLMJudge needs a reference answer (the example's info) to grade against; "
                "give every example an info, or use another guide"
            )
        prompt = self.prompt_template.format(
            query=query,
            response=response,
            reference=reference,
            correctness_template=self.correctness_template,
        )
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": prompt},
        ]
        reply = _reply_text(self.llm(messages=messages, **kwargs))
        score = 1.0 if self.correctness_template in reply else 0.0
        if self.use_formatted_response:
            reply = self.FORMATTED_RESPONSE.format(
                query=query, response=response, reference=reference, reply=reply
            )
        return score, reply


def build_guide(guide: Any, kwargs: Mapping[str, Any] | None = None) -> Any:
    """`guide(**kwargs)` for a class, else `guide` itself; an `LLMJudge`'s LLM is resolved
    at once, so that a missing LLM fails before any training step, naming the fix."""
    built = guide(**(kwargs or {})) if isinstance(guide, type) else guide
    if isinstance(built, LLMJudge):
        _ = built.llm
    return built


class VerbalJudgeGuide(LLMJudge):
    """The reference's older judge: always returns the formatted feedback block."""

    def __init__(self, *args: Any, use_formatted_response: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, use_formatted_response=use_formatted_response, **kwargs)


def _reply_text(response: Any) -> str:
    """The text of an OpenAI-shaped response, or the response itself if it is a string."""
    if isinstance(response, str):
        return response
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        raise GuideError(
            f"the judge LLM returned {type(response).__name__}, not an OpenAI-shaped response "
            "(.choices[0].message.content) or a string"
        ) from None
    return "" if content is None else str(content)
