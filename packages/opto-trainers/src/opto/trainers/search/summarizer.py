"""`Summarizer`: condenses the rollouts of past candidates into advice for the optimizer.

Each `summarize(candidates)` call picks up to `max_candidates_in_prompt` candidates that
have scored rollouts and were not summarized before (with a seeded RNG, so a run and its
resumed twin pick alike), renders one successful and one failed rollout of each as
markdown (parameters, input, output, score(s) and feedback; a missing piece reads
"(none)"), and asks an LLM to merge the previous summary with these trajectories. The
reply must put the new summary in `<summary>...</summary>` (after its reasoning in
`<reasoning>...</reasoning>`); a reply without it raises `SummaryFormatError` and keeps
the previous summary. `state_dict()`/`load_state_dict()` carry the summary across a resume.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opto.utils.errors import OptoError

from .candidate import Candidate

__all__ = ["DEFAULT_SYSTEM_PROMPT", "DEFAULT_USER_PROMPT", "Summarizer", "SummaryFormatError"]

DEFAULT_SYSTEM_PROMPT = (
    "You analyse attempts at optimizing the parameters of an AI agent. Each attempt shows "
    "the parameter values, an input, the agent's output, its score and the feedback it "
    "received. Extract concrete, reusable advice: what made attempts succeed, what made "
    "them fail, and what to try next. Keep the advice short and specific."
)

DEFAULT_USER_PROMPT = """\
# Previous summary
{previous_summary}

# New attempts
{trajectories}

Merge the previous summary with what the new attempts show into one updated summary of \
advice for proposing better parameters. Reply in this format:
<reasoning>what the attempts show</reasoning>
<summary>the updated advice</summary>"""

_SUMMARY = re.compile(r"<summary>(.*?)</summary>", re.DOTALL | re.IGNORECASE)
_NONE = "(none)"


class SummaryFormatError(OptoError, ValueError):
    """The summarizer LLM's reply had no `<summary>...</summary>` block."""


def _show(value: Any, limit: int) -> str:
    if value is None:
        return _NONE
    text = value if isinstance(value, str) else repr(value)
    text = text.strip() or _NONE
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit} more characters)"
    return text


def render_rollout(
    paramset: Mapping[str, Any] | None, rollout: Mapping[str, Any] | None, limit: int = 2000
) -> str:
    """One rollout as markdown: parameters, input, output, result (missing: "(none)")."""
    lines = ["#### Parameters"]
    if paramset:
        lines += [f"- `{path}`: {_show(value, limit)}" for path, value in sorted(paramset.items())]
    else:
        lines.append(_NONE)
    rollout = rollout or {}
    lines += [
        "#### Input",
        _show(rollout.get("x"), limit),
        "#### Output",
        _show(rollout.get("output", rollout.get("error")), limit),
        "#### Result",
        f"- Score: {_show(rollout.get('score'), limit)}",
    ]
    metrics = rollout.get("score_dict")
    if metrics:
        shown = ", ".join(f"{name}={value:g}" for name, value in sorted(metrics.items()))
        lines.append(f"- Metrics: {shown}")
    lines.append(f"- Feedback: {_show(rollout.get('feedback'), limit)}")
    return "\n".join(lines)


