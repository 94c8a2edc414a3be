"""opto.trainers — training loops and search over datasets for opto agents.

One trainer API (`Trainer`, alias `AlgorithmBase`; every `train` returns a `TrainResult`),
the algorithms (`MinibatchAlgorithm`, `BasicSearchAlgorithm`, `BeamSearch`, `UCBSearch`,
`PrioritySearch`, `POLCA` with its `Summarizer`), data (`DataLoader`), guides (`Guide`/`AutoGuide`, `ExactMatchGuide`,
`FunctionGuide`, `LLMJudge`), `evaluate`/`evaluate_vector`, `Sampler`, `batch_run`/
`async_run`, executors (serial, threads, asyncio, Ray), loggers and stop conditions. Checkpoints and step records go to opto.utils run storage.
Names are imported on first access, so `import opto.trainers` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opto.utils.lazy import init_package

if TYPE_CHECKING:
    from opto.trainers.algorithms import (
        AlgorithmBase,
        BasicSearchAlgorithm,
        BeamSearch,
        BeamSearchHistory,
        GEPAAlgorithmBase,
        GEPABeamPareto,
        GEPAUCBSearch,
        Minibatch,
        MinibatchAlgorithm,
        ParetobasedPS,
        PrioritySearch,
        SequentialSearch,
        SequentialUpdate,
        StreamingPrioritySearch,
        Trainer,
        TrainOptions,
        TrainResult,
        UCBSearch,
        UCBSearchAlgorithm,
        train,
    )
    from opto.trainers.evaluation import Rollout, TooManyErrorsError, evaluate
    from opto.trainers.executors import AsyncioExecutor, Executor, SerialExecutor, ThreadExecutor
    from opto.trainers.guide import (
        AutoGuide,
        ExactMatchGuide,
        FunctionGuide,
        Guide,
        LLMJudge,
        VerbalJudgeGuide,
        exact_match_metric,
    )
    from opto.trainers.loader import DataLoader, DatasetError
    from opto.trainers.loggers import (
        ConsoleLogger,
        DefaultLogger,
        JSONLLogger,
        MLflowLogger,
        MultiLogger,
        TensorboardLogger,
    )
    from opto.trainers.ray_executor import RayExecutor
    from opto.trainers.search.polca import POLCA, POLCAOptions
    from opto.trainers.search.summarizer import Summarizer
    from opto.trainers.stopping import StopConditions
    from opto.trainers.utils import batchify

__version__ = "0.1.1"


_EXPORTS = {
    **dict.fromkeys(
        [
            "AlgorithmBase",
            "BasicSearchAlgorithm",
            "BeamSearch",
            "BeamSearchHistory",
            "GEPAAlgorithmBase",
            "GEPABeamPareto",
            "GEPAUCBSearch",
            "Minibatch",
            "MinibatchAlgorithm",
            "ParetobasedPS",
            "PrioritySearch",
            "SequentialSearch",
            "SequentialUpdate",
            "StreamingPrioritySearch",
            "TrainOptions",
            "TrainResult",
            "Trainer",
            "UCBSearch",
            "UCBSearchAlgorithm",
            "train",
        ],
        "opto.trainers.algorithms",
    ),
    **dict.fromkeys(["Rollout", "TooManyErrorsError", "evaluate"], "opto.trainers.evaluation"),
    **dict.fromkeys(
        ["AsyncioExecutor", "Executor", "SerialExecutor", "ThreadExecutor"],
        "opto.trainers.executors",
    ),
    **dict.fromkeys(
        [
            "AutoGuide",
            "ExactMatchGuide",
            "FunctionGuide",
            "Guide",
            "LLMJudge",
            "VerbalJudgeGuide",
            "exact_match_metric",
        ],
        "opto.trainers.guide",
    ),
    **dict.fromkeys(["DataLoader", "DatasetError"], "opto.trainers.loader"),
    **dict.fromkeys(
        [
            "ConsoleLogger",
            "DefaultLogger",
            "JSONLLogger",
            "MLflowLogger",
            "MultiLogger",
            "TensorboardLogger",
        ],
        "opto.trainers.loggers",
    ),
    **dict.fromkeys(["BatchLengthError", "async_run", "batch_run"], "opto.trainers.batching"),
    **dict.fromkeys(["aggregate_vector_scores", "evaluate_vector"], "opto.trainers.evaluators"),
    **dict.fromkeys(
        [
            "ObjectiveConfig",
            "aggregate_score_dicts",
            "select_best",
            "select_top_k",
            "to_score_dict",
        ],
        "opto.trainers.objectives",
    ),
    **dict.fromkeys(["BatchRollout", "RolloutConfig", "Sampler"], "opto.trainers.sampler"),
    **dict.fromkeys(["deepcopy_module", "is_module_copy", "is_node_copy"], "opto.trainers.utils"),
    "RayExecutor": "opto.trainers.ray_executor",
    **dict.fromkeys(["POLCA", "POLCAOptions"], "opto.trainers.search.polca"),
    "Summarizer": "opto.trainers.search.summarizer",
    "ResumeMismatchError": "opto.trainers.resume_check",
    "run_example": "opto.trainers.evaluation",
    "StopConditions": "opto.trainers.stopping",
    "batchify": "opto.trainers.utils",
}

__all__ = [
    "POLCA",
    "AlgorithmBase",
    "AsyncioExecutor",
    "AutoGuide",
    "BasicSearchAlgorithm",
    "BeamSearch",
    "BeamSearchHistory",
    "ConsoleLogger",
    "DataLoader",
    "DatasetError",
    "DefaultLogger",
    "ExactMatchGuide",
    "Executor",
    "FunctionGuide",
    "GEPAAlgorithmBase",
    "GEPABeamPareto",
    "GEPAUCBSearch",
    "Guide",
    "JSONLLogger",
    "LLMJudge",
    "MLflowLogger",
    "Minibatch",
    "MinibatchAlgorithm",
    "MultiLogger",
    "POLCAOptions",
    "ParetobasedPS",
    "PrioritySearch",
    "RayExecutor",
    "Rollout",
    "SequentialSearch",
    "SequentialUpdate",
    "SerialExecutor",
    "StopConditions",
    "StreamingPrioritySearch",
    "Summarizer",
    "TensorboardLogger",
    "ThreadExecutor",
    "TooManyErrorsError",
    "TrainOptions",
    "TrainResult",
    "Trainer",
    "UCBSearch",
    "UCBSearchAlgorithm",
    "VerbalJudgeGuide",
    "__version__",
    "batchify",
    "evaluate",
    "exact_match_metric",
    "train",
]


__getattr__, __dir__ = init_package(__name__, _EXPORTS)
