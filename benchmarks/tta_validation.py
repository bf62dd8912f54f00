"""Choose test-time flips on VALIDATION data only: the validation AUC of finished runs' fold models, scored through
the one prediction path (:func:`cadx.runs.inference.predict_rows`) with ``eval.tta`` none and flips.

For runs on an official split (e.g. MedMNIST): each fold's ``val`` patients of ``splits.json`` (the patients its
epoch and threshold were chosen on); the test patients are not scored. Several runs on the same splits (seeds)
are also scored as their seed ensemble (mean study probabilities). `cadx evaluate --fold own --tta flips` does the
same for CV test folds; this script exists because a run's validation patients are not an external cohort, which
`cadx evaluate` rightly refuses.

    python benchmarks/tta_validation.py RUN [RUN ...] --out results.json

Run from the folder the runs were started in (their ``data.root`` may be relative).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from cadx.data.splits import Splits
from cadx.evaluation.metrics import roc_auc
from cadx.evaluation.summary import positive_index
from cadx.pipeline.items import build_store
from cadx.runs.finished import done_folds, run_config
from cadx.runs.folder import load_cohort
from cadx.runs.inference import load_predictor, predict_rows


def validation_auc(runs: list[Path]) -> dict[str, Any]:
    """``{tta: {"runs": {run: {fold: auc}}, "ensemble": {fold: auc}}}`` over the runs' validation patients."""
    cfg0 = run_config(runs[0], done_folds(runs[0]))
    cohort = load_cohort(cfg0, runs[0])
    store = build_store(cohort, cfg0, progress=False)
    classes = list(store.classes)
    pos = positive_index(cfg0.eval.positive, classes)
    splits = Splits.load(runs[0] / "splits.json")
    ttas = ("none", "flips")
    per_run: dict[str, dict[str, dict[int, float]]] = {t: {} for t in ttas}
    ens: dict[str, dict[int, list[np.ndarray]]] = {t: {} for t in ttas}
    truth: dict[int, np.ndarray] = {}
    for run in runs:
        if Splits.load(run / "splits.json").to_dict() != splits.to_dict():
            raise SystemExit(f"{run}: splits.json differs from {runs[0]}'s")
        cfg = run_config(run, done_folds(run))
        for fold in splits:
            val = fold.indices(cohort, "val")
            if val.size == 0:
                continue
            model = load_predictor(run / f"fold_{fold.fold}")  # loaded once, scored with each setting
            for tta in ttas:
                c = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"tta": tta})})
                st = predict_rows(c, store, store.items_of_studies(val), [model], fold.fold).studies
                y = np.asarray([classes.index(v) for v in st["y_true"]])
                p = st[[f"p_{k}" for k in classes]].to_numpy(np.float64)
                per_run[tta].setdefault(str(run), {})[fold.fold] = roc_auc(y, p, positive=pos)
                ens[tta].setdefault(fold.fold, []).append(p)
                truth[fold.fold] = y
    return {t: {"runs": per_run[t],
                "ensemble": {k: roc_auc(truth[k], np.mean(ps, 0), positive=pos) for k, ps in ens[t].items()}}
            for t in ttas}

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    res = {"command": "python benchmarks/tta_validation.py " + " ".join(map(str, a.runs)) + f" --out {a.out}",
           "split": "validation patients of each fold (splits.json 'val'); no test patient is scored",
           **validation_auc(a.runs)}
    a.out.write_text(json.dumps(res, indent=1))
    for tta in ("none", "flips"):
        print(tta, json.dumps(res[tta]))


if __name__ == "__main__":
    main()
