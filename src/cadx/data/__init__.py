"""Data: images, studies and cohorts, readers, dataset adapters, splits, synthetic cohorts (the arrays become
network input in :mod:`cadx.pipeline`)."""

from cadx.data.image import ImageData, LazyImage
from cadx.data.study import Cohort, Study

__all__ = ["Cohort", "ImageData", "LazyImage", "Study"]
