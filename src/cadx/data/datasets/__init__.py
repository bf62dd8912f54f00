"""Dataset adapters, registered by name: each turns a source folder/file into a :class:`~cadx.data.Cohort`."""

from cadx.data.datasets import busi, lgg, lidc, manifest, medmnist, mednist, synthetic  # noqa: F401  (register)
from cadx.data.datasets.base import DATASETS, load_dataset, parse_options, register_dataset

__all__ = ["DATASETS", "load_dataset", "parse_options", "register_dataset"]
