"""`opto.trainer.summarizer`: the rollout summarizer of POLCA (implemented in
`opto.trainers.search.summarizer`)."""

from opto.trainers.search.summarizer import Summarizer, SummaryFormatError

__all__ = ["Summarizer", "SummaryFormatError"]
