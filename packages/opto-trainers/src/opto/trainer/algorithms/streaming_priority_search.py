"""`opto.trainer.algorithms.streaming_priority_search`: StreamingPrioritySearch
(implemented in `opto.trainers.search.streaming`)."""

from opto.trainers.search.streaming import StreamingPrioritySearch

__all__ = ["StreamingPrioritySearch"]
