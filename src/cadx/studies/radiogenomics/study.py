"""Thesis A.3 radiogenomics on LGG (and the A.4 comparison): ``run_radiogenomics_study(cfg, out_dir)``.

1. Load the LGG cohort (``cfg.data_root``, :mod:`cadx.data.datasets.lgg`); its ``data.csv`` fields are each
   patient's subtypes, age and gender.
2. Shape features (:func:`cadx.evaluation.shape.shape_features`) of every patient's **manual** mask and, when a
   segmentation run folder is available (see :mod:`~cadx.studies.radiogenomics.variants`), of its **automatic**
   out-of-fold mask (``fold_<k>/pred_masks.npz``, already reduced to the largest 3D component by the run).
   LGG has no voxel size (spacing 1): ASD and MF are scale-free and in-plane, and BEVR is a volume ratio, which an
   axis scaling leaves unchanged, so the unknown spacing does not change any feature.
3. Tables (:mod:`~cadx.studies.radiogenomics.tables`): the 10 Fisher tests with Bonferroni and Holm, Table 3
   AUCs with CIs, the power analysis, the Dice table of the run, the A.4 comparison
   (:func:`~cadx.studies.radiogenomics.transfer.run_transfer`, or its finished ``metrics.json``).

Writes ``out_dir/{features.csv, hypotheses.csv, table3_auc.csv, power.csv, dice.csv, results.json, report.md}``.
Bad input: a patient whose manual mask has no tumour slice, whose mask cannot be read, whose automatic mask is
empty after post-processing or missing, or whose subtype value is missing is named with the reason in the
notes and left out of the affected tests only. An automatic mask on a different grid than the patient's
volume, or a run whose masks do not match its predictions, raises :class:`~cadx.errors.CadxDataError` naming
the file and key.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.config import load_config
from cadx.data.datasets import load_dataset
from cadx.data.study import Cohort
from cadx.errors import CadxConfigError, CadxDataError
from cadx.evaluation.shape import shape_features
from cadx.runs.cv import run_cv
from cadx.runs.folder import done_folds, load_cohort
from cadx.studies.radiogenomics.tables import (
    auc_table,
    dice_table,
    hypothesis_table,
    power_table,
    write_report,
)
from cadx.studies.radiogenomics.transfer import run_transfer
from cadx.studies.radiogenomics.variants import RadiogenomicsConfig, seg_config
from cadx.utils import atomic_write_json, read_json

__all__ = ["automatic_masks", "clinical_table", "mask_feature_row", "run_radiogenomics_study",
           "segmentation_run"]


def clinical_table(cohort: Cohort, cfg: RadiogenomicsConfig) -> pd.DataFrame:
    """One row per patient: ``patient, study_id`` and every column the study uses (hypotheses, Table 3, age,
    gender) as float (NaN = missing). A column absent from ``data.csv`` raises CadxConfigError naming it."""
    cols = list(dict.fromkeys([h.column for h in cfg.hypotheses] + [cfg.auc_column, cfg.age_column,
                                                                     cfg.gender_column]))
    known = set().union(*(s.metadata.keys() for s in cohort.studies))
    missing = [c for c in cols if c not in known]
    if missing:
        raise CadxConfigError(f"radiogenomics study: column(s) {missing} not in {cohort.source}/data.csv "
                              f"(has {sorted(k for k in known if k not in ('folder', 'slices', 'n_slices'))})")
    rows = []
    for s in cohort.studies:
        row: dict[str, Any] = {"patient": s.patient_id, "study_id": s.study_id}
        for c in cols:
            v = s.metadata.get(c)
            row[c] = float(v) if isinstance(v, int | float) and v is not None else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def mask_feature_row(mask: np.ndarray | None, name: str, reason: str | None) -> dict[str, Any]:
    """Features of one mask ``(Z, H, W)`` as a row (``asd, bevr, inv_bevr, mf, slice_index, volume_mm3, reason``);
    ``mask`` None or empty → NaN features with ``reason`` (or "empty mask")."""
    nan = {"asd": np.nan, "bevr": np.nan, "inv_bevr": np.nan, "mf": np.nan, "slice_index": np.nan,
           "volume_mm3": 0.0}
    if mask is None:
        return {**nan, "reason": reason}
    if not mask.any():
        return {**nan, "reason": reason or "empty mask"}
    f = shape_features(mask, (1.0, 1.0, 1.0), name=name).as_dict()
    return {**{k: f[k] for k in nan}, "reason": f["nan_reasons"] or None}


def segmentation_run(cfg: RadiogenomicsConfig, out_dir: Path, notes: list[str]) -> Path | None:
    """The segmentation run folder supplying automatic masks: ``segmentation.run`` (or ``<out>/seg_run``); its
    CV is run (or resumed) first when ``segmentation.config`` is set and the folder holds no finished run.
    None (with a note) when there is none."""
    src = cfg.segmentation
    run = Path(src.run) if src.run else (out_dir / "seg_run" if src.config else None)
    if run is None:
        notes.append("No segmentation run configured (segmentation.run / segmentation.config): manual masks only.")
        return None
    finished = (run / "metrics.json").is_file() and bool(done_folds(run))
    scfg = seg_config(cfg)
    if not finished and scfg is not None:
        run_cv(scfg, run, resume=run.exists())
    if not done_folds(run):
        notes.append(f"Segmentation run folder {run} has no finished fold: manual masks only.")
        return None
    return run


def automatic_masks(run_dir: Path, cohort: Cohort) -> dict[str, np.ndarray]:
    """Out-of-fold final masks of a segmentation run, by ``study_id`` of ``cohort``: key ``s<i>`` of
    ``fold_<k>/pred_masks.npz`` is study ``i`` of the run's own cohort (its ``config.yaml``). Each key must be a
    study listed in that fold's ``predictions.csv``; a study predicted in two folds or a mask whose shape differs
    from the study's volume raises CadxDataError naming the file and key."""
    run_cfg = load_config(run_dir / "config.yaml")
    run_cohort = load_cohort(run_cfg)
    ours = {s.study_id: s for s in cohort.studies}
    out: dict[str, np.ndarray] = {}
    for fold in done_folds(run_dir):
        path = fold / "pred_masks.npz"
        listed = set(pd.read_csv(fold / "predictions.csv")["study_id"].astype(str))
        with np.load(path) as npz:
            for key in npz.files:
                i = int(key[1:]) if key[:1] == "s" and key[1:].isdigit() else -1
                if not 0 <= i < len(run_cohort):
                    raise CadxDataError(f"mask key {key!r} is not s<study index> of the run's {len(run_cohort)} "
                                        "studies", path=path, field=key)
                sid = run_cohort[i].study_id
                if sid not in listed:
                    raise CadxDataError(f"{key} = study {sid}, not in this fold's predictions.csv (run cohort "
                                        "differs from the one it was trained on?)", path=path, field=key)
                if sid in out:
                    raise CadxDataError(f"study {sid} predicted in two folds", path=path, field=key)
                mask = np.asarray(npz[key]).astype(bool)
                if sid in ours:
                    n_slices = int(ours[sid].metadata.get("n_slices") or mask.shape[0])
                    if mask.ndim != 3 or mask.shape[0] != n_slices:
                        raise CadxDataError(f"{key} ({sid}): mask shape {mask.shape} does not match the study's "
                                            f"{n_slices} slices", path=path, field=key)
                out[sid] = mask
    return out


