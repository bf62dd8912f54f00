"""MTMR-Net study outputs from finished CV runs: Tables II–IV, Fig. 4 cards, Fig. 5 t-SNE, notes and report.

Table III baselines: per CV fold, ``AttributeRegressor`` (LASSO / elastic net with l1 ratio 0.5; penalty from 12
values chosen by an inner 3-fold CV on the training fold only) on (a) handcrafted features = DMRN LBP+HOG
(``handcrafted_features`` at 64 px with 32-px LBP and 16-px HOG patches: 812 values, the ROI being small) of the
network's input ROI concatenated with first-order/GLCM ``roi_features`` inside a disk of the nodule's equivalent
diameter (the shared export has no outlines: the disk, centred, of diameter ``size / diameter_scale`` is the
choice), and
(b) the MTMR-Net embedding ``f`` of that fold's model. ABE is on the original rating scale; IB is the mean
absolute difference between every pair of readers who rated the same nodule.

Table IV: RFE with logistic regression on the **predicted** attributes (CV test predictions of MTMR-Net), refitted
on each CV fold's training nodules (patient-level), relatedness mean ± std over folds. Fig. 5: t-SNE of the
low-ranked attributes (relatedness below the average 1/A) and of all 8, coloured by label.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cadx.classical import (
    AttributeRegressor,
    attribute_relatedness,
    covariate_fusion,
    handcrafted_features,
    inter_reader_abe,
    roi_features,
)
from cadx.config import ExperimentConfig
from cadx.data.splits import Splits
from cadx.evaluation.metrics import abe
from cadx.evaluation.summary import evaluate_predictions
from cadx.explain import tsne_figure
from cadx.pipeline.items import build_store
from cadx.pipeline.preprocess import study_number
from cadx.report.studies import new_figure, save_figure, write_study_notes
from cadx.runs.folder import done_folds, load_cohort, write_run_report
from cadx.runs.inference import infer
from cadx.studies.mtmr.variants import PAPER_CHOICES, VARIANTS
from cadx.training.trainer import load_module
from cadx.utils import atomic_write_json, read_json

SHORT = {"subtlety": "Sub", "internalstructure": "Int", "calcification": "Cal", "sphericity": "Sph",
         "margin": "Mar", "lobulation": "Lob", "spiculation": "Spi", "texture": "Tex"}
#: Table III order of the paper.
ORDER = ["subtlety", "calcification", "sphericity", "margin", "lobulation", "spiculation", "texture",
         "internalstructure"]
PAPER_ABE = {"subtlety": 0.54, "calcification": 0.56, "sphericity": 0.59, "margin": 0.54, "lobulation": 0.54,
             "spiculation": 0.49, "texture": 0.44, "internalstructure": 0.03}
PAPER_TABLE2 = {"accuracy": 0.935, "sensitivity": 0.930, "specificity": 0.894, "auc": 0.979}
METRICS = ("accuracy", "sensitivity", "specificity", "auc")


def _ci(block: dict[str, Any], m: str) -> str:
    v = block.get(m)
    lo, hi = (block.get("ci") or {}).get(m, [None, None]) or [None, None]
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{v:.3f}"


def table2(results: dict[str, dict[str, Any]], names: dict[str, str]) -> dict[str, Any]:
    """Table II rows (value [95 % CI] per metric) plus the paper's row."""
    rows = [[names[v], *[_ci(r["pooled"], m) for m in METRICS]] for v, r in results.items()]
    rows.append(["MTMR-Net (paper, ResNet-152, 224 px)", *[f"{PAPER_TABLE2[m]:.3f}" for m in METRICS]])
    return {"title": "Table II: malignancy classification (pooled 5-fold CV, patient-bootstrap 95 % CI)",
            "columns": ["method", *METRICS], "rows": rows}


