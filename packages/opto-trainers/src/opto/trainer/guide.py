"""`opto.trainer.guide`: feedback oracles (implemented in `opto.trainers.guide`)."""

from opto.trainers.guide import AutoGuide as AutoGuide
from opto.trainers.guide import ExactMatchGuide as ExactMatchGuide
from opto.trainers.guide import FunctionGuide as FunctionGuide
from opto.trainers.guide import Guide as Guide
from opto.trainers.guide import LLMJudge as LLMJudge
from opto.trainers.guide import VerbalJudgeGuide as VerbalJudgeGuide
from opto.trainers.guide import exact_match_metric as exact_match_metric
