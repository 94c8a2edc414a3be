"""`opto.trainer.loggers`: run loggers (implemented in `opto.trainers.loggers`)."""

from opto.trainers.loggers import (
    BaseLogger,
    ConsoleLogger,
    DefaultLogger,
    JSONLLogger,
    MLflowLogger,
    MultiLogger,
    TensorboardLogger,
)

__all__ = [
    "BaseLogger",
    "ConsoleLogger",
    "DefaultLogger",
    "JSONLLogger",
    "MLflowLogger",
    "MultiLogger",
    "TensorboardLogger",
]
