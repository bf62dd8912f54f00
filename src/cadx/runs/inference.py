"""The ONE classification prediction path: trained model(s) → item outputs → slice rows → study rows
(``eval.aggregation``, :mod:`cadx.evaluation.aggregation`) → decision (``eval.decision``) → study predictions.

:func:`predict_rows` runs the whole chain for stored items; cv (:func:`cadx.runs.network.run_fold` with
:func:`cadx.runs.folder.finish_fold`), ``cadx predict``, ``cadx evaluate``, the partial-run evaluation and the
studies call it, so a study gets the same answer from each of them when the same model scores it.

Decision parameters (``decision_fit`` in ``fold_<k>/metrics.json`` and ``final/metrics.json``):
``{"rule": "argmax"|"prior"|"youden"|"sensitivity", "priors": [K floats] | None, "threshold": float | None,
"positive": class name (binary), "fit_split": "validation"|"train", "calibration": {...} (eval.calibration)}``,
fitted per fold by :func:`fold_decision` — ``prior``: the class frequencies of the fold's training studies (before
any resampling); ``youden`` / ``sensitivity`` (the highest threshold reaching ``eval.target_sensitivity``): a
threshold on the probability of the positive class (``eval.positive``) of the fold's validation studies (its
training studies when it has none: ``fit_split: train``), scored by the same model and aggregation; never on the
test studies. ``eval.decision: auto`` (the default) resolves to ``youden`` (``sensitivity`` when a target is set)
for binary tasks and ``argmax`` for multi-class (:func:`resolve_rule`; ``requested: auto`` is kept).

Calibration (``eval.calibration``: temperature | platt | isotonic, :mod:`cadx.evaluation.calibration`): a map of the
study probabilities fitted on the fold's validation studies only — a fold without validation patients is not
calibrated (``fitted: false`` and the reason). Study rows are aggregated → calibrated (``p_<class>`` become the
calibrated probabilities, the originals are kept as ``raw_p_<class>``) → decided, and the threshold is fitted on
calibrated validation probabilities. Several models (a fold ensemble) are decided with :func:`combine_decisions`:
the mean of their priors, the mean of their thresholds, the mean of their calibration maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pandas as pd
import torch

from cadx.classical.svm_file import read_svm
from cadx.config import ExperimentConfig
from cadx.errors import CadxDataError
from cadx.evaluation.aggregation import aggregate_predictions
from cadx.evaluation.calibration import apply_calibration, fit_calibration
from cadx.evaluation.overlap import dice
from cadx.evaluation.summary import class_key, positive_index
from cadx.evaluation.thresholds import class_priors, decide, sensitivity_threshold, youden_threshold
from cadx.pipeline.items import ItemStore
from cadx.runs.onnx_backend import MODEL_FILE, load_onnx_module
from cadx.training.checkpoint import load_module
from cadx.utils import read_json

Decision = dict[str, Any]
RULES = ("argmax", "prior", "youden", "sensitivity")
THRESHOLD_RULES = ("youden", "sensitivity")


def resolve_rule(rule: str, n_classes: int, target_sensitivity: float | None = None) -> str:
    """The decision rule a config's ``eval.decision`` means for a task with ``n_classes`` classes: ``auto`` →
    ``sensitivity`` (binary with a target) / ``youden`` (binary) / ``argmax`` (multi-class or no classes); other
    rules as they are."""
    if rule != "auto":
        return rule
    if n_classes == 2:
        return "sensitivity" if target_sensitivity is not None else "youden"
    return "argmax"


def device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def tta_flips(spatial_dims: int) -> list[tuple[int, ...]]:
    """Flip sets of ``eval.tta: flips``: the identity and each single spatial axis flipped (``1 + dims`` views).

    Axes are tensor dims of ``(B, C, *spatial)``; the identity is ``()``."""
    return [(), *[(2 + a,) for a in range(spatial_dims)]]


@torch.no_grad()
def infer(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256, features: str | None = None,
          masks: torch.Tensor | None = None, tta: str = "none") -> dict[str, np.ndarray]:
    """Run ``model`` (eval mode) over ``images`` ``(N, C, *size)``.

    Returns ``proba`` ``(N, K)`` (softmax of logits, when the model has logits), ``attributes`` ``(N, A)``,
    ``features`` ``(N, D)`` when ``features`` is ``"features"`` or ``"embedding"`` (the last stage embedding), and,
    for segmentation models with ``masks`` given, ``inter``/``pred_sum``/``true_sum`` voxel counts ``(N,)``.
    ``tta="flips"``: probabilities, attributes and features are the mean over :func:`tta_flips` views (the
    segmentation counts always come from the unflipped view).
    """
    dev = device()
    model = model.to(dev).eval()
    views = tta_flips(images.ndim - 2) if tta == "flips" else [()]
    acc: dict[str, list[np.ndarray]] = {}
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].to(dev)
        outs = [model(x.flip(v) if v else x) for v in views]
        out = outs[0]
        if "logits" in out:
            p = torch.stack([torch.softmax(o["logits"].float(), 1) for o in outs]).mean(0)
            acc.setdefault("proba", []).append(p.cpu().numpy())
        if "attributes" in out:
            a = torch.stack([o["attributes"].float() for o in outs]).mean(0)
            acc.setdefault("attributes", []).append(a.cpu().numpy())
        if features is not None:
            fs = [o["embeddings"][-1] if features == "embedding" and "embeddings" in o else o["features"]
                  for o in outs]
            acc.setdefault("features", []).append(torch.stack([f.float() for f in fs]).mean(0).cpu().numpy())
        if "seg_logits" in out and masks is not None:
            s = out["seg_logits"].float()
            pred = (s.argmax(1, keepdim=True) > 0) if s.shape[1] > 1 else (s > 0)
            t = masks[i:i + batch_size].to(dev) > 0.5
            dims = tuple(range(1, pred.ndim))
            acc.setdefault("inter", []).append((pred & t).sum(dims).cpu().numpy())
            acc.setdefault("pred_sum", []).append(pred.sum(dims).cpu().numpy())
            acc.setdefault("true_sum", []).append(t.sum(dims).cpu().numpy())
    model.cpu()
    return {k: np.concatenate(v) for k, v in acc.items()}


class ProbaClassifier(Protocol):
    """What the prediction path needs of a classifier on embeddings (:class:`cadx.classical.svm.EmbeddingSVM`):
    ``predict_proba(features (N, D)) -> (N, K)``. A protocol, so this module does not import scikit-learn."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class Predictor:
    """A trained model as the prediction path applies it: the network, the SVM fitted on its embeddings (its
    probabilities replace the network head's) and the decision parameters fitted for it (empty = none).
    ``source`` names where it was loaded from (for error messages)."""

    model: torch.nn.Module
    svm: ProbaClassifier | None = None
    decision: Decision = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    source: str = "<model>"


