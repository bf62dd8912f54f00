"""Thesis A.5 on BUSI, reduced for a CPU: caliper detection against the hand annotations, caliper → approximate
masks, and the three U-Net training modes scored on the expert masks, plus a learning curve.

Steps (each writes its files into the study folder; finished (mode, fold) and learning-curve cells are reused on
a rerun, so the study resumes):

1. :func:`evaluate_detector`: candidates of :func:`cadx.classical.calipers.candidates` on every annotated image,
   the threshold chosen on the other folds (folds over near-duplicate groups), out-of-fold precision/recall at
   ``detector.tol`` px (``detector.json``, ``detector_points.csv``).
2. :func:`build_items`: lesion images (``classes``) through :func:`cadx.pipeline.ultrasound.ultrasound_roi` at
   ``train.size``, with the expert mask and the approximate mask: from the detector's out-of-fold points when
   they are usable (2 or 4), else from :func:`cadx.data.calipers.simulated_calipers` on the expert mask
   (``caliper_source`` = ``detected`` | ``simulated``; ``approx_masks.csv`` gives each approximate mask's Dice
   against the expert mask).
3. :func:`run_modes`: ``train.folds``-fold CV over near-duplicate groups (validation groups drawn from the training
   groups), the same splits and seeds for every mode; per-image Dice on the expert test masks
   (``dice_per_image.csv``).
4. :func:`run_learning_curve`: fold 0, training fractions × repeats (``learning_curve.csv``).

Tables, figures and ``report.md`` come from :mod:`cadx.studies.calipers.tables`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from cadx.classical.calipers import candidates, cv_threshold, usable
from cadx.data.calipers import format_calipers, points_to_mask, simulated_calipers
from cadx.data.datasets import load_dataset
from cadx.errors import CadxDataError
from cadx.evaluation.overlap import dice
from cadx.models import create_model
from cadx.objectives import build_objective
from cadx.pipeline.ultrasound import fit_zscore, ultrasound_roi
from cadx.studies.calipers.tables import write_tables
from cadx.studies.calipers.variants import MODES, CalipersConfig
from cadx.utils import atomic_write_json

__all__ = ["Items", "build_items", "evaluate_detector", "group_folds", "read_annotations", "run_calipers_study",
           "run_learning_curve", "run_modes", "train_unet"]

Items = dict[str, Any]


def read_annotations(path: Path) -> dict[str, np.ndarray]:
    """``file → (N, 2)`` annotated caliper points from the CSV (``file, x, y, n_calipers``; an image without
    calipers has one row with empty x, y and ``n_calipers`` 0). A row whose x/y is half empty or not a number, or
    whose ``n_calipers`` disagrees with the image's row count, raises one-line CadxDataError naming the field."""
    if not path.is_file():
        raise CadxDataError("caliper annotation CSV not found", path=path, field="annotations")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col in ("file", "x", "y", "n_calipers"):
        if col not in df.columns:
            raise CadxDataError(f"missing column (has {list(df.columns)})", path=path, field=col)
    out: dict[str, list[tuple[float, float]]] = {}
    for i, r in df.iterrows():
        line = int(str(i)) + 2
        f = r["file"].strip()
        out.setdefault(f, [])
        x, y = r["x"].strip(), r["y"].strip()
        if not x and not y:
            continue
        for name, v in (("x", x), ("y", y)):
            try:
                float(v)
            except ValueError:
                raise CadxDataError(f"row {line} ({f}): {name} {v!r} is not a number", path=path,
                                    field=name) from None
        out[f].append((float(x), float(y)))
    for f, pts in out.items():
        n = set(df.loc[df["file"].str.strip() == f, "n_calipers"].astype(int))
        if n != {len(pts)}:
            raise CadxDataError(f"{f}: n_calipers {sorted(n)} but {len(pts)} point rows", path=path,
                                field="n_calipers")
    return {f: np.asarray(p, float).reshape(-1, 2) for f, p in out.items()}