def size_reference(cfg: ExperimentConfig, df: pd.DataFrame, diameters: np.ndarray, classes: list[str],
                   folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """Table II reference rows on the same folds: the nodule diameter alone (class-balanced logistic regression on
    log mm, fitted per training fold) and MTMR-Net ⊕ diameter (the mean of the two probabilities; equal weights,
    not tuned). ``df``: MTMR-Net's study predictions; ``diameters`` (mm) in its row order. Returns pooled blocks."""
    pos = classes[1]
    y = (df["y_true"].astype(str) == pos).to_numpy(int)
    p_cov, p_fused = covariate_fusion(df[f"p_{pos}"].to_numpy(float), diameters, y, folds)
    out: dict[str, dict[str, Any]] = {}
    for name, p in (("Nodule diameter alone (logistic regression on log mm)", p_cov),
                    ("MTMR-Net ⊕ diameter (mean of the two probabilities)", p_fused)):
        t = df[["study_id", "patient_id", "fold", "y_true"]].copy()
        t[f"p_{classes[0]}"], t[f"p_{pos}"] = 1.0 - p, p
        ev = evaluate_predictions(t[np.isfinite(p)], classes, n_bootstrap=cfg.eval.bootstrap, seed=cfg.seed)
        out[name] = ev["pooled"]
    return out


def inter_reader_row(cohort: Any, attrs: list[str]) -> dict[str, float]:
    """IB: ``inter_reader_abe`` over the cohort's nodules from ``metadata["ratings"]``."""
    ratings = {a: np.array([[np.nan if r is None else r for r in s.metadata["ratings"][a]] for s in cohort.studies],
                           dtype=np.float64) for a in attrs}
    return inter_reader_abe(ratings)


def handcrafted_matrix(images: np.ndarray, diameter_scale: float) -> np.ndarray:
    """``[LBP+HOG | ROI features in the centred equivalent-diameter disk]`` per ROI image ``(N, 1, H, W)``."""
    x = images[:, 0]
    h, w = x.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    r = max(min(h, w) / diameter_scale / 2.0, 1.5)
    disk = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) <= r * r
    roi = np.array([list(roi_features(im, disk).values()) for im in x], dtype=np.float64)
    return np.concatenate([handcrafted_features(x, lbp_patch=32, hog_patch=16, size=64), roi], axis=1)


def _fit_predict(X: np.ndarray, Y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], method: str,
                 seed: int) -> np.ndarray:
    pred = np.full(Y.shape, np.nan)
    kw: dict[str, Any] = {"l1_ratio": (0.5,)} if method == "elasticnet" else {}
    for tr, te in folds:
        reg = AttributeRegressor(method, cv=3, n_alphas=12, max_iter=2000, random_state=seed, **kw)
        pred[te] = np.clip(reg.fit(X[tr], Y[tr]).predict(X[te]), 0.0, 1.0)
    return pred


def handcrafted_abe(cfg: ExperimentConfig, out: Path) -> dict[str, dict[str, float]]:
    """Table III rows ``LASSO (handcrafted)``/``EN (handcrafted)``: CV on ``out/mtmr/splits.json``, every labelled
    nodule predicted once by the regressor of its test fold. Cached in ``out/handcrafted_abe.json`` (keyed by the
    input config and the splits), so it can run while the networks train."""
    split_path = out / "mtmr" / "splits.json"
    key = hashlib.sha256(json.dumps([cfg.input.model_dump(mode="json"), cfg.data.model_dump(mode="json"),
                                     split_path.read_text(), cfg.seed]).encode()).hexdigest()[:16]
    cache = out / "handcrafted_abe.json"
    if cache.is_file() and read_json(cache).get("key") == key:
        return dict(read_json(cache)["rows"])
    t0 = time.perf_counter()
    cohort = load_cohort(cfg, out)
    store = build_store(cohort, cfg, progress=False)
    ranges: dict[str, Any] = cohort.info["attribute_ranges"]
    attrs = [a for a in ORDER if a in store.attribute_names]
    rows = np.flatnonzero(store.labels >= 0)
    first = np.array([int(np.flatnonzero(store.study == i)[0]) for i in rows])
    X = handcrafted_matrix(store.images[first].numpy(), cfg.input.diameter_scale)
    Y = store.attributes[rows][:, [store.attribute_names.index(a) for a in attrs]].astype(np.float64)
    pos = {int(s): r for r, s in enumerate(rows)}
    folds = [(np.array([pos[i] for i in f.indices(cohort, "train") if i in pos]),
              np.array([pos[i] for i in f.indices(cohort, "test") if i in pos])) for f in Splits.load(split_path)]
    res = {f"{label} (handcrafted)": _abe_row(_fit_predict(X, Y, folds, method, cfg.seed), Y, attrs, ranges)
           for method, label in (("lasso", "LASSO"), ("elasticnet", "EN"))}
    atomic_write_json(cache, {"key": key, "rows": res, "features": int(X.shape[1]),
                              "seconds": round(time.perf_counter() - t0, 1)})
    return res


