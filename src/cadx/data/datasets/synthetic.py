"""``synthetic``: cadx's embedded CT cohort of adrenal masses (5 DMRN sub-classes), generated on first use.

``load_dataset("synthetic", root, n_patients=100, seed=0, shape="28,64,64", box_margin=3)``: generates the
cohort into ``root`` unless a complete one with the same options is already there (see
:func:`cadx.data.synthetic.generate_cohort`), then returns it with lazy DICOM images, NIfTI masks, boxes
``(z0, y0, x0, z1, y1, x1)``, attributes and label = class abbreviation (ACA, NAA, GN, AM, PCC).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cadx.data.datasets.base import coerce_int, register_dataset
from cadx.data.study import Cohort
from cadx.data.synthetic import DEFAULT_SHAPE, generate_cohort, load_cohort
from cadx.errors import CadxConfigError


def _shape(value: Any) -> tuple[int, ...]:
    """``(28, 64, 64)``, ``"28,64,64"`` or ``"28x64x64"`` → a tuple of ints."""
    if isinstance(value, str):
        parts = value.replace("x", ",").replace("×", ",").split(",")
    elif isinstance(value, Sequence):
        parts = list(value)
    else:
        raise CadxConfigError(f"option shape: expected Z,Y,X, got {value!r}")
    return tuple(coerce_int(str(p).strip(), "shape") for p in parts)


@register_dataset("synthetic", "deterministic synthetic CT cohort of 5 adrenal-mass sub-classes (DICOM)")
def load(root: Path, n_patients: Any = 100, seed: Any = 0, shape: Any = DEFAULT_SHAPE, box_margin: Any = 3,
         **options: Any) -> Cohort:
    """Generate (if needed) and load the synthetic cohort in ``root``; ``n`` is an alias of ``n_patients``."""
    if "n" in options:
        n_patients = options.pop("n")
    if options:
        raise CadxConfigError(f"synthetic: unknown option(s) {sorted(options)} "
                              "(known: n_patients, seed, shape, box_margin)")
    generate_cohort(Path(root), n_patients=coerce_int(n_patients, "n_patients"), seed=coerce_int(seed, "seed"),
                    shape=_shape(shape), box_margin=coerce_int(box_margin, "box_margin"))
    return load_cohort(root)
