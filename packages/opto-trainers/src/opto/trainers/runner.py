"""Running one example: the per-example names of `opto.trainers.evaluation`, importable here.

`opto.trainers.evaluation` holds running one example (`run_example`, `rollout`, `guarded`,
`ErrorBudget`), many at once (`run_rollouts`, `evaluate`) and the batch backward.
"""

from __future__ import annotations

from .evaluation import ErrorBudget as ErrorBudget
from .evaluation import Rollout as Rollout
from .evaluation import TooManyErrorsError as TooManyErrorsError
from .evaluation import call_agent as call_agent
from .evaluation import guarded as guarded
from .evaluation import is_failure as is_failure
from .evaluation import judge as judge
from .evaluation import resolve as resolve
from .evaluation import rollout as rollout
from .evaluation import run_example as run_example
from .evaluation import score_dict_of as score_dict_of
