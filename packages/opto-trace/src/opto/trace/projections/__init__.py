"""Projections: functions applied to a parameter's new value to keep it well-formed."""

from opto.trace.projections.code_projections import BlackCodeFormatter, DocstringProjection
from opto.trace.projections.projections import Projection

__all__ = ["BlackCodeFormatter", "DocstringProjection", "Projection"]
