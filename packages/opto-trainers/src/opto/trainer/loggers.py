"""`opto.trainer.loggers`: run loggers (implemented in `opto.trainers.loggers`)."""

from opto.trainers.loggers import BaseLogger as BaseLogger
from opto.trainers.loggers import ConsoleLogger as ConsoleLogger
from opto.trainers.loggers import DefaultLogger as DefaultLogger
from opto.trainers.loggers import JSONLLogger as JSONLLogger
from opto.trainers.loggers import MLflowLogger as MLflowLogger
from opto.trainers.loggers import MultiLogger as MultiLogger
from opto.trainers.loggers import TensorboardLogger as TensorboardLogger
