"""``synthetic``: cadx's embedded CT cohort of adrenal masses (5 DMRN sub-classes), generated on first use.

``load_dataset("synthetic", root, n_patients=100, seed=0, shape="28,64,64", box_margin=3)``: generates the
cohort into ``root`` unless a complete one with the same options is already there (see
:func:`cadx.data.synthetic.generate_cohort`), then returns it with lazy DICOM images, NIfTI masks, boxes
``(z0, y0, x0, z1, y1, x1)``, attributes and label = class abbreviation (ACA, NAA, GN, AM, PCC).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from cadx.data.datasets.base import register_dataset
from cadx.data.study import Cohort
from cadx.data.synthetic import DEFAULT_SHAPE, generate_cohort, load_cohort
from cadx.registry import IntTuple, Options, TextList


class SyntheticOptions(Options):
    """``n_patients`` (alias ``n``), generator ``seed``, volume ``shape`` Z,Y,X (``"28,64,64"`` or ``"28x64x64"``
    from the command line), ``box_margin`` (voxels around each lesion's box) and ``classes`` (a subset of the
    five to generate, e.g. ``"ACA,PCC"``; None = all five)."""

    n_patients: int = Field(100, ge=1, validation_alias=AliasChoices("n_patients", "n"))
    seed: int = 0
    shape: IntTuple = DEFAULT_SHAPE
    box_margin: int = Field(3, ge=0)
    classes: TextList = None


@register_dataset("synthetic", "deterministic synthetic CT cohort of 5 adrenal-mass sub-classes (DICOM)",
                  options=SyntheticOptions)
def load(root: Path, *, n_patients: int, seed: int, shape: tuple[int, ...], box_margin: int,
         classes: list[str] | None) -> Cohort:
    """Generate (if needed) and load the synthetic cohort in ``root``."""
    generate_cohort(Path(root), n_patients=n_patients, seed=seed, shape=shape, box_margin=box_margin,
                    classes=classes)
    return load_cohort(root)