def group_folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id per item: unique groups shuffled by ``seed`` and dealt round-robin to ``k`` folds (a group never
    spans folds)."""
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    order = uniq[rng.permutation(len(uniq))]
    fold_of = {g: i % k for i, g in enumerate(order)}
    return np.asarray([fold_of[g] for g in groups])


def _file_of(study_id: str) -> str:
    cls, stem = study_id.split("/", 1)
    return f"{cls}/{stem}.png"


def _cached_candidates(path: Path, files: list[str], by_file: dict[str, Any],
                       min_distance: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`candidates` of every file, reused from ``path`` when it holds the same files and ``min_distance``
    (the slow part of step 1; a rerun of the study then only redoes the cheap threshold choice)."""
    key = np.asarray([*files, f"min_distance={min_distance}"])
    if path.is_file():
        with np.load(path) as z:
            if np.array_equal(z["key"], key):
                return [(z[f"p{i}"], z[f"s{i}"]) for i in range(len(files))]
    cands = [candidates(by_file[f].images["image"].load().array, min_distance=min_distance) for f in files]
    arrays = {f"p{i}": c[0] for i, c in enumerate(cands)} | {f"s{i}": c[1] for i, c in enumerate(cands)}
    np.savez_compressed(path, key=key, **arrays)  # type: ignore[arg-type]
    return cands


def evaluate_detector(cfg: CalipersConfig, cohort: Any, annotations: dict[str, np.ndarray],
                      out_dir: Path) -> dict[str, Any]:
    """Out-of-fold detector precision/recall on the annotated images (step 1); returns the JSON it writes, with
    ``points`` = ``file → (N, 2)`` out-of-fold detections (not written to JSON; see ``detector_points.csv``)."""
    d = cfg.detector
    by_file = {_file_of(s.study_id): s for s in cohort.studies}
    files = [f for f in annotations if f in by_file]
    missing = [f for f in annotations if f not in by_file]
    if missing:
        raise CadxDataError(f"annotated image not in the cohort: {missing[0]}", field="annotations")
    t0 = time.time()
    cands = _cached_candidates(out_dir / "detector_candidates.npz", files, by_file, d.min_distance)
    seconds = time.time() - t0
    groups = np.asarray([by_file[f].patient_id for f in files])
    folds = group_folds(groups, d.folds, cfg.seed)
    truths = [annotations[f] for f in files]
    lo, hi, step = d.grid
    grid = [round(float(v), 4) for v in np.arange(lo, hi + step / 2, step)]
    r = cv_threshold(cands, truths, folds, d.tol, grid=grid, max_points=d.max_points)
    preds = r.predictions
    c = r.counts
    n_true = np.asarray([len(t) for t in truths])
    n_pred = np.asarray([len(p) for p in preds])
    rows = [{"file": f, "fold": int(k), "n_annotated": int(nt), "n_detected": int(npd),
             "usable_annotated": bool(nt in (2, 4)), "usable_detected": bool(npd in (2, 4)),
             "tp": m.tp, "fp": m.fp, "fn": m.fn, "detected": format_calipers(p)}
            for f, k, nt, npd, m, p in zip(files, folds, n_true, n_pred, r.per_image, preds, strict=True)]
    pd.DataFrame(rows).to_csv(out_dir / "detector_points.csv", index=False)
    with_cal = n_true > 0
    image_hit = [(nt > 0) == (npd > 0) for nt, npd in zip(n_true, n_pred, strict=True)]
    res: dict[str, Any] = {
        "tolerance_px": d.tol, "folds": d.folds, "fold_thresholds": r.thresholds,
        "points_annotated": int(n_true.sum()), "points_detected": int(n_pred.sum()),
        "tp": c.tp, "fp": c.fp, "fn": c.fn, "precision": c.precision, "recall": c.recall, "f1": c.f1,
        "images": len(files), "images_with_calipers_annotated": int(with_cal.sum()),
        "images_usable_annotated": int(sum(nt in (2, 4) for nt in n_true)),
        "images_with_detections": int((n_pred > 0).sum()),
        "images_usable_detected": int(sum(npd in (2, 4) for npd in n_pred)),
        "image_level_agreement": float(np.mean(image_hit)),
        "false_positive_points_on_images_without_calipers": int(sum(
            len(p) for p, nt in zip(preds, n_true, strict=True) if nt == 0)),
        "candidate_seconds": round(seconds, 1),
        "note": "threshold chosen per fold on the other folds' images (best F1, ties to the higher threshold); "
                "folds over near-duplicate groups; one-to-one Hungarian matching within the tolerance"}
    atomic_write_json(out_dir / "detector.json", res)
    return {**res, "points": dict(zip(files, preds, strict=True))}


