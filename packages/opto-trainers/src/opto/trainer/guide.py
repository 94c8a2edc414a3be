"""`opto.trainer.guide`: feedback oracles (implemented in `opto.trainers.guide`)."""

from opto.trainers.guide import (
    AutoGuide,
    ExactMatchGuide,
    FunctionGuide,
    Guide,
    LLMJudge,
    VerbalJudgeGuide,
    exact_match_metric,
)

__all__ = [
    "AutoGuide",
    "ExactMatchGuide",
    "FunctionGuide",
    "Guide",
    "LLMJudge",
    "VerbalJudgeGuide",
    "exact_match_metric",
]
