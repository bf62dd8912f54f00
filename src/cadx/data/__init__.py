"""Data: studies and cohorts, readers, dataset adapters, splits, transforms, samplers."""

from cadx.data.image import ImageData, LazyImage
from cadx.data.study import Cohort, Study

__all__ = ["Cohort", "ImageData", "LazyImage", "Study"]
