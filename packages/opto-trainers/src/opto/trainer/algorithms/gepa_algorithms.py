"""`opto.trainer.algorithms.gepa_algorithms`: the GEPA trainers (implemented in
`opto.trainers.search.gepa` and `opto.trainers.search.gepa_variants`)."""

from opto.trainers.search.gepa import GEPAAlgorithmBase
from opto.trainers.search.gepa_variants import GEPABeamPareto, GEPAUCBSearch

__all__ = ["GEPAAlgorithmBase", "GEPABeamPareto", "GEPAUCBSearch"]