def _abe_row(pred: np.ndarray, true: np.ndarray, attrs: list[str], ranges: dict[str, Any]) -> dict[str, float]:
    return {a: float(abe(pred[:, j], true[:, j], ranges[a])) for j, a in enumerate(attrs)}


def _cards(df: pd.DataFrame, store: Any, index: dict[str, int], attrs: list[str], ranges: dict[str, Any],
           path: Path, seed: int) -> Path:
    """Fig. 4-style cards: 2 benign + 2 malignant test nodules (seeded), crop + predicted vs readers' mean."""
    rng = np.random.default_rng(seed)
    picks = []
    for cls in ("benign", "malignant"):
        ids = df.loc[df["y_true"] == cls, "study_id"].astype(str).to_numpy()
        picks += list(rng.choice(ids, size=min(2, ids.size), replace=False))
    fig = new_figure(9, 2.6 * len(picks))
    lab = [SHORT[a] for a in attrs]
    for i, sid in enumerate(picks):
        row = df.loc[df["study_id"].astype(str) == sid].iloc[0]
        item = int(np.flatnonzero(store.study == index[sid])[0])
        ax = fig.add_subplot(len(picks), 2, 2 * i + 1)
        ax.imshow(store.images[item, 0].numpy(), cmap="gray")
        ax.set_axis_off()
        ax.set_title(f"nodule {sid} ({row['y_true']}); P(malignant) = {row['p_malignant']:.2f}", fontsize=9)
        lo = np.array([ranges[a][0] for a in attrs], float)
        span = np.array([ranges[a][1] - ranges[a][0] for a in attrs], float)
        p = lo + row[[f"pred_{a}" for a in attrs]].to_numpy(float) * span
        t = lo + row[[f"true_{a}" for a in attrs]].to_numpy(float) * span
        bx = fig.add_subplot(len(picks), 2, 2 * i + 2)
        k = np.arange(len(attrs))
        bx.bar(k - 0.2, p, 0.4, label="predicted")
        bx.bar(k + 0.2, t, 0.4, label="readers' mean")
        bx.set_xticks(k, lab, fontsize=8)
        bx.set_ylim(0, 6)
        if i == 0:
            bx.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def build_study_outputs(cfg: ExperimentConfig, out: Path, results: dict[str, dict[str, Any]],
                        seconds: dict[str, float], regressors: bool = True, t0: float | None = None) -> dict[str, Any]:
    """Tables/figures/notes/report of the study folder ``out`` from the variants' finished runs."""
    t_start = time.perf_counter() if t0 is None else t0
    run = out / "mtmr"
    cohort = load_cohort(cfg, run)
    splits = Splits.load(run / "splits.json")
    ranges: dict[str, Any] = cohort.info["attribute_ranges"]
    store = build_store(cohort, cfg, progress=False)
    attrs = [a for a in ORDER if a in store.attribute_names]
    col = [store.attribute_names.index(a) for a in attrs]
    index = {s: i for i, s in enumerate(store.study_ids)}
    df = pd.read_csv(run / "predictions.csv", dtype={"study_id": str})
    df = df.set_index("study_id").loc[[s for s in store.study_ids if s in set(df["study_id"])]].reset_index()
    rows_of = np.array([index[s] for s in df["study_id"]])  # predictions row → cohort study
    pos = {int(s): r for r, s in enumerate(rows_of)}
    folds = [(np.array([pos[i] for i in f.indices(cohort, "train") if i in pos]),
              np.array([pos[i] for i in f.indices(cohort, "test") if i in pos])) for f in splits]
    true = df[[f"true_{a}" for a in attrs]].to_numpy(float)
    labels = np.array([store.classes.index(c) if isinstance(c, str) else -1 for c in df["y_true"]])
    extra_t: list[dict[str, Any]] = [table2(results, VARIANTS)]
    study: dict[str, Any] = {"table2": {v: {m: r["pooled"].get(m) for m in METRICS} | {"ci": r["pooled"].get("ci")}
                                        for v, r in results.items()}, "seconds": dict(seconds)}
    if len(store.classes) == 2:
        diam = np.array([study_number(cohort.studies[i], cfg.input.diameter_attribute) or np.nan for i in rows_of])
        if np.isfinite(diam).all() and (diam > 0).all():
            ref = size_reference(cfg, df, diam, list(store.classes), folds)
            extra_t[0]["rows"][-1:-1] = [[k, *[_ci(b, m) for m in METRICS]] for k, b in ref.items()]
            study["table2_reference"] = {k: {m: b.get(m) for m in METRICS} | {"ci": b.get("ci")}
                                         for k, b in ref.items()}

    # --- Table III ------------------------------------------------------------------------------------------
    abe_rows: dict[str, dict[str, float]] = {
        "MTMR-Net": _abe_row(df[[f"pred_{a}" for a in attrs]].to_numpy(float), true, attrs, ranges)}
    if regressors:
        tr0 = time.perf_counter()
        imgs = store.images[np.array([int(np.flatnonzero(store.study == i)[0]) for i in rows_of])]
        abe_rows.update(handcrafted_abe(cfg, out))
        feats: dict[str, np.ndarray] = {}
        for k, fd in enumerate(done_folds(run)):
            model, _ = load_module(fd / "checkpoint_best.ckpt")
            with torch.no_grad():
                feats[f"cnn_fold{k}"] = infer(model, imgs, cfg.train.eval_batch_size, features="features")["features"]
        for method, label in (("lasso", "LASSO"), ("elasticnet", "EN")):
            pred = np.full(true.shape, np.nan)
            for k, fo in enumerate(folds):  # each fold's regressor sees that fold's network embedding
                pred[fo[1]] = _fit_predict(feats[f"cnn_fold{k}"], true, [fo], method, cfg.seed)[fo[1]]
            abe_rows[f"{label} (CNN embedding)"] = _abe_row(pred, true, attrs, ranges)
        study["regressor_seconds"] = round(time.perf_counter() - tr0, 1)
    abe_rows["IB (inter-reader)"] = inter_reader_row(cohort, attrs)
    abe_rows["MTMR-Net (paper)"] = dict(PAPER_ABE)
    extra_t.append({"title": "Table III: ABE per attribute on the original rating scale (CV test nodules)",
                    "columns": ["method", *[SHORT[a] for a in attrs]],
                    "rows": [[k, *[round(v[a], 3) for a in attrs]] for k, v in abe_rows.items()]})
    study["table3"] = abe_rows

    # --- Table IV and Fig. 5 ----------------------------------------------------------------------------------
    pred01 = df[[f"pred_{a}" for a in attrs]].to_numpy(float)
    rel = attribute_relatedness(pred01, labels, names=attrs, folds=[tr for tr, _ in folds],
                                groups=df["patient_id"].astype(str).to_numpy(), seed=cfg.seed)
    rm, rs = rel["relatedness_mean"].to_dict(), rel["relatedness_std"].to_dict()
    rk, above = rel["rank"].to_dict(), rel["above_average"].to_dict()
    extra_t.append({"title": "Table IV: RFE relatedness of the predicted attributes to malignancy (mean ± std "
                             "over CV training folds)", "columns": ["attribute", "relatedness", "rank"],
                    "rows": [[SHORT[a], f"{float(rm[a]):.3f} ± {float(rs[a]):.3f}", int(rk[a])] for a in attrs]})
    study["table4"] = {a: {"mean": float(rm[a]), "std": float(rs[a]), "rank": int(rk[a])} for a in attrs}
    low = [a for a in attrs if not bool(above[a])] or attrs[-4:]
    figs = []
    fdir = out / "figures"
    fdir.mkdir(exist_ok=True)
    for tag, use in (("low", low), ("all", attrs)):
        p = fdir / f"fig5_tsne_{tag}.png"
        tsne_figure(pred01[:, [attrs.index(a) for a in use]], labels, store.classes, p, seed=cfg.seed,
                    title=f"t-SNE of predicted {'low-ranked' if tag == 'low' else 'all'} attributes "
                          f"({', '.join(SHORT[a] for a in use)})")
        figs.append({"title": f"Fig. 5: t-SNE of the {'low-ranked' if tag == 'low' else 'all 8'} predicted "
                              "attributes, coloured by label", "path": f"figures/{p.name}"})
    p = _cards(df, store, index, attrs, ranges, fdir / "fig4_cards.png", cfg.seed)
    figs.append({"title": "Fig. 4: nodules with predicted malignancy and attribute scores vs the readers' mean",
                 "path": f"figures/{p.name}"})
    del col

    mt = results["mtmr"]
    study["seconds_total"] = round(time.perf_counter() - t_start, 1)
    metrics = {"pooled": mt["pooled"], "folds": mt.get("folds", {}), "classes": mt.get("classes"),
               "bootstrap": mt.get("bootstrap"),
               "run": {**mt.get("run", {}), "name": f"{cfg.name} study", "variants": list(results)},
               "study": study, "extra": {"tables": extra_t, "figures": figs}}
    atomic_write_json(out / "metrics.json", metrics)
    write_notes(cfg, out, study)
    (out / "config.yaml").write_text((run / "config.yaml").read_text())
    write_run_report([out], out)
    return read_json(out / "metrics.json")


