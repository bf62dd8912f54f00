"""Thesis A.4: transfer learning for the genomic subtype of LGG (CoC2 vs rest and each cluster vs rest).

One 3-class network per start and outer fold (the paper's "single 3-output multiclass network for every binary
task"), patient-level k-fold CV, tumour-centred 80 × 80 FLAIR patches (:mod:`cadx.pipeline.patches`). Three
starts of the **same** network (:class:`cadx.models.unet_encoder.UNetEncoder`: U-Net encoder + global pool +
dropout + linear head), trained on identical examples in identical order, so that only the initial weights differ:

* ``scratch``: random initialisation.
* ``mednist`` (out-of-domain): the encoder pretrained by cadx as a 6-class MedNIST anatomy classifier (once, not
  per fold — no LGG patient is involved), the head replaced.
* ``lgg_unet`` (in-domain): the encoder of a segmentation U-Net (``unet``) trained, for each outer fold, on the
  unmasked FLAIR patches and tumour masks of that fold's **training** patients only;
  :func:`check_pretrain_isolation` raises before any pretraining that would include a test patient.
* ``weights`` (optional, when ``transfer.weights`` names a local file): the encoder from a user's state_dict
  (ImageNet or own weights), keys renamed by ``transfer.prefix_map``; keys that do not fit raise
  :class:`CadxConfigError` naming the file.

Patient score of class c = mean over the patient's tumour slices of the softmax probability of c. Pooled-CV AUC of
"c vs rest" per start with a patient bootstrap percentile CI (:func:`cadx.evaluation.bootstrap.bootstrap_ci`),
paired bootstrap p-values between every pair of starts (:func:`paired_bootstrap_pvalue`), Holm-adjusted over the
pairs of one task (:func:`holm`).

Choices where the paper is silent or which cadx reduces for 2 CPU cores (stated in ``metrics.json``
``reduced_vs_paper`` too):

* FLAIR only (channel 1 of the LGG volumes), as the paper; a 1-channel network (the paper tiled FLAIR to 3
  channels for its ImageNet/GBM nets; ``transfer.weights`` adapts a 3-channel first conv by summing the RGB
  filters, :func:`load_encoder_weights`).
* The network is the A.3 U-Net encoder narrowed (``base_filters`` 8, ``levels`` 3 by default) with one linear
  head, not the paper's 3-block CNN with two FC layers (its filter counts are in an appendix that is not in the
  thesis text); the same network serves every start.
* Same optimiser, learning rate and epochs for all starts (the paper fine-tuned with a small LR, unspecified).
* k = 5 folds instead of the paper's 22; few epochs (``epochs``), no validation split and no early stopping —
  the final-epoch weights are evaluated, so no setting is chosen on a test fold.
* Augmented copies are drawn once per fold (offline, as in the paper), then minority oversampling to uniform
  class counts over the training *slices*.
* Exclusions (unlabelled patient, no tumour slice) are listed in ``excluded`` with the reason, never dropped
  silently.

Result of :func:`run_transfer` (also written to ``<out_dir>/metrics.json``) — the keys r1's radiogenomics study
renders:

``label_column`` (str), ``classes`` (class names, index = network output), ``task_names`` ({class: "CoC2 vs
rest"}), ``starts`` (list of start names in order), ``n_patients`` (int), ``patients_per_class`` ({class: n}),
``n_tumour_slices`` (int), ``excluded`` ([{"patient", "reason"}]),
``tasks``: {task name: {"positive_class", "n_pos", "n_neg", "auc": {start: {"auc", "ci_lo", "ci_hi",
"n_valid"}}, "pvalues": [{"a", "b", "p", "p_holm"}]}},
``folds``: [{"fold", "train", "test", "pretrain_patients" (in-domain U-Net; [] when that start is off),
"n_train_examples", "n_test_slices", "seconds": {start: s}}],
``pretraining``: {"mednist": {"weights", "trained" (bool), "images_per_class", "heldout_accuracy", "seconds"} |
None, "lgg_unet": [{"fold", "n_patients", "n_slices", "train_dice", "seconds"}]},
``files``: {"predictions": "predictions.csv", "slices": "predictions_slices.csv", "splits": "splits.json"},
``config`` (the resolved :class:`TransferConfig`), ``reduced_vs_paper`` (str), ``wall_seconds`` (float).

``predictions.csv``: one row per (patient, start, task): ``patient, fold, start, task, score, label`` (label 1 =
the patient is in the task's positive class) plus ``y_class`` and ``n_slices``. ``predictions_slices.csv``: one row
per (patient, slice, start): ``patient, fold, start, slice, p_<class>...``.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from pydantic import Field
from torch import Tensor, nn

from cadx.data.datasets import load_dataset
from cadx.data.splits import Fold, make_splits
from cadx.data.study import Cohort
from cadx.errors import CadxConfigError, CadxDataError
from cadx.evaluation import multiplicity
from cadx.evaluation.bootstrap import bootstrap_ci, paired_bootstrap_pvalue
from cadx.evaluation.metrics import roc_auc
from cadx.models.unet import UNet
from cadx.models.unet_encoder import UNetEncoder
from cadx.pipeline.patches import augment_copies, patient_patches
from cadx.pipeline.samplers import oversample_indices
from cadx.registry import Options
from cadx.utils import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "MednistPretrain", "PatientPatches", "TransferConfig", "TransferWeights", "UNetPretrain",
    "check_pretrain_isolation", "collect_patches", "holm", "load_encoder_weights", "mednist_heldout",
    "patient_scores", "pretrain_mednist", "pretrain_unet", "run_transfer", "training_examples",
]

Start = Literal["scratch", "mednist", "lgg_unet", "weights"]
DEFAULT_STARTS: tuple[Start, ...] = ("scratch", "mednist", "lgg_unet")
TASK_PREFIX = {"COCCluster": "CoC", "RNASeqCluster": "RNASeq", "MethylationCluster": "Methylation",
               "miRNACluster": "miRNA", "CNCluster": "CN", "RPPACluster": "RPPA", "OncosignCluster": "Oncosign"}
REDUCED = ("5-fold patient CV (paper: 22 folds); FLAIR 1 channel; U-Net encoder base {b} filters, {lv} levels + "
           "linear head (paper: 3 conv blocks + 2 FC); {e} epochs, batch {bs}, Adam lr {lr}, last-epoch weights, "
           "same schedule for every start; MedNIST pretraining {mpc} images/class, {me} epochs; in-domain U-Net "
           "{ue} epochs on the fold's training tumour patches (80 px, unmasked); patches and copies as the paper "
           "(80 px, x{c} copies, ±{r} deg, ±{s} px).")


class MednistPretrain(Options):
    """Out-of-domain start: ``root`` = the MedNIST folder (``<Class>/*.jpeg``); ``weights`` = where the encoder
    is saved (trained when the file is absent, loaded when present); ``per_class`` training images per class
    (+ ``per_class // 5`` held out for the reported accuracy), ``epochs``, ``lr``."""

    root: str | None = None
    weights: str | None = None
    per_class: int = 200
    epochs: int = 2
    lr: float = 1e-3


class UNetPretrain(Options):
    """In-domain start: segmentation U-Net epochs and learning rate (Dice + BCE, random flips)."""

    epochs: int = 6
    lr: float = 1e-3


class TransferWeights(Options):
    """``weights``: a local state_dict file (nothing is downloaded); ``prefix_map``: ``{source prefix: cadx
    prefix}`` applied to its keys (e.g. ``{"features.0.": "encoders.0.0."}``); the encoder keys of
    :class:`UNetEncoder` (``encoders.*``, ``bottleneck.*``) must all be present afterwards."""

    weights: str | None = None
    prefix_map: dict[str, str] = Field(default_factory=dict)


class TransferConfig(Options):
    """A.4 configuration (defaults = the committed CPU benchmark). See the module docstring."""

    data_root: str = "../shared/data/lgg"
    label_column: str = "COCCluster"
    channels: list[int] = Field(default_factory=lambda: [1])
    folds: int = 5
    seed: int = 0
    size: int = 256
    patch: int = 80
    copies: int = 5
    max_rotate: float = 10.0
    max_shift: int = 16
    base_filters: int = 8
    levels: int = 3
    dropout: float = 0.5
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    starts: list[Start] = Field(default_factory=lambda: list(DEFAULT_STARTS))
    mednist: MednistPretrain = MednistPretrain()
    unet: UNetPretrain = UNetPretrain()
    transfer: TransferWeights = TransferWeights()
    n_bootstrap: int = 2000
    threads: int = 1
    max_patients: int | None = None
    only_folds: list[int] | None = None


@dataclass
class PatientPatches:
    """One patient's A.4 inputs: ``patches (N, C, P, P)`` masked, ``context (N, C, P+2m, P+2m)`` masked (for
    the augmented copies), ``plain (N, C, P, P)`` unmasked and ``masks (N, P, P)`` (in-domain pretraining),
    ``slices (N,)`` z indices; ``label`` = class index."""

    patient: str
    label: int
    patches: np.ndarray
    context: np.ndarray
    plain: np.ndarray
    masks: np.ndarray
    slices: np.ndarray


def _context_margin(patch: int, max_shift: int) -> int:
    return int(np.ceil((patch / 2 + max_shift) * np.sqrt(2))) - patch // 2


def collect_patches(cohort: Cohort, cfg: TransferConfig) -> tuple[list[PatientPatches], list[dict[str, str]]]:
    """Patches of every labelled patient with a tumour slice, and the exclusions ``[{"patient", "reason"}]``
    (unlabelled; no tumour slice; image/mask mismatch), each named, none silent. One study per patient."""
    items: list[PatientPatches] = []
    excluded: list[dict[str, str]] = []
    margin = _context_margin(cfg.patch, cfg.max_shift)
    classes = list(cohort.classes)
    for s in cohort:
        if s.label is None:
            excluded.append({"patient": s.patient_id, "reason": f"no {cfg.label_column} value"})
            continue
        mask = s.mask()
        if mask is None:
            excluded.append({"patient": s.patient_id, "reason": "no mask"})
            continue
        try:
            p = patient_patches(s.image().load().array, mask.load().array, channels=cfg.channels, size=cfg.size,
                                patch=cfg.patch, context=margin, source=s.image().source)
        except CadxDataError as e:
            excluded.append({"patient": s.patient_id, "reason": str(e)})
            continue
        items.append(PatientPatches(s.patient_id, classes.index(s.label), p["patches"], p["context"], p["plain"],
                                    p["masks"], p["slices"]))
    return items, excluded


def check_pretrain_isolation(pretrain_patients: Sequence[str], test_patients: Sequence[str], fold: int) -> None:
    """Raise :class:`CadxDataError` when a test-fold patient would touch the in-domain pretraining."""
    leak = sorted(set(pretrain_patients) & set(test_patients))
    if leak:
        raise CadxDataError(f"fold {fold}: test patients {leak[:5]} are in the in-domain pretraining set",
                            field="pretrain_patients")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values in the input order (NaN stays NaN and is not counted):
    :func:`cadx.evaluation.multiplicity.holm` as a list."""
    return [float(v) for v in multiplicity.holm(pvalues)]


def _encoder_keys(model: nn.Module) -> list[str]:
    return [k for k in model.state_dict() if not k.startswith("head.")]


def load_encoder_weights(model: UNetEncoder, path: str | Path, prefix_map: dict[str, str] | None = None
                         ) -> dict[str, Any]:
    """Load the encoder of ``model`` from a local state_dict file.

    The file holds a dict of tensors (or a checkpoint with ``"state_dict"``/``"model"``); ``module.``/``model.``
    wrappers are stripped; ``prefix_map`` renames keys (``{src prefix: dst prefix}``, longest prefix first; keys
    matching no source prefix keep their name). Every non-head key of ``model`` must then be present with the
    model's shape — a first conv with another input-channel count is adapted (sum over the source channels,
    spread evenly) — else :class:`CadxConfigError` names the file and the first missing/mismatched keys.
    ``head.*`` is never loaded (a new head per task). Returns ``{"loaded": n, "ignored": [source keys unused]}``.
    """
    p = Path(path)
    if not p.is_file():
        raise CadxConfigError(f"transfer.weights: file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CadxConfigError(f"transfer.weights: {p} is not a tensor-only state_dict ({type(e).__name__})") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CadxConfigError(f"transfer.weights: {p} is not a state_dict (a dict of tensors)")
    src: dict[str, Tensor] = dict(obj)
    for wrap in ("module.", "model."):
        if all(k.startswith(wrap) for k in src):
            src = {k[len(wrap):]: v for k, v in src.items()}
    pm = sorted((prefix_map or {}).items(), key=lambda kv: -len(kv[0]))
    renamed: dict[str, Tensor] = {}
    for k, v in src.items():
        new = next((dst + k[len(s):] for s, dst in pm if k.startswith(s)), k)
        renamed[new] = v
    own = model.state_dict()
    want = _encoder_keys(model)
    missing = [k for k in want if k not in renamed]
    bad: list[str] = []
    new_sd: dict[str, Tensor] = {}
    for k in want:
        if k in missing:
            continue
        v, target = renamed[k], own[k].shape
        if v.shape != target:
            if v.ndim == 4 and v.shape[0] == target[0] and v.shape[2:] == target[2:]:
                v = v.sum(dim=1, keepdim=True).repeat(1, target[1], 1, 1) / target[1]
            else:
                bad.append(f"{k} {tuple(v.shape)} != {tuple(target)}")
                continue
        new_sd[k] = v.to(own[k].dtype)
    if missing or bad:
        what = (f"{len(missing)} of {len(want)} encoder keys missing (e.g. {missing[:3]})" if missing else "") + \
               ("; " if missing and bad else "") + (f"shape mismatch: {bad[:3]}" if bad else "")
        raise CadxConfigError(f"transfer.weights: {p} does not fit unet_encoder: {what}; file keys start with "
                              f"{sorted(src)[:3]} (set transfer.prefix_map)")
    model.load_state_dict(new_sd, strict=False)
    return {"loaded": len(new_sd), "ignored": sorted(k for k in renamed if k not in new_sd)}


def _seeded(seed: Sequence[int]) -> int:
    return int(np.random.default_rng(list(seed)).integers(2**31 - 1))


def _new_encoder(cfg: TransferConfig, num_classes: int, seed: Sequence[int]) -> UNetEncoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seeded(seed))
        return UNetEncoder(num_classes, len(cfg.channels), base_filters=cfg.base_filters, levels=cfg.levels,
                           dropout=cfg.dropout)


def _fit_classifier(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, batch_size: int,
                    seed: Sequence[int]) -> nn.Module:
    """Adam + cross-entropy, ``epochs`` shuffled passes over ``x (N, C, H, W)``, ``y (N,)``; dropout and the
    shuffles seeded from ``seed``. Returns the last-epoch model (eval mode)."""
    rng = np.random.default_rng(list(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seeded([*seed, 1]))
        model.train()
        for _ in range(epochs):
            order = torch.from_numpy(rng.permutation(len(y)))
            for b in range(0, len(y), batch_size):
                idx = order[b:b + batch_size]
                if idx.numel() < 2:  # BN needs two examples
                    continue
                loss = F.cross_entropy(model(xt[idx])["logits"], yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return model.eval()


@torch.no_grad()
def _predict(model: nn.Module, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    model.eval()
    out = [torch.softmax(model(torch.from_numpy(x[b:b + batch_size]))["logits"], dim=1).numpy()
           for b in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float64)


def _mednist_arrays(root: Path, per_class: int, held: int, seed: int) -> tuple[np.ndarray, ...]:
    cohort = load_dataset("mednist", root, group="image", cache=False)
    rng = np.random.default_rng(seed)
    tr_x: list[np.ndarray] = []
    te_x: list[np.ndarray] = []
    tr_y: list[int] = []
    te_y: list[int] = []
    for k, cls in enumerate(cohort.classes):
        members = [s for s in cohort if s.label == cls]
        pick = rng.choice(len(members), size=min(len(members), per_class + held), replace=False)
        for j, i in enumerate(pick):
            a = members[int(i)].image().load().array.astype(np.float32)
            a = a.mean(axis=0, keepdims=True) / 255.0
            (tr_x if j < per_class else te_x).append(a)
            (tr_y if j < per_class else te_y).append(k)
    return np.stack(tr_x), np.array(tr_y), np.stack(te_x), np.array(te_y)


def pretrain_mednist(cfg: TransferConfig, weights: Path) -> dict[str, Any]:
    """Train the shared encoder as a MedNIST 6-class anatomy classifier (``cfg.mednist``), grey images
    ``(1, 64, 64)`` in [0, 1] repeated to ``len(cfg.channels)`` channels, and save its state_dict to
    ``weights``. Returns ``{"weights", "trained": True, "images_per_class", "heldout_accuracy", "seconds"}``."""
    if not cfg.mednist.root:
        raise CadxConfigError("radiogenomics transfer: start 'mednist' needs mednist.root (the MedNIST folder) "
                              "or an existing mednist.weights file")
    t0 = time.perf_counter()
    held = max(1, cfg.mednist.per_class // 5)
    xtr, ytr, xte, yte = _mednist_arrays(Path(cfg.mednist.root), cfg.mednist.per_class, held, cfg.seed)
    c = len(cfg.channels)
    xtr, xte = np.repeat(xtr, c, axis=1), np.repeat(xte, c, axis=1)
    model = _new_encoder(cfg, int(ytr.max()) + 1, [cfg.seed, 101])
    _fit_classifier(model, xtr, ytr, cfg.mednist.epochs, cfg.mednist.lr, cfg.batch_size, [cfg.seed, 102])
    acc = float((_predict(model, xte).argmax(1) == yte).mean())
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    return {"weights": str(weights), "trained": True, "images_per_class": cfg.mednist.per_class,
            "heldout_accuracy": acc, "heldout_images": len(yte), "seconds": time.perf_counter() - t0}


def mednist_heldout(cfg: TransferConfig, weights: Path) -> dict[str, Any]:
    """Accuracy of a saved MedNIST encoder on the held-out images :func:`pretrain_mednist` set aside for the same
    ``cfg`` (same seed → same images). Returns ``{"heldout_accuracy", "heldout_images"}``."""
    assert cfg.mednist.root is not None
    held = max(1, cfg.mednist.per_class // 5)
    _, ytr, xte, yte = _mednist_arrays(Path(cfg.mednist.root), cfg.mednist.per_class, held, cfg.seed)
    model = _new_encoder(cfg, int(ytr.max()) + 1, [cfg.seed, 101])
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    acc = float((_predict(model, np.repeat(xte, len(cfg.channels), axis=1)).argmax(1) == yte).mean())
    return {"heldout_accuracy": acc, "heldout_images": len(yte)}


def pretrain_unet(items: Sequence[PatientPatches], train_patients: Sequence[str], test_patients: Sequence[str],
                  cfg: TransferConfig, fold: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """In-domain start of one outer fold: a ``unet`` (same widths as the classifier, 1 sigmoid output) trained on
    the unmasked patches and masks of ``train_patients`` only (Dice + BCE, random horizontal/vertical flips).

    :func:`check_pretrain_isolation` runs first; a patient of ``test_patients`` in ``train_patients`` raises.
    Returns ``(state_dict of the U-Net, {"fold", "patients", "n_patients", "n_slices", "train_dice",
    "seconds"})``; ``train_dice`` = soft-free Dice (threshold 0.5) over the pretraining patches.
    """
    check_pretrain_isolation(train_patients, test_patients, fold)
    t0 = time.perf_counter()
    chosen = [it for it in items if it.patient in set(train_patients)]
    x = np.concatenate([it.plain for it in chosen]).astype(np.float32)
    m = np.concatenate([it.masks for it in chosen])[:, None].astype(np.float32)
    rng = np.random.default_rng([cfg.seed, fold, 7])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seeded([cfg.seed, fold, 8]))
        net = UNet(0, len(cfg.channels), base_filters=cfg.base_filters, levels=cfg.levels)
        loss_fn = DiceCELoss(sigmoid=True)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.unet.lr)
        net.train()
        for _ in range(cfg.unet.epochs):
            order = rng.permutation(len(x))
            for b in range(0, len(x), cfg.batch_size):
                idx = order[b:b + cfg.batch_size]
                if idx.size < 2:
                    continue
                xb, mb = torch.from_numpy(x[idx]), torch.from_numpy(m[idx])
                flip = [d for d, f in zip((2, 3), rng.random(2) < 0.5, strict=True) if f]
                if flip:
                    xb, mb = xb.flip(flip), mb.flip(flip)
                loss = loss_fn(net(xb)["seg_logits"], mb)
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(torch.from_numpy(x[b:b + 128]))["seg_logits"] for b in range(0, len(x), 128)]) > 0
    inter = float((pred.numpy() & (m > 0.5)).sum())
    dice = 2 * inter / max(1.0, float(pred.sum()) + float(m.sum()))
    info = {"fold": fold, "patients": sorted({it.patient for it in chosen}), "n_patients": len(chosen),
            "n_slices": len(x), "train_dice": dice, "seconds": time.perf_counter() - t0}
    return net.state_dict(), info


def patient_scores(slice_proba: np.ndarray, patients: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Mean of the slice class scores per patient: ``slice_proba (N, K)`` with ``patients (N,)`` →
    ``(patient ids in first-seen order, (P, K) means)``."""
    pats = list(dict.fromkeys(patients))
    arr = np.asarray(patients)
    return pats, np.stack([slice_proba[arr == p].mean(axis=0) for p in pats])


def training_examples(items: Sequence[PatientPatches], cfg: TransferConfig, fold: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Training set of one fold: ``copies`` augmented copies of every tumour slice of ``items``
    (:func:`augment_copies`), then random minority oversampling of the slice labels to uniform class counts.
    Returns ``(x (M, C, P, P) float32, y (M,) int64)``; seeded by ``(cfg.seed, fold)``, the same for every
    start."""
    rng = np.random.default_rng([cfg.seed, fold, 3])
    xs, ys = [], []
    for it in items:
        x, _ = augment_copies(it.context, cfg.patch, rng, cfg.copies, cfg.max_rotate, cfg.max_shift)
        xs.append(x)
        ys.append(np.full(len(x), it.label, np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    idx = oversample_indices(y, rng)
    return x[idx], y[idx]


def _task_names(column: str, classes: Sequence[str]) -> dict[str, str]:
    prefix = TASK_PREFIX.get(column, column)
    return {c: f"{prefix}{c} vs rest" for c in classes}


def _start_model(start: str, cfg: TransferConfig, k: int, fold: int, mednist_weights: Path | None,
                 unet_sd: dict[str, Tensor] | None) -> UNetEncoder:
    model = _new_encoder(cfg, k, [cfg.seed, fold, 11])  # same head init for every start
    if start == "mednist":
        assert mednist_weights is not None
        load_encoder_weights(model, mednist_weights)
    elif start == "lgg_unet":
        assert unet_sd is not None
        own = model.state_dict()
        model.load_state_dict({k2: v for k2, v in unet_sd.items() if k2 in own and not k2.startswith("head.")},
                              strict=False)
    elif start == "weights":
        assert cfg.transfer.weights is not None
        load_encoder_weights(model, cfg.transfer.weights, cfg.transfer.prefix_map)
    return model


def _resume_key(cfg: TransferConfig, starts: Sequence[str]) -> dict[str, Any]:
    """The settings a saved fold depends on (not ``only_folds``, ``n_bootstrap``, ``threads``)."""
    d = cfg.model_dump(exclude={"only_folds", "n_bootstrap", "threads"})
    d["starts"] = list(starts)
    return json.loads(json.dumps(d))


def _load_fold(part: Path, key: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], Any]:
    saved = json.loads((part / "fold.json").read_text())
    if saved.get("resume_key") != key:
        raise CadxConfigError(f"{part / 'fold.json'}: saved with other settings than this config; use a new "
                              f"out_dir or delete {part}")
    rows = [{str(k): v for k, v in r.items()}
            for r in pd.read_csv(part / "slices.csv", dtype={"patient": str},
                                   float_precision="round_trip").to_dict("records")]
    return rows, saved["info"], saved["unet"]


def _run_fold(f: Fold, items: Sequence[PatientPatches], by_pid: dict[str, PatientPatches], classes: list[str],
              starts: Sequence[str], cfg: TransferConfig, mednist_weights: Path | None
              ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any] | None]:
    """One outer fold: in-domain pretraining (training patients only), the training examples, every start
    trained and applied to the test patients' tumour slices. Returns (slice rows, fold info, U-Net info)."""
    train = [by_pid[p] for p in f.train]
    test = [by_pid[p] for p in f.test]
    unet_sd, ui = None, None
    info: dict[str, Any] = {"fold": f.fold, "train": list(f.train), "test": list(f.test),
                            "pretrain_patients": [], "seconds": {}}
    if "lgg_unet" in starts:
        unet_sd, full = pretrain_unet(items, f.train, f.test, cfg, f.fold)
        info["pretrain_patients"] = full["patients"]
        ui = {k: v for k, v in full.items() if k != "patients"}
    x, y = training_examples(train, cfg, f.fold)
    x_te = np.concatenate([it.patches for it in test])
    pid_te = np.concatenate([[it.patient] * len(it.patches) for it in test])
    z_te = np.concatenate([it.slices for it in test])
    info["n_train_examples"], info["n_test_slices"] = len(y), len(x_te)
    rows: list[dict[str, Any]] = []
    for s in starts:
        t0 = time.perf_counter()
        model = _start_model(s, cfg, len(classes), f.fold, mednist_weights, unet_sd)
        _fit_classifier(model, x, y, cfg.epochs, cfg.lr, cfg.batch_size, [cfg.seed, f.fold, 13])
        proba = _predict(model, x_te)
        info["seconds"][s] = time.perf_counter() - t0
        for i in range(len(x_te)):
            rows.append({"patient": str(pid_te[i]), "fold": f.fold, "start": s, "slice": int(z_te[i]),
                         **{f"p_{c}": float(proba[i, j]) for j, c in enumerate(classes)}})
    return rows, info, ui


def _evaluate(pred: pd.DataFrame, starts: Sequence[str], tasks: dict[str, str], n_boot: int, seed: int
              ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cls, task in tasks.items():
        d = pred[pred["task"] == task]
        wide = d.pivot(index="patient", columns="start", values="score")
        lab = d.groupby("patient")["label"].first().loc[wide.index].to_numpy()
        pats = wide.index.to_numpy()
        entry: dict[str, Any] = {"positive_class": cls, "n_pos": int(lab.sum()), "n_neg": int((lab == 0).sum()),
                                 "auc": {}, "pvalues": []}
        for s in starts:
            ci = bootstrap_ci(roc_auc, lab, wide[s].to_numpy(), groups=pats, n_resamples=n_boot, seed=seed)
            entry["auc"][s] = {"auc": ci.point, "ci_lo": ci.lo, "ci_hi": ci.hi, "n_valid": ci.n_valid}
        pairs = list(itertools.combinations(starts, 2))
        ps = [paired_bootstrap_pvalue(roc_auc, lab, wide[a].to_numpy(), wide[b].to_numpy(), groups=pats,
                                      n_resamples=n_boot, seed=seed) for a, b in pairs]
        entry["pvalues"] = [{"a": a, "b": b, "p": p, "p_holm": ph}
                            for (a, b), p, ph in zip(pairs, ps, holm(ps), strict=True)]
        out[task] = entry
    return out


def run_transfer(cfg: TransferConfig | dict[str, Any], out_dir: str | Path, cohort: Cohort | None = None
                 ) -> dict[str, Any]:
    """Run A.4 (see the module docstring for the result keys and files) and write ``out_dir``.

    Resumable: each finished outer fold is saved in ``out_dir/fold_<k>/`` (``slices.csv``, ``fold.json``,
    ``DONE``) and reused by a later call with the same settings (other settings → :class:`CadxConfigError`).
    ``only_folds`` runs just those folds (e.g. in parallel processes) and returns ``{"folds_done", "folds"}``
    without metrics until every fold is saved. ``cohort`` (optional) replaces loading ``lgg`` from
    ``cfg.data_root`` with ``label = cfg.label_column``
    (tests pass a synthetic one). A ``dict`` config is validated (unknown keys → :class:`CadxConfigError`).
    """
    t_start = time.perf_counter()
    if not isinstance(cfg, TransferConfig):
        try:
            cfg = TransferConfig(**cfg)
        except Exception as e:
            raise CadxConfigError(f"radiogenomics transfer config: {e}".replace("\n", " ")) from e
    if "weights" in cfg.starts and not cfg.transfer.weights:
        raise CadxConfigError("radiogenomics transfer: start 'weights' needs transfer.weights (a local file)")
    starts = list(cfg.starts)
    if cfg.transfer.weights and "weights" not in starts:
        starts.append("weights")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    if cohort is None:
        cohort = load_dataset("lgg", cfg.data_root, label=cfg.label_column)
    if cfg.max_patients is not None:
        cohort = cohort.for_patients(cohort.patients[:cfg.max_patients])
    items, excluded = collect_patches(cohort, cfg)
    if cfg.transfer.weights:  # fail before any training when the user's file does not fit
        load_encoder_weights(_new_encoder(cfg, len(cohort.classes), [0]), cfg.transfer.weights,
                             cfg.transfer.prefix_map)
    for ex in excluded:
        log.warning("radiogenomics transfer: excluded %s: %s", ex["patient"], ex["reason"])
    kept = cohort.for_patients([it.patient for it in items])
    classes = list(cohort.classes)
    splits = make_splits(kept, folds=cfg.folds, seed=cfg.seed, use_official=False)
    splits.check(kept)
    splits.save(out / "splits.json")
    by_pid = {it.patient: it for it in items}

    mednist_info: dict[str, Any] | None = None
    mednist_weights: Path | None = None
    if "mednist" in starts:
        mednist_weights = Path(cfg.mednist.weights) if cfg.mednist.weights else out / "mednist_encoder.pt"
        if mednist_weights.is_file():
            mednist_info = {"weights": str(mednist_weights), "trained": False,
                            "images_per_class": cfg.mednist.per_class, "heldout_accuracy": None, "seconds": 0.0}
            if cfg.only_folds is None and cfg.mednist.root:  # the reused encoder's held-out accuracy, re-measured
                mednist_info.update(mednist_heldout(cfg, mednist_weights))
        else:
            mednist_info = pretrain_mednist(cfg, mednist_weights)

    slice_rows: list[dict[str, Any]] = []
    fold_info: list[dict[str, Any]] = []
    unet_info: list[dict[str, Any]] = []
    key = _resume_key(cfg, starts)
    for f in splits.folds:
        part = out / f"fold_{f.fold}"
        if (part / "DONE").is_file():
            rows_f, info, ui = _load_fold(part, key)
        elif cfg.only_folds is not None and f.fold not in cfg.only_folds:
            continue
        else:
            rows_f, info, ui = _run_fold(f, items, by_pid, classes, starts, cfg, mednist_weights)
            part.mkdir(parents=True, exist_ok=True)
            atomic_write_text(part / "slices.csv", pd.DataFrame(rows_f).to_csv(index=False))
            atomic_write_json(part / "fold.json", {"resume_key": key, "info": info, "unet": ui})
            atomic_write_text(part / "DONE", "")
        slice_rows += rows_f
        fold_info.append(info)
        if ui is not None:
            unet_info.append(ui)
        log.info("radiogenomics transfer: fold %d done (%s)", f.fold, info["seconds"])
    if len(fold_info) < len(splits.folds):
        return {"folds_done": [i["fold"] for i in fold_info], "folds": len(splits.folds)}

    slices = pd.DataFrame(slice_rows)
    tasks = _task_names(cfg.label_column, classes)
    rows = []
    label_of = {it.patient: it.label for it in items}
    fold_of = {p: f.fold for f in splits.folds for p in f.test}
    for s in starts:
        d = slices[slices["start"] == s]
        pats, scores = patient_scores(d[[f"p_{c}" for c in classes]].to_numpy(), d["patient"].tolist())
        n_sl = d.groupby("patient").size()
        for p, sc in zip(pats, scores, strict=True):
            for j, c in enumerate(classes):
                rows.append({"patient": p, "fold": fold_of[p], "start": s, "task": tasks[c], "score": float(sc[j]),
                             "label": int(label_of[p] == j), "y_class": classes[label_of[p]],
                             "n_slices": int(n_sl[p])})
    pred = pd.DataFrame(rows)
    atomic_write_text(out / "predictions.csv", pred.to_csv(index=False))
    atomic_write_text(out / "predictions_slices.csv", slices.to_csv(index=False))
    counts = {c: sum(it.label == j for it in items) for j, c in enumerate(classes)}
    result: dict[str, Any] = {
        "label_column": cfg.label_column, "classes": classes, "task_names": tasks, "starts": starts,
        "n_patients": len(items), "patients_per_class": counts,
        "n_tumour_slices": int(sum(len(it.slices) for it in items)), "excluded": excluded,
        "tasks": _evaluate(pred, starts, tasks, cfg.n_bootstrap, cfg.seed),
        "folds": fold_info, "pretraining": {"mednist": mednist_info, "lgg_unet": unet_info},
        "files": {"predictions": "predictions.csv", "slices": "predictions_slices.csv", "splits": "splits.json"},
        "config": cfg.model_dump(),
        "reduced_vs_paper": REDUCED.format(b=cfg.base_filters, lv=cfg.levels, e=cfg.epochs, bs=cfg.batch_size,
                                           lr=cfg.lr, mpc=cfg.mednist.per_class, me=cfg.mednist.epochs,
                                           ue=cfg.unet.epochs, c=cfg.copies, r=cfg.max_rotate, s=cfg.max_shift),
        "wall_seconds": time.perf_counter() - t_start,
    }
    atomic_write_json(out / "metrics.json", result)
    return result