class Summarizer:
    """Merges the trajectories of past candidates into a running summary of advice.

    Args:
        llm: the LLM asked (`llm(messages=[...])`, OpenAI-shaped reply); None: `LLM()`,
            the configured default, on first use.
        success_threshold: a rollout with a score above it is a success, any other a failure.
        max_candidates_in_prompt: at most this many new candidates per summary.
        current_summary: the summary to start from ("" for none).
        system_prompt, user_prompt_template: override the prompts; the template must
            contain `{previous_summary}` and `{trajectories}`.
        seed: seeds the choice of candidates and rollouts (per summary round).
        max_field_chars: longer values (outputs, feedback) are cut to this many characters.
    """

    def __init__(
        self,
        llm: Any = None,
        *,
        success_threshold: float = 0.0,
        max_candidates_in_prompt: int = 5,
        current_summary: str = "",
        system_prompt: str | None = None,
        user_prompt_template: str | None = None,
        seed: int = 0,
        max_field_chars: int = 2000,
    ) -> None:
        if isinstance(max_candidates_in_prompt, bool) or not (
            isinstance(max_candidates_in_prompt, int) and max_candidates_in_prompt >= 1
        ):
            raise ValueError(
                f"max_candidates_in_prompt must be an int >= 1, not {max_candidates_in_prompt!r}"
            )
        template = DEFAULT_USER_PROMPT if user_prompt_template is None else user_prompt_template
        missing = [k for k in ("{previous_summary}", "{trajectories}") if k not in template]
        if missing:
            raise ValueError(
                f"user_prompt_template lacks {' and '.join(missing)}: put them where the "
                "previous summary and the new attempts go"
            )
        self.llm = llm
        self.success_threshold = float(success_threshold)
        self.max_candidates_in_prompt = max_candidates_in_prompt
        self.summary = current_summary
        self.system_prompt = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.user_prompt_template = template
        self.seed = seed
        self.max_field_chars = max_field_chars
        self.summarized: set[str] = set()
        self.rounds = 0

    # -- choosing and rendering -------------------------------------------------------------

    def _rng(self) -> random.Random:
        return random.Random(f"opto-summarizer:{self.seed}:{self.rounds}")

    def select(self, candidates: Iterable[Candidate], rng: random.Random) -> list[Candidate]:
        """Up to `max_candidates_in_prompt` not-yet-summarized candidates with a score."""
        unique = {c.key: c for c in candidates if c.num_scored and c.key not in self.summarized}
        pool = sorted(unique.values(), key=lambda c: (c.created, c.key))
        if len(pool) <= self.max_candidates_in_prompt:
            return pool
        picked = rng.sample(range(len(pool)), self.max_candidates_in_prompt)
        return [pool[i] for i in sorted(picked)]

    def render(self, candidates: Sequence[Candidate], rng: random.Random) -> str:
        """The trajectories of `candidates`: one successful and one failed rollout each."""
        blocks = []
        for number, candidate in enumerate(candidates, start=1):
            good = [r for r in candidate.rollouts if self._success(r)]
            bad = [r for r in candidate.rollouts if not self._success(r)]
            blocks.append(f"## Candidate {number}")
            for title, rows in (("Successful rollout", good), ("Failed rollout", bad)):
                blocks.append(f"### {title}")
                if rows:
                    row = rows[rng.randrange(len(rows))]
                    blocks.append(render_rollout(candidate.paramset, row, self.max_field_chars))
                else:
                    blocks.append(_NONE)
        return "\n\n".join(blocks)

    def _success(self, rollout: Mapping[str, Any]) -> bool:
        score = rollout.get("score")
        try:
            return score is not None and float(score) > self.success_threshold
        except (TypeError, ValueError):
            return False

    def messages(self, trajectories: str) -> list[dict[str, str]]:
        """The chat messages that ask for the merged summary."""
        user = self.user_prompt_template.replace(
            "{previous_summary}", self.summary or _NONE
        ).replace("{trajectories}", trajectories)
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": user},
        ]

    @staticmethod
    def parse(reply: str | None) -> str:
        """The text of the (last) `<summary>` block; `SummaryFormatError` if there is none."""
        found = _SUMMARY.findall(reply or "")
        if not found:
            raise SummaryFormatError(
                f"the summarizer's reply has no <summary>...</summary> block: {reply!r:.200}; "
                "use a model that follows the format, or adapt user_prompt_template"
            )
        return str(found[-1]).strip()

    # -- one round --------------------------------------------------------------------------

    def summarize(self, candidates: Iterable[Candidate]) -> str:
        """Merge the trajectories of new candidates into the summary and return it.

        Without a new candidate with scored rollouts the summary is returned unchanged
        (no LLM call). On `SummaryFormatError` (or an LLM error) the summary is unchanged
        and the candidates stay unsummarized.
        """
        rng = self._rng()
        self.rounds += 1
        chosen = self.select(candidates, rng)
        if not chosen:
            return self.summary
        reply = self._llm()(messages=self.messages(self.render(chosen, rng)))
        self.summary = self.parse(reply.choices[0].message.content)
        self.summarized.update(c.key for c in chosen)
        return self.summary

    def _llm(self) -> Any:
        if self.llm is None:
            from opto.utils.llm import LLM

            self.llm = LLM()
        return self.llm

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the summary, the summarized candidates' keys, the round."""
        return {
            "summary": self.summary,
            "summarized": sorted(self.summarized),
            "rounds": self.rounds,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`."""
        self.summary = str(state["summary"])
        self.summarized = set(state["summarized"])
        self.rounds = int(state["rounds"])
