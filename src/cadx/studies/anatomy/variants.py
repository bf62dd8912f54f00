"""How the anatomy study (Khan & Yong 2017 on MedNIST) derives its runs: the four nets' configs, their input
sizes, the naive per-image variant, and the fixed group-aware split they all share.

Nets (``NETS``): ``proposed`` = :mod:`cadx.models.anatomy_cnn`, ``alexnet``, ``lenet`` (LeNet-5), ``googlenet``
(trained with its two auxiliary heads: objective ``ce + aux_ce``, the heads weighted 0.3 as in Szegedy et al.).
Every net gets the same 64 px MedNIST images, optimiser, epochs, batch size and split; only the model differs.

Input sizes (``input_mode``), a documented choice because MedNIST is 64 px and the paper's nets expect 227/224/32:

* ``paper``: each net bilinearly resizes its input to its paper size inside the model (227 px proposed/AlexNet,
  224 GoogLeNet, 32 LeNet), as the paper's DIGITS pipeline resized images to the net input.
* ``reduced`` (for CPU runs, ~10–40× cheaper): proposed and GoogLeNet run at native 64 px (their adaptive pools
  keep FC shapes), AlexNet at its minimum 67 px (64 → 67 adds no information; pool5 is then 1×1), LeNet at its
  paper size 32 px. No net sees more image information than the 64 px source.

MedNIST has no patient ids: the ``mednist`` adapter puts the near-duplicate group (perceptual hash + NCC,
:mod:`cadx.data.dedup`) in ``patient_id`` (``data.options.group: dedup``); ``group: image`` is the naive per-image
split. The split is :func:`~cadx.data.splits.holdout_split` on those groups (``cv.test_fraction`` to test, then
``cv.val_fraction`` of the rest to validation); reduced runs instead draw whole groups holding given numbers of
images per part, balanced over the classes (:func:`reduced_split`) — MedNIST itself is balanced (2000 per class).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from cadx.config import ExperimentConfig, derive
from cadx.data.splits import Fold, Splits, holdout_split, patient_strata
from cadx.data.study import Cohort
from cadx.errors import CadxConfigError

InputMode = Literal["paper", "reduced"]

NETS: dict[str, dict[str, Any]] = {
    "proposed": {"model": "anatomy_cnn", "kwargs": {}, "objective": {"ce": 1.0}, "label": "Proposed CNN",
                 "sizes": {"paper": 227, "reduced": None}},
    "alexnet": {"model": "alexnet", "kwargs": {}, "objective": {"ce": 1.0}, "label": "AlexNet",
                "sizes": {"paper": 227, "reduced": 67}},
    "lenet": {"model": "lenet", "kwargs": {"variant": "lenet5"}, "objective": {"ce": 1.0}, "label": "LeNet",
              "sizes": {"paper": 32, "reduced": 32}},
    "googlenet": {"model": "googlenet", "kwargs": {}, "objective": {"ce": 1.0, "aux_ce": 1.0}, "label": "GoogLeNet",
                  "sizes": {"paper": 224, "reduced": None}},
}
PAPER_ORDER = ["proposed", "alexnet", "lenet", "googlenet"]  # Table II test accuracy: 81 > 74 > 59 > 45 %
PAPER_TABLE_II = {  # as printed in the paper (runtime s, validation loss, validation accuracy %, test accuracy %)
    "lenet": (1655, 1.3, 58.0, 59.0), "alexnet": (33466, 1.39, 65.0, 74.0),
    "googlenet": (52470, 1.2, 55.0, 45.0), "proposed": (16728, 0.67, 76.6, 81.0),
}


def net_input_size(net: str, mode: InputMode, native: int = 64) -> int:
    """Side length the net actually convolves (``None`` in ``NETS`` = the native ``native`` px)."""
    s = NETS[net]["sizes"][mode]
    return native if s is None else int(s)


def net_config(cfg: ExperimentConfig, net: str, input_mode: InputMode = "paper",
               overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """``cfg`` with model, objective and name of ``net``; everything else (data, input, optim, train, cv) kept.

    ``overrides``: extra model kwargs for this net (e.g. ``{"fc_units": 32}`` in tests).
    """
    if net not in NETS:
        raise CadxConfigError(f"unknown net {net!r} (known: {', '.join(NETS)})")
    if input_mode not in ("paper", "reduced"):
        raise CadxConfigError(f"input_mode must be 'paper' or 'reduced', got {input_mode!r}")
    spec = NETS[net]
    kwargs = {**spec["kwargs"], "input_size": spec["sizes"][input_mode], **dict(overrides or {})}
    return derive(cfg, source=f"{cfg.name}[{net}]", name=f"{cfg.name}_{net}",
                  model={"name": spec["model"], "kwargs": kwargs}, objective=dict(spec["objective"]))


def balanced_groups(cohort: Cohort, pids: Sequence[str], n_images: int, seed: int) -> list[str]:
    """Whole patients (groups) from ``pids`` holding about ``n_images`` images, split evenly over the classes.

    MedNIST's near-duplicate groups differ wildly in size and number per class (BreastMRI 83 groups, CXR 1860; one
    Hand group has 576 images), so a group-stratified sample is badly imbalanced in images. Per class (patient
    majority label): walk the class's groups in a seeded random order and keep each one that still fits the quota
    ``n_images // K`` (the remainder to the first classes); a class whose every group is too big keeps its smallest.
    """
    strata = patient_strata(cohort)
    sizes = Counter(cohort.patient_ids)
    by: dict[int, list[str]] = {}
    for p in sorted(pids):
        by.setdefault(strata[p], []).append(p)
    rng = np.random.default_rng(seed)
    k = len(by)
    out: list[str] = []
    for i, (_, members) in enumerate(sorted(by.items())):
        quota = n_images // k + (1 if i < n_images % k else 0)
        order = [members[j] for j in rng.permutation(len(members))]
        taken, count = [], 0
        for p in order:
            if count + sizes[p] <= quota:
                taken.append(p)
                count += sizes[p]
            if count == quota:
                break
        out += taken or ([min(members, key=lambda q: (sizes[q], q))] if quota > 0 else [])
    return sorted(out)


def reduced_split(cohort: Cohort, sizes: Mapping[str, int], seed: int) -> Splits:
    """A one-fold holdout of whole groups holding about ``sizes[part]`` **images** per part, balanced over the
    classes: test first, then val from the remaining groups, then train (:func:`balanced_groups`). Groups bigger
    than a class's quota are left out (MedNIST has a few with hundreds of near-identical slices)."""
    missing = [p for p in ("train", "val", "test") if p not in sizes]
    if missing:
        raise CadxConfigError(f"reduced split: sizes for {missing} missing (need train, val and test image counts)")
    rest = sorted(set(cohort.patient_ids))
    parts: dict[str, list[str]] = {}
    for i, part in enumerate(("test", "val", "train")):
        n = int(sizes[part])
        rest_set = set(rest)
        have = sum(1 for p in cohort.patient_ids if p in rest_set)
        if n < 1 or n > have:
            raise CadxConfigError(f"{part} size {n}: {have} images left for {part}")
        parts[part] = balanced_groups(cohort, rest, n, seed + i)
        rest = sorted(set(rest) - set(parts[part]))
    meta = {"sizes_images": {p: int(sizes[p]) for p in ("train", "val", "test")}, "patients": len(set(
        cohort.patient_ids)), "studies": len(cohort), "cohort": cohort.name}
    return Splits([Fold(0, parts["train"], parts["val"], parts["test"])], seed, "holdout", meta)


def fixed_split(cohort: Cohort, cfg: ExperimentConfig, sizes: Mapping[str, int] | None = None) -> Splits:
    """The study's fixed split: :func:`reduced_split` with ``sizes`` (images per part), else the full
    :func:`~cadx.data.splits.holdout_split` (``cv.test_fraction``, ``cv.val_fraction``, ``seed``)."""
    if sizes:
        return reduced_split(cohort, sizes, cfg.seed)
    return holdout_split(cohort, test_fraction=cfg.cv.test_fraction, seed=cfg.seed, val_fraction=cfg.cv.val_fraction)


def naive_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with ``data.options.group = image`` (every image its own patient: the leaky per-image split)."""
    return derive(cfg, source=f"{cfg.name}[naive]", name=f"{cfg.name}_naive",
                  data={"options": {**cfg.data.options, "group": "image"}})