def build_items(cfg: CalipersConfig, cohort: Any, detected: dict[str, np.ndarray], out_dir: Path) -> Items:
    """Step 2: arrays of the lesion images at ``train.size``: ``image`` (N, S, S) float in [0, 1] (stretched,
    not yet z-scored), ``expert`` and ``approx`` (N, S, S) uint8, ``study_id``, ``group``, ``label``,
    ``source`` (``detected`` | ``simulated``). Writes ``approx_masks.csv``."""
    size = cfg.train.size
    imgs, experts, approxs, sids, groups, labels, sources, rows = [], [], [], [], [], [], [], []
    for s in cohort.studies:
        if s.label not in cfg.classes:
            continue
        img = s.images["image"].load().array
        expert = s.masks["mask"].load().array[0] > 0
        f = _file_of(s.study_id)
        pts = detected.get(f, np.zeros((0, 2)))
        if usable(pts):
            src = "detected"
        else:
            src, pts = "simulated", simulated_calipers(expert)
        approx = points_to_mask(pts, expert.shape)
        roi = ultrasound_roi(img, [expert, approx], size=size)
        imgs.append(roi.image.astype(np.float32))
        experts.append(roi.masks[0])
        approxs.append(roi.masks[1])
        sids.append(s.study_id)
        groups.append(s.patient_id)
        labels.append(s.label)
        sources.append(src)
        rows.append({"study_id": s.study_id, "group": s.patient_id, "label": s.label, "caliper_source": src,
                     "calipers": format_calipers(pts), "approx_dice_original": dice(approx, expert),
                     "approx_dice_input": dice(roi.masks[1], roi.masks[0])})
    pd.DataFrame(rows).to_csv(out_dir / "approx_masks.csv", index=False)
    return {"image": np.stack(imgs), "expert": np.stack(experts), "approx": np.stack(approxs),
            "study_id": np.asarray(sids), "group": np.asarray(groups), "label": np.asarray(labels),
            "source": np.asarray(sources)}


def _inputs(items: Items, idx: np.ndarray, mode: str, mean: float, std: float) -> torch.Tensor:
    x = (items["image"][idx] - mean) / std
    chans = [x]
    if MODES[mode][0] == 2:
        chans.append(items["approx"][idx].astype(np.float32))
    return torch.from_numpy(np.stack(chans, axis=1).astype(np.float32))


