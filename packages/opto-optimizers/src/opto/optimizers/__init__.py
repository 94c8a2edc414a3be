"""opto.optimizers — LLM-backed generative optimizers for opto traces.

``Optimizer`` is the torch.optim-like base; ``OptoPrime`` (JSON replies), ``OptoPrimeV2``
(XML-style replies), ``OptoPrimeMulti`` (several candidates per step), ``TextGrad`` and
``OPRO`` build on it; ``CompactOptoPrime`` is OptoPrime with a short prompt for small models. Names are imported on first access, so ``import opto.optimizers``
is cheap, and an optimizer module that is missing or broken only affects its own name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opto.utils.lazy import init_package

if TYPE_CHECKING:
    from opto.optimizers.compact_prompt import CompactOptoPrime
    from opto.optimizers.conversion import ConversionError
    from opto.optimizers.opro import OPRO, OPROv2
    from opto.optimizers.optimizer import AbstractOptimizer, Optimizer, StepRecord
    from opto.optimizers.optoprime import (
        FunctionFeedback,
        OptoPrime,
        OptoPrimeV1,
        node_to_function_feedback,
    )
    from opto.optimizers.optoprime_v2 import OptoPrimeV2
    from opto.optimizers.optoprimemulti import OptoPrimeMulti
    from opto.optimizers.parsing import SuggestionParseError
    from opto.optimizers.textgrad import TextGrad

__version__ = "0.1.1"


# public name -> module that defines it
_EXPORTS = {
    "AbstractOptimizer": "opto.optimizers.optimizer",
    "Optimizer": "opto.optimizers.optimizer",
    "StepRecord": "opto.optimizers.optimizer",
    "OptoPrime": "opto.optimizers.optoprime",
    "OptoPrimeV1": "opto.optimizers.optoprime",
    "CompactOptoPrime": "opto.optimizers.compact_prompt",
    "FunctionFeedback": "opto.optimizers.optoprime",
    "node_to_function_feedback": "opto.optimizers.optoprime",
    "SuggestionParseError": "opto.optimizers.parsing",
    "ConversionError": "opto.optimizers.conversion",
    "OptoPrimeV2": "opto.optimizers.optoprime_v2",
    "OptoPrimeMulti": "opto.optimizers.optoprimemulti",
    "TextGrad": "opto.optimizers.textgrad",
    "OPRO": "opto.optimizers.opro",
    "OPROv2": "opto.optimizers.opro",
}

__all__ = [
    "OPRO",
    "AbstractOptimizer",
    "CompactOptoPrime",
    "ConversionError",
    "FunctionFeedback",
    "OPROv2",
    "Optimizer",
    "OptoPrime",
    "OptoPrimeMulti",
    "OptoPrimeV1",
    "OptoPrimeV2",
    "StepRecord",
    "SuggestionParseError",
    "TextGrad",
    "__version__",
    "node_to_function_feedback",
]


__getattr__, __dir__ = init_package(__name__, _EXPORTS)