def _load_manual(study: Any) -> tuple[np.ndarray | None, str | None]:
    try:
        return np.asarray(study.masks["mask"].load().array)[0] > 0, None
    except CadxDataError as e:
        return None, f"manual mask unreadable: {e}"


def run_radiogenomics_study(cfg: RadiogenomicsConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the study into ``out_dir`` (see the module docstring); returns ``results.json``'s content."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    cohort = load_dataset("lgg", cfg.data_root)
    clinical = clinical_table(cohort, cfg)
    rows = []
    for s in cohort.studies:
        mask, err = _load_manual(s)
        reason = err or (None if mask is None or mask.any() else "manual mask has no tumour slice")
        rows.append({"patient": s.patient_id, "study_id": s.study_id, "source": "manual",
                     **mask_feature_row(None if reason else mask, s.study_id, reason)})
    run_dir = segmentation_run(cfg, out, notes)
    dice, dice_info = pd.DataFrame(), dict[str, Any]()
    if run_dir is not None:
        auto = automatic_masks(run_dir, cohort)
        for s in cohort.studies:
            m = auto.get(s.study_id)
            reason = (f"no out-of-fold prediction in {run_dir}" if m is None else
                      None if m.any() else "automatic mask empty after post-processing")
            rows.append({"patient": s.patient_id, "study_id": s.study_id, "source": "automatic",
                         **mask_feature_row(None if reason else m, s.study_id, reason)})
        dice, dice_info = dice_table(run_dir, cfg.bootstrap, cfg.seed)
        dice_info["run_dir"] = str(run_dir)
        if dice_info.get("partial"):
            notes.append(f"Segmentation run {run_dir} is unfinished: {dice_info['folds_done']} folds done; "
                         "patients of the other folds have no automatic mask.")
    features = pd.DataFrame(rows).merge(clinical.drop(columns=["study_id"]), on="patient", how="left")
    features.to_csv(out / "features.csv", index=False)
    for _, r in features[features["reason"].notna()].iterrows():
        notes.append(f"{r['patient']} ({r['source']} mask): {r['reason']} — excluded from the tests of the "
                     "affected features only.")
    for h in dict.fromkeys(h.column for h in cfg.hypotheses):
        miss = clinical.loc[clinical[h].isna(), "patient"].tolist()
        if miss:
            notes.append(f"{h} missing for {', '.join(miss)} — excluded from the tests on {h} only.")
    hyp = hypothesis_table(features, cfg)
    auc = auc_table(features, clinical, cfg)
    power = power_table(features, cfg)
    transfer = None
    if cfg.transfer_results and (Path(cfg.transfer_results) / "metrics.json").is_file():
        transfer = read_json(Path(cfg.transfer_results) / "metrics.json")
        notes.append(f"A.4 results read from {cfg.transfer_results}/metrics.json (not rerun).")
    elif cfg.transfer is not None:
        transfer = run_transfer(cfg.transfer, out / "transfer")
    notes += [
        "2D features (ASD, MF) on the axial slice with the largest tumour area (the paper: 'in one slice').",
        "Quartile bins over the patients of each test; Fisher exact (network enumeration) unless it exceeds "
        f"{cfg.fisher_max_nodes} nodes, then Monte Carlo with {cfg.fisher_samples} tables (seed {cfg.seed}).",
        "ASD × IDH/1p19q is tested on OncosignCluster (no IDH/1p19q column in data.csv; see variants.py).",
    ]
    info = {"n_patients": len(cohort.patients),
            "n_manual": int(features.loc[features["source"] == "manual", "asd"].notna().sum()),
            "n_automatic": int(features.loc[features["source"] == "automatic", "asd"].notna().sum())}
    report = write_report(out, cfg, info, hyp, auc, power, dice, dice_info, transfer, notes)
    result = {"config": cfg.model_dump(mode="json"), "cohort": info, "segmentation": dice_info,
              "hypotheses": hyp.to_dict("records"), "table3": auc.to_dict("records"),
              "power": power.to_dict("records"), "dice": dice.to_dict("records"),
              "transfer": None if transfer is None else {k: transfer.get(k) for k in ("tasks", "n_patients",
                                                                                       "starts", "excluded")},
              "notes": notes, "report": str(report), "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "results.json", result)
    return result