def _augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, shift: float,
             flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random horizontal flip and a zero-filled shift up to ``shift``·side px (image and target)."""
    xs, ys = x.clone(), y.clone()
    side = x.shape[-1]
    m = round(shift * side)
    for i in range(x.shape[0]):
        if flip and rng.random() < 0.5:
            xs[i], ys[i] = xs[i].flip(-1), ys[i].flip(-1)
        if m > 0:
            dy, dx = (int(v) for v in rng.integers(-m, m + 1, size=2))
            xs[i] = _shift(xs[i], dy, dx)
            ys[i] = _shift(ys[i], dy, dx)
    return xs, ys


def _shift(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.zeros_like(t)
    h, w = t.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = t[..., ys, xs]
    return out


def train_unet(items: Items, train: np.ndarray, val: np.ndarray, mode: str, cfg: CalipersConfig, seed: int,
               base_filters: int | None = None, epochs: int | None = None) -> tuple[torch.nn.Module, float, float,
                                                                                      list[dict[str, float]]]:
    """Train the U-Net of ``mode`` on items ``train`` (targets per :data:`MODES`), early stopping on the
    validation Dice loss of ``val`` (same target kind) with ``train.patience``; returns the best model (eval
    mode), the training-set z-score mean/std and the history (epoch, train_loss, val_loss)."""
    t = cfg.train
    in_ch, target = MODES[mode]
    mean, std = fit_zscore(list(items["image"][train]))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # weight init of create_model uses torch's default generator
    model = create_model("unet", num_classes=0, in_channels=in_ch, num_seg_classes=1,
                         base_filters=base_filters or t.base_filters, levels=t.levels)
    obj = build_objective({"dice": 1.0})
    opt = torch.optim.Adam(model.parameters(), lr=t.lr)
    rng = np.random.default_rng(seed)
    xv = _inputs(items, val, mode, mean, std)
    yv = torch.from_numpy(items[target][val][:, None].astype(np.float32))
    best, best_loss, bad, hist = copy.deepcopy(model.state_dict()), float("inf"), 0, []
    for ep in range(epochs or t.epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=gen).numpy()]
        losses = []
        for b in range(0, len(order), t.batch_size):
            idx = order[b:b + t.batch_size]
            if len(idx) < 2:  # BatchNorm needs 2 samples
                continue
            x = _inputs(items, idx, mode, mean, std)
            y = torch.from_numpy(items[target][idx][:, None].astype(np.float32))
            x, y = _augment(x, y, rng, t.shift, t.flip)
            loss, _ = obj({"seg_logits": model(x)["seg_logits"]}, {"mask": y})
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            vl, _ = obj({"seg_logits": model(xv)["seg_logits"]}, {"mask": yv})
        hist.append({"epoch": ep + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                     "val_loss": float(vl)})
        if float(vl) < best_loss - 1e-6:
            best, best_loss, bad = copy.deepcopy(model.state_dict()), float(vl), 0
        else:
            bad += 1
            if bad >= t.patience:
                break
    model.load_state_dict(best)
    model.eval()
    return model, mean, std, hist


def _predict_dice(model: torch.nn.Module, items: Items, test: np.ndarray, mode: str, mean: float,
                  std: float) -> np.ndarray:
    """Per-image Dice of ``sigmoid > 0.5`` against the **expert** masks (empty vs empty = 1)."""
    with torch.no_grad():
        logits = model(_inputs(items, test, mode, mean, std))["seg_logits"][:, 0].numpy()
    return np.asarray([dice(p > 0, g) for p, g in zip(logits, items["expert"][test], strict=True)])


def _split(items: Items, cfg: CalipersConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per fold (train, val, test) item indices; val = ``val_fraction`` of the training groups (seeded)."""
    groups = items["group"]
    folds = group_folds(groups, cfg.train.folds, cfg.seed)
    out = []
    for k in range(cfg.train.folds):
        test = np.nonzero(folds == k)[0]
        rest = np.nonzero(folds != k)[0]
        g = np.unique(groups[rest])
        rng = np.random.default_rng(cfg.seed + 1000 + k)
        n_val = max(1, round(cfg.train.val_fraction * len(g)))
        val_groups = set(rng.choice(g, size=n_val, replace=False).tolist())
        val = np.asarray([i for i in rest if groups[i] in val_groups])
        train = np.asarray([i for i in rest if groups[i] not in val_groups])
        out.append((train, val, test))
    return out


