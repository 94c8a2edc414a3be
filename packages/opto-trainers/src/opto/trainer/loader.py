"""`opto.trainer.loader`: data loading (implemented in `opto.trainers.loader`)."""

from opto.trainers.loader import DataLoader, DatasetError, as_dataset

__all__ = ["DataLoader", "DatasetError", "as_dataset"]