def write_notes(cfg: ExperimentConfig, out: Path, study: dict[str, Any]) -> Path:
    """``out/notes.md``: the run's settings, where it departs from or interprets the paper, the ablation
    directions and the wall times."""
    t2 = study["table2"]
    direction = {v: ("higher" if (t2[v]["auc"] or 0) < (t2["mtmr"]["auc"] or 0) else "not higher")
                 for v in t2 if v != "mtmr"}
    settings = (
        f"Input: {cfg.input.kind} {cfg.input.size} px, window {cfg.input.window}, ROI {cfg.input.roi} × "
        f"{cfg.input.diameter_scale}; model {cfg.model.name} {cfg.model.kwargs}; objective {cfg.objective}, "
        f"pairs {cfg.pairs}; optimiser {cfg.optim.name} lr {cfg.optim.lr} groups "
        f"{[(g.prefixes, g.lr) for g in cfg.optim.groups]} weight decay (η) {cfg.optim.weight_decay}; schedule "
        f"{cfg.schedule.name} ×{cfg.schedule.gamma}/{cfg.schedule.step_size} ep; {cfg.train.epochs} epochs, batch "
        f"{cfg.train.batch_size}; sampler {cfg.sampler.kind}; {cfg.cv.folds}-fold patient-level CV.")
    ablations = [
        "Without L_reg = attribute branch removed (classifier on f only); without L_rank = no pairs.",
        "Ablations: MTMR-Net AUC is " + ", ".join(f"{d} than {v}" for v, d in direction.items())
        + " (the paper's direction is: full model higher than both)."]
    wall = ("Wall time (s): " + ", ".join(f"{k} {v}" for k, v in study["seconds"].items())
            + f"; regressors {study.get('regressor_seconds', 'skipped')}; whole study {study['seconds_total']}.")
    return write_study_notes(out, f"MTMR-Net study ({cfg.name})", [
        (None, settings), ("Paper → engine choices", PAPER_CHOICES), ("Ablations", ablations), (None, wall)])