def run_modes(cfg: CalipersConfig, items: Items, out_dir: Path,
              log: Callable[[str], None] = print) -> pd.DataFrame:
    """Step 3: every mode on every fold (cells already in ``cells/`` are reused); writes
    ``dice_per_image.csv`` (study_id, group, label, caliper_source, fold, mode, dice) and ``training.csv``."""
    cells = out_dir / "cells"
    cells.mkdir(exist_ok=True)
    frames, hist_rows = [], []
    for k, (train, val, test) in enumerate(_split(items, cfg)):
        for mode in cfg.modes:
            path = cells / f"{mode}_fold{k}.csv"
            hpath = cells / f"{mode}_fold{k}_history.csv"
            if not path.is_file():
                t0 = time.time()
                model, mean, std, hist = train_unet(items, train, val, mode, cfg, seed=cfg.seed + k)
                d = _predict_dice(model, items, test, mode, mean, std)
                secs = time.time() - t0
                pd.DataFrame({"study_id": items["study_id"][test], "group": items["group"][test],
                              "label": items["label"][test], "caliper_source": items["source"][test],
                              "fold": k, "mode": mode, "dice": d}).to_csv(path, index=False)
                pd.DataFrame([{**h, "seconds_total": round(secs, 1), "n_train": len(train), "n_val": len(val),
                               "n_test": len(test)} for h in hist]).to_csv(hpath, index=False)
                log(f"{mode} fold {k}: mean Dice {d.mean():.3f} ({len(hist)} epochs, {secs:.0f} s)")
            frames.append(pd.read_csv(path))
            hist_rows.append(pd.read_csv(hpath).assign(mode=mode, fold=k))
    df = pd.concat(frames, ignore_index=True)
    df.to_csv(out_dir / "dice_per_image.csv", index=False)
    pd.concat(hist_rows, ignore_index=True).to_csv(out_dir / "training.csv", index=False)
    return df


def run_learning_curve(cfg: CalipersConfig, items: Items, out_dir: Path,
                       log: Callable[[str], None] = print) -> pd.DataFrame:
    """Step 4: on fold 0's split, each fraction of the training **groups** (seeded by (seed, fraction, repeat)),
    each repeat, each mode: mean and median Dice on fold 0's test images (``learning_curve.csv``)."""
    lc = cfg.learning_curve
    path = out_dir / "learning_curve.csv"
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    rows = done.to_dict("records")
    have = {(r["mode"], float(r["fraction"]), int(r["repeat"])) for r in rows}
    train, val, test = _split(items, cfg)[0]
    groups = np.unique(items["group"][train])
    for frac in lc.fractions:
        for rep in range(lc.repeats):
            rng = np.random.default_rng([cfg.seed, round(frac * 1000), rep])
            n = max(2, round(frac * len(groups)))
            keep = set(rng.choice(groups, size=min(n, len(groups)), replace=False).tolist())
            sub = np.asarray([i for i in train if items["group"][i] in keep])
            for mode in lc.modes:
                if (mode, float(frac), rep) in have:
                    continue
                t0 = time.time()
                model, mean, std, hist = train_unet(items, sub, val, mode, cfg, seed=cfg.seed + 100 * rep + 7,
                                                    base_filters=lc.base_filters, epochs=lc.epochs)
                d = _predict_dice(model, items, test, mode, mean, std)
                rows.append({"mode": mode, "fraction": float(frac), "repeat": rep, "n_train": len(sub),
                             "dice_mean": float(d.mean()), "dice_median": float(np.median(d)),
                             "epochs": len(hist), "seconds": round(time.time() - t0, 1)})
                pd.DataFrame(rows).to_csv(path, index=False)
                log(f"learning curve {mode} {frac:g} #{rep}: {d.mean():.3f}")
    return pd.DataFrame(rows)


def run_calipers_study(cfg: CalipersConfig, out_dir: str | Path, project: str | Path = ".",
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole study into ``out_dir`` (resumable) and write its tables/report; returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root, ann_path = cfg.resolve(project)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    (out / "config.yaml").write_text(_yaml(cfg), encoding="utf-8")
    t0 = time.time()
    cohort = load_dataset("busi", root)
    annotations = read_annotations(ann_path)
    det = evaluate_detector(cfg, cohort, annotations, out)
    log(f"detector: precision {det['precision']:.3f}, recall {det['recall']:.3f} at {det['tolerance_px']} px")
    items = build_items(cfg, cohort, det["points"], out)
    log(f"{len(items['study_id'])} lesion images; detected usable calipers: {(items['source'] == 'detected').sum()}")
    df = run_modes(cfg, items, out, log)
    lc = run_learning_curve(cfg, items, out, log) if cfg.learning_curve.enabled else pd.DataFrame()
    return write_tables(cfg, out, df, lc, time.time() - t0)


def _yaml(cfg: CalipersConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