def load_predictor(model_dir: str | Path, backend: str = "torch") -> Predictor:
    """The predictor saved in a model folder (``fold_<k>/`` or ``final/``): ``checkpoint_best.ckpt``, ``svm.pkl``
    when present and ``metrics.json`` ``decision_fit`` (empty when the folder has none).

    ``backend="onnx"``: the folder is a model folder of an export (``cadx export``) and the network is its
    ``model.onnx`` run by onnxruntime (:class:`cadx.runs.onnx_backend.OnnxModule`); everything else is the same."""
    d = Path(model_dir)
    if backend not in ("torch", "onnx"):
        raise ValueError(f"unknown backend {backend!r}; use 'torch' or 'onnx'")
    model: torch.nn.Module
    if backend == "onnx":
        model, spec = load_onnx_module(d / MODEL_FILE)
    else:
        model, spec = load_module(d / "checkpoint_best.ckpt")
    svm = read_svm(d / "svm.pkl") if (d / "svm.pkl").is_file() else None   # unpickling imports scikit-learn
    m = d / "metrics.json"
    decision = dict(read_json(m).get("decision_fit") or {}) if m.is_file() else {}
    return Predictor(model, svm, decision, spec, str(d))


def item_outputs(cfg: ExperimentConfig, predictors: Sequence[Predictor], images: torch.Tensor,
                 masks: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """:func:`infer` outputs of ``images`` ``(N, C, *size)`` averaged item by item over ``predictors`` (``eval.tta``;
    a predictor with an SVM contributes the SVM's probabilities). Raises CadxDataError when a model takes another
    number of channels than the images have."""
    if not predictors:
        raise CadxDataError("no model to predict with", field="models")
    tables: list[dict[str, np.ndarray]] = []
    for pr in predictors:
        want = pr.spec.get("in_channels")
        if want is not None and int(images.shape[1]) != int(want):
            raise CadxDataError(f"the model takes {want} channel(s), the input has {int(images.shape[1])}",
                                path=pr.source, field="image")
        out = infer(pr.model, images, cfg.train.eval_batch_size,
                    features=cfg.eval.svm_features if pr.svm is not None else None, masks=masks, tta=cfg.eval.tta)
        if pr.svm is not None:
            out["proba"] = pr.svm.predict_proba(out.pop("features"))
        tables.append(out)
    if len(tables) == 1:
        return tables[0]
    keys = set.intersection(*(set(t) for t in tables)) - {"features"}
    return {k: np.mean([t[k] for t in tables], axis=0) for k in sorted(keys)}


def slice_rows(store: ItemStore, items: np.ndarray, outputs: dict[str, np.ndarray], fold: int) -> pd.DataFrame:
    """One row per item: ``study_id, patient_id, fold, item, slice, y_true, p_<class>..., pred_<a>/true_<a>``
    plus the segmentation counts."""
    st = store.study[items]
    df = pd.DataFrame({
        "study_id": [store.study_ids[s] for s in st],
        "patient_id": [store.patient_ids[s] for s in st],
        "fold": fold,
        "item": items,
        "slice": store.slice_pos[items],
        "y_true": [store.classes[y] if y >= 0 else None for y in store.labels[st]],
    })
    if "proba" in outputs:
        for j, c in enumerate(store.classes):
            df[f"p_{c}"] = outputs["proba"][:, j]
    if "attributes" in outputs:
        for j, a in enumerate(store.attribute_names):
            df[f"pred_{a}"] = outputs["attributes"][:, j]
            df[f"true_{a}"] = store.attributes[st, j]
    for k in ("inter", "pred_sum", "true_sum"):
        if k in outputs:
            df[k] = outputs[k]
    return df


def study_rows(slices: pd.DataFrame, classes: Sequence[str], method: str) -> pd.DataFrame:
    """Aggregate item rows per study (``aggregate_predictions``); per-study Dice from summed voxel counts (both masks
    empty → 1.0, the rule of :func:`cadx.evaluation.dice`)."""
    seg = [c for c in ("inter", "pred_sum", "true_sum") if c in slices.columns]
    base = slices.drop(columns=[*seg, "item", "slice"], errors="ignore")
    if any(c.startswith("p_") for c in base.columns):
        out = aggregate_predictions(base, by="study_id", method=method,  # type: ignore[arg-type]
                                    prob_cols=[f"p_{c}" for c in classes])
    else:
        g = base.groupby("study_id", sort=False)
        out = g.first().reset_index()[[c for c in ("study_id", "patient_id", "fold", "y_true") if c in base]]
        extra = [c for c in base.columns if c.startswith(("pred_", "true_"))]
        if extra:
            out[extra] = g[extra].mean().reindex(out["study_id"]).to_numpy()
    if seg:
        sums = slices.groupby("study_id", sort=False)[seg].sum().reindex(out["study_id"])
        den = (sums["pred_sum"] + sums["true_sum"]).to_numpy(float)
        both_empty = dice(np.zeros(0, bool), np.zeros(0, bool))  # the documented rule: both empty → 1.0
        with np.errstate(invalid="ignore", divide="ignore"):
            out["dice"] = np.where(den > 0, 2 * sums["inter"].to_numpy(float) / den, both_empty)
        out["lesion_voxels"] = sums["true_sum"].to_numpy()
    return out


def fit_decision(rule: str, classes: Sequence[str], train_y: np.ndarray | None = None,
                 fit_studies: pd.DataFrame | None = None, positive: int | str | None = None,
                 target_sensitivity: float | None = None, fit_split: str | None = None) -> Decision:
    """Decision parameters of one model (see the module docstring).

    ``rule``: ``eval.decision`` (``auto`` is resolved by :func:`resolve_rule`; the result keeps ``requested``).
    ``train_y``: class indices ``(n,)`` of the training studies (``prior``; unlabelled ``< 0`` are skipped).
    ``fit_studies``: undecided study rows (``y_true``, ``p_<class>``) of the validation/training studies
    (``youden``/``sensitivity``, binary only; ``fit_split`` names which, recorded as ``fit_split``). ``positive``:
    ``eval.positive`` (name or index; None = index 1), recorded by name. A threshold falls back to 0.5 when those
    rows lack one of the two classes (``threshold_fallback`` says so). ``argmax``, or a task without classes, has no
    parameters. A class absent from ``train_y`` raises ValueError.
    """
    resolved = resolve_rule(rule, len(classes), target_sensitivity)
    if resolved not in RULES:
        raise ValueError(f"unknown decision rule {rule!r}; use 'auto', 'argmax', 'prior', 'youden' or 'sensitivity'")
    info: Decision = {"rule": resolved}
    if rule != resolved:
        info["requested"] = rule
    if len(classes) == 2:
        info["positive"] = str(classes[positive_index(positive, classes)])
    if not classes or resolved == "argmax":
        return info
    if resolved == "prior":
        if train_y is None:
            raise ValueError("rule 'prior' needs the training labels")
        y = np.asarray(train_y)
        info["priors"] = [float(v) for v in class_priors(y[y >= 0], len(classes))]
        info["fit_split"] = "train"
        return info
    if resolved == "sensitivity":
        if target_sensitivity is None:
            raise ValueError("rule 'sensitivity' needs a target sensitivity (eval.target_sensitivity)")
        info["target_sensitivity"] = float(target_sensitivity)
    thr, fallback = 0.5, "no fitting studies"
    if fit_studies is not None and len(fit_studies) and len(classes) == 2:
        pos = positive_index(positive, classes)
        yv = _class_index(fit_studies["y_true"], classes)
        ok = yv >= 0
        if ok.any() and np.unique(yv[ok]).size == 2:
            hit = (yv[ok] == pos).astype(int)
            score = fit_studies.loc[ok, f"p_{classes[pos]}"].to_numpy(float)
            thr = (youden_threshold(hit, score) if resolved == "youden"
                   else sensitivity_threshold(hit, score, float(target_sensitivity or 0.0)))
            fallback = ""
        else:
            fallback = "the fitting studies lack one of the two classes"
    info["threshold"] = float(thr)
    if fit_split is not None:
        info["fit_split"] = fit_split
    if fallback:
        info["threshold_fallback"] = f"0.5 ({fallback})"
    return info


def _class_index(labels: pd.Series, classes: Sequence[str]) -> np.ndarray:
    """Class index per label cell (``-1``: missing or unknown)."""
    lut = {str(c): i for i, c in enumerate(classes)}
    return np.array([-1 if pd.isna(v) else lut.get(class_key(v), -1) for v in labels], dtype=np.int64)


def fit_study_calibration(method: str, classes: Sequence[str], fit_studies: pd.DataFrame | None,
                          positive: int | str | None = None, fit_split: str = "validation") -> dict[str, Any]:
    """``eval.calibration`` fitted on undecided study rows (``y_true``, ``p_<class>``) of a fold's VALIDATION
    studies (:func:`cadx.evaluation.calibration.fit_calibration`); ``fit_split`` other than ``validation``
    (a fold without validation patients) → not fitted, with that reason. Unlabelled rows are skipped."""
    if method == "none":
        return {"method": "none", "fitted": False, "reason": "eval.calibration is none"}
    if fit_split != "validation":
        return {"method": method, "fitted": False, "fit_split": "none",
                "reason": "the fold has no validation patients: not calibrated"}
    if fit_studies is None or not len(fit_studies) or not classes:
        return {"method": method, "fitted": False, "fit_split": "none", "reason": "no validation study rows"}
    y = _class_index(fit_studies["y_true"], classes)
    ok = y >= 0
    p = fit_studies.loc[ok, [f"p_{c}" for c in classes]].to_numpy(float)
    pos = positive_index(positive, classes)
    out = fit_calibration(method, y[ok], p, positive=pos)
    out["fit_split"] = fit_split if out.get("fitted") else "none"
    return out


def calibrate_rows(studies: pd.DataFrame, classes: Sequence[str], calibration: dict[str, Any] | None
                   ) -> pd.DataFrame:
    """Study rows with ``p_<class>`` replaced by the calibrated probabilities of ``calibration`` (fitted
    parameters, or ``{"members": [...]}``) and the originals kept as ``raw_p_<class>``; an aggregation's
    ``y_pred`` is dropped (the decision is taken on the calibrated probabilities). Nothing fitted, or rows without
    class probabilities → returned as they are."""
    cols = [f"p_{c}" for c in classes]
    if not calibration or not classes or cols[0] not in studies.columns or not _fitted(calibration):
        return studies
    out = studies.copy()
    p = out[cols].to_numpy(float)
    for c in classes:
        out[f"raw_p_{c}"] = out[f"p_{c}"]
    out[cols] = apply_calibration(calibration, p)
    return out.drop(columns=["y_pred"], errors="ignore")


def _fitted(calibration: dict[str, Any]) -> bool:
    if "members" in calibration:
        return any(_fitted(m) for m in calibration["members"] if m)
    return bool(calibration.get("fitted"))


def combine_decisions(rule: str, decisions: Sequence[Decision], sources: Sequence[str] | None = None) -> Decision:
    """The decision of an ensemble of models under ``rule``: the mean of their ``priors`` (``prior``) or of their
    ``threshold``s (``youden``/``sensitivity``); one model keeps its own. ``auto`` takes the models' own (resolved)
    rule, which must agree. The models' positive class is kept; their calibration maps are combined as
    ``{"members": [...]}`` (the mean of the maps; a model without one counts as the identity). A model without the
    fitted parameter (e.g. a run from before ``decision_fit`` existed) is a CadxDataError naming its
    ``metrics.json`` (``sources``: model folders)."""
    names = list(sources) if sources is not None else [f"model {i}" for i in range(len(decisions))]
    if rule == "auto":
        found = {str(d.get("rule")) for d in decisions if d.get("rule")}
        if len(found) > 1:
            raise CadxDataError(f"the models were decided by different rules {sorted(found)}",
                                field="decision_fit.rule")
        rule = found.pop() if found else "argmax"
    info: Decision = {"rule": rule}
    if decisions and decisions[0].get("positive") is not None:
        info["positive"] = decisions[0]["positive"]
    cals = [d.get("calibration") for d in decisions]
    if any(c and _fitted(c) for c in cals):
        info["calibration"] = dict(cals[0] or {}) if len(cals) == 1 else {"members": [dict(c or {}) for c in cals]}
    key = {"prior": "priors", "youden": "threshold", "sensitivity": "threshold"}.get(rule)
    if key is None:
        return info
    if not decisions:
        raise CadxDataError("no model to take decision parameters from", field="models")
    for d, name in zip(decisions, names, strict=True):
        if d.get(key) is None:
            raise CadxDataError(f"no fitted {key} for eval.decision={rule}", path=Path(name) / "metrics.json",
                                field=f"decision_fit.{key}")
    vals = [d[key] for d in decisions]
    if key == "priors":
        info[key] = [float(v) for v in np.mean(np.asarray(vals, float), axis=0)]
    else:
        info[key] = float(np.mean(vals))
    splits = sorted({str(d["fit_split"]) for d in decisions if d.get("fit_split")})
    if splits:
        info["fit_split"] = ", ".join(splits)
    return info


def decide_rows(studies: pd.DataFrame, classes: Sequence[str], decision: Decision) -> pd.DataFrame:
    """Set ``y_pred`` of study rows by ``decision`` (:func:`fit_decision`/:func:`combine_decisions`).

    ``argmax`` keeps the aggregation's ``y_pred`` (its tie rule, e.g. a majority vote); ``prior`` takes the argmax
    of ``p / priors``, ``youden``/``sensitivity`` predict the positive class (``decision["positive"]``, default
    ``classes[1]``) when its ``p_<class> >= threshold``, else the other (ties of an argmax to the lowest class
    index). Rows without class probabilities are returned as they are.
    """
    cols = [f"p_{c}" for c in classes]
    rule = decision.get("rule", "argmax")
    if not classes or cols[0] not in studies.columns or (rule == "argmax" and "y_pred" in studies.columns):
        return studies
    pos = positive_index(decision.get("positive"), classes)
    pred = decide(studies[cols].to_numpy(float), rule, priors=decision.get("priors"),
                  threshold=decision.get("threshold"), positive=pos)
    out = studies.copy()
    out["y_pred"] = [classes[i] for i in pred]
    return out


def study_predictions(slices: pd.DataFrame, classes: Sequence[str], aggregation: str,
                      decision: Decision) -> pd.DataFrame:
    """Slice rows → study rows (:func:`study_rows`, ``aggregation``) → calibrated by ``decision["calibration"]``
    (:func:`calibrate_rows`, when fitted) → ``y_pred`` by ``decision``."""
    studies = calibrate_rows(study_rows(slices, classes, aggregation), classes, decision.get("calibration"))
    return decide_rows(studies, classes, decision)


class Predictions(NamedTuple):
    slices: pd.DataFrame      # one row per item (:func:`slice_rows`)
    studies: pd.DataFrame     # one row per study, decided
    decision: Decision        # the decision parameters used


def predict_slices(cfg: ExperimentConfig, store: ItemStore, items: np.ndarray, predictors: Sequence[Predictor],
                   fold: int) -> pd.DataFrame:
    """Slice rows of ``items`` (indices into ``store``) scored by the mean of ``predictors``."""
    masks = store.masks[items] if store.masks is not None else None
    return slice_rows(store, items, item_outputs(cfg, predictors, store.images[items], masks), fold)


def predict_rows(cfg: ExperimentConfig, store: ItemStore, items: np.ndarray, predictors: Sequence[Predictor],
                 fold: int, decision: Decision | None = None) -> Predictions:
    """THE prediction path: ``items`` of ``store`` → :func:`item_outputs` (mean over ``predictors``) →
    :func:`slice_rows` (``fold`` written into the rows) → :func:`study_predictions` with ``cfg.eval.aggregation``
    and ``decision`` (default: :func:`combine_decisions` of the predictors under ``cfg.eval.decision``).
    Regression/segmentation tasks (no classes) get study rows without a decision."""
    classes = list(store.classes) if cfg.task.classification else []
    if decision is None:
        decision = (combine_decisions(cfg.eval.decision, [p.decision for p in predictors],
                                      [p.source for p in predictors]) if classes else {"rule": cfg.eval.decision})
    slices = predict_slices(cfg, store, items, predictors, fold)
    return Predictions(slices, study_predictions(slices, classes, cfg.eval.aggregation, decision), decision)


def fold_decision(cfg: ExperimentConfig, store: ItemStore, predictor: Predictor, train_studies: np.ndarray,
                  fit_items: np.ndarray, fold: int) -> Decision:
    """Fit ``cfg.eval.decision`` and ``cfg.eval.calibration`` for one fold's ``predictor``: priors from the labels
    of ``train_studies`` (study indices); the calibration map and then the threshold (``youden``/``sensitivity``,
    on calibrated probabilities) on the study rows of ``fit_items`` (the fold's validation items, else its training
    items) scored through the same path. ``fit_split`` is ``train`` when every study of ``fit_items`` is a training
    study (no validation patients: the threshold is fitted on the training studies, nothing is calibrated), else
    ``validation``."""
    classes = list(store.classes) if cfg.task.classification else []
    rule = resolve_rule(cfg.eval.decision, len(classes), cfg.eval.target_sensitivity)
    fit_studies = np.unique(store.study[fit_items]) if fit_items.size else np.zeros(0, np.int64)
    split = "train" if np.isin(fit_studies, np.asarray(train_studies)).all() else "validation"
    fit_df = None
    want_cal = bool(classes) and cfg.eval.calibration != "none"
    if classes and fit_items.size and (rule in THRESHOLD_RULES or (want_cal and split == "validation")):
        fit_df = predict_rows(cfg, store, fit_items, [predictor], fold, {"rule": "argmax"}).studies
    cal = (fit_study_calibration(cfg.eval.calibration, classes, fit_df, cfg.eval.positive, split)
           if want_cal else None)
    if cal is not None and fit_df is not None:
        fit_df = calibrate_rows(fit_df, classes, cal)
    decision = fit_decision(cfg.eval.decision, classes, store.labels[train_studies], fit_df, cfg.eval.positive,
                            cfg.eval.target_sensitivity, split if rule in THRESHOLD_RULES else None)
    if cal is not None:
        decision["calibration"] = cal
    return decision
