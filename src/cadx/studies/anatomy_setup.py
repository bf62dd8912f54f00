"""Paper 001 (Khan & Yong 2017) on MedNIST: the four nets, their input sizes, and the fixed group-aware split.

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
``cv.val_fraction`` of the rest to validation), optionally subsampled per part to a number of groups, stratified
(:func:`subsample_split`) — a reduced but honest run keeps the same test distribution.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from cadx.config import ExperimentConfig, config_from_dict
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
    d = cfg.to_dict()
    kwargs = {**copy.deepcopy(spec["kwargs"]), "input_size": spec["sizes"][input_mode], **dict(overrides or {})}
    d["model"] = {"name": spec["model"], "kwargs": kwargs}
    d["objective"] = dict(spec["objective"])
    d["name"] = f"{cfg.name}_{net}"
    return config_from_dict(d, source=f"{cfg.name}[{net}]", defaults=False)


def stratified_order(cohort: Cohort, pids: Sequence[str], seed: int) -> list[str]:
    """Patients ``pids`` in a seeded order whose every prefix is (nearly) stratified by the patient's class:
    shuffle within each class, then interleave the classes in proportion to their sizes."""
    strata = patient_strata(cohort)
    rng = np.random.default_rng(seed)
    by: dict[int, list[str]] = {}
    for p in sorted(pids):
        by.setdefault(strata[p], []).append(p)
    keyed: list[tuple[float, int, str]] = []
    for k, members in sorted(by.items()):
        perm = rng.permutation(len(members))
        n = len(members)
        keyed += [((i + 0.5) / n, k, members[j]) for i, j in enumerate(perm)]
    return [p for _, _, p in sorted(keyed)]


def subsample_split(cohort: Cohort, splits: Splits, sizes: Mapping[str, int | None], seed: int,
                    clamp: bool = False) -> Splits:
    """Keep, per part (``train``/``val``/``test``), the first ``sizes[part]`` patients of
    :func:`stratified_order` (None or missing = all; ``clamp``: at most all, else a too-large size raises).
    Returns a new one-fold ``Splits`` (kind kept, sizes in meta)."""
    f = splits[0]
    parts: dict[str, list[str]] = {}
    for i, part in enumerate(("train", "val", "test")):
        pids = f.part(part)
        n = sizes.get(part)
        if n is not None:
            n = min(n, len(pids)) if clamp else n
            if n < 1 or n > len(pids):
                raise CadxConfigError(f"{part} size {n}: the split has {len(pids)} patients in {part}")
            pids = stratified_order(cohort, pids, seed + i)[:n]
        parts[part] = pids
    meta = {**splits.meta, "subsampled": {k: v for k, v in sizes.items() if v is not None}}
    return Splits([Fold(0, parts["train"], parts["val"], parts["test"])], splits.seed, splits.kind, meta)


def fixed_split(cohort: Cohort, cfg: ExperimentConfig, sizes: Mapping[str, int | None] | None = None,
                clamp: bool = False) -> Splits:
    """The study's fixed holdout (``cv.test_fraction``, ``cv.val_fraction``, ``seed``), optionally subsampled."""
    s = holdout_split(cohort, test_fraction=cfg.cv.test_fraction, seed=cfg.seed, val_fraction=cfg.cv.val_fraction)
    if sizes and any(v is not None for v in sizes.values()):
        return subsample_split(cohort, s, sizes, cfg.seed, clamp=clamp)
    return s


def naive_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with ``data.options.group = image`` (every image its own patient: the leaky per-image split)."""
    d = cfg.to_dict()
    d["data"]["options"] = {**d["data"].get("options", {}), "group": "image"}
    d["name"] = f"{cfg.name}_naive"
    return config_from_dict(d, source=f"{cfg.name}[naive]", defaults=False)
