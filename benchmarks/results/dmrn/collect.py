"""Copy the small result files of the DMRN measurement runs into this folder (no checkpoints, no slice tables).

Usage: ``.venv/bin/python benchmarks/results/dmrn/collect.py /tmp/dmrn_runs`` (see README.md for the runs).
``collect.py --restate-paired synthetic_5fold_10ep`` rewrites that report's paired table with Holm/Bonferroni
adjusted p-values, recomputed from the committed run folders (see :func:`restate_paired`).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEEP = ("metrics.json", "notes.md", "config.yaml", "predictions.csv", "summary.csv", "summary.json", "DONE",
        "history.csv", "fingerprint.json", "report.md")


def collect(src: Path, dst: Path) -> list[Path]:
    out = []
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if "data" in rel.parts or not p.is_file():
            continue
        keep = p.name in KEEP or (p.suffix == ".png" and ("tsne" in p.name or "roc" in p.name))
        if p.name == "report.md" and "report" not in rel.parts:
            keep = False
        if keep and p.stat().st_size < 200_000:
            q = dst / rel
            q.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, q)
            out.append(q)
    return out


def restate_paired(folder: Path) -> Path:
    """Rewrite the paired-comparison table of ``folder/report/report.md`` from the committed run folders inside
    ``folder`` (the first in ``summary.csv`` order is the reference) with the current
    :func:`cadx.report.compare.paired_table`: the raw two-sided paired patient-bootstrap p-values plus their Holm
    and Bonferroni adjustments over the whole table (22 p-values), printed as ``< 0.001``, never 0. Everything
    else in the report stays as committed. Returns the report path."""
    import pandas as pd

    from cadx.report.compare import paired_table
    from cadx.report.runs import load_run

    names = [str(n) for n in pd.read_csv(folder / "summary.csv").iloc[:, 0]]
    runs = [load_run(folder / n) for n in names]
    bs = runs[0].metrics.get("bootstrap") or {}
    table = paired_table(runs, n_resamples=int(bs.get("n_resamples") or 2000), seed=int(bs.get("seed") or 0))
    assert table is not None
    lines = ["| " + " | ".join(table.columns) + " |", "|---|" + "---:|" * (len(table.columns) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in table.rows]
    lines += ["", f"*{table.note}*"]
    report = folder / "report" / "report.md"
    text = report.read_text(encoding="utf-8").splitlines()
    start = next(i for i, t in enumerate(text) if t.startswith("**Paired bootstrap comparison"))
    first = start + 2
    end = next(i for i in range(first, len(text)) if text[i].startswith("*Δ"))
    report.write_text("\n".join([*text[:first], *lines, *text[end + 1:]]) + "\n", encoding="utf-8")
    return report


#: The AdrenalMNIST3D configurations measured on 2026-11-22 (seed 0 each) → their committed run folders.
ADRENAL_CANDIDATES = {
    "cnn3d_small (CE, softmax head)": "adrenalmnist3d28_cnn3d_small",
    "DMRN-3D width 8, pool stem, contrastive + aux CE, SVM": "adrenalmnist3d28_dmrn3d_ce",
    "DMRN-3D width 16, ImageNet stem, contrastive + aux CE, SVM": "adrenalmnist3d28_dmrn_ce",
    "DMRN-3D width 8, pool stem, contrastive only, SVM": "adrenalmnist3d28_dmrn3d_contrastive",
}
#: Seeds of the validation-chosen configuration (identical config.yaml apart from ``seed``).
ADRENAL_SEEDS = {0: "adrenalmnist3d28_cnn3d_small", 1: "adrenalmnist3d28_cnn3d_small_s1",
                 2: "adrenalmnist3d28_cnn3d_small_s2"}


def restate_adrenal(here: Path, out: Path) -> dict[str, object]:
    """AdrenalMNIST3D re-decided on the validation split only, then the chosen configuration's seeds on test.

    Selection rule (stated before looking at test numbers): the highest validation AUC (98 official val volumes)
    at each run's kept epoch (its lowest validation loss, ``fold_0/DONE`` ``best_epoch``), read from
    ``fold_0/history.csv``. The history's AUC is the network head's: for the SVM variants with an auxiliary CE it
    is a proxy of the classifier scored on test; the contrastive-only variant has no trained head, so its
    validation AUC is not a measurement of its classifier and it cannot be ranked on these files (left out, said
    so). Then, for the chosen configuration only: each seed's test AUC etc., mean ± SD over seeds
    (:func:`cadx.runs.seeds.seed_summary`), the seed ensemble (:func:`cadx.runs.ensemble.ensemble_runs`: mean
    probabilities, patient-bootstrap CIs) and calibration (Brier, ECE with CIs:
    :func:`cadx.evaluation.calibration.calibration_metrics`). Writes ``selection.csv``, ``seeds.json``,
    ``ensemble/`` and ``report.md`` in ``out``."""
    import json

    import pandas as pd

    from cadx.evaluation.calibration import calibration_metrics
    from cadx.report.studies import markdown_table
    from cadx.runs.ensemble import ensemble_runs
    from cadx.runs.seeds import seed_summary

    rows = []
    for label, name in ADRENAL_CANDIDATES.items():
        d = here / name / "fold_0"
        best = int(json.loads((d / "DONE").read_text())["best_epoch"])
        h = pd.read_csv(d / "history.csv")
        at = h[h["epoch"] == best].iloc[0]
        measurable = "contrastive only" not in label
        rows.append({"configuration": label, "run": name, "kept_epoch": best,
                     "val_loss": float(at["val_loss"]), "val_auc": float(at["val_auc"]),
                     "val_auc_measures_classifier": "yes" if "SVM" not in label else
                     ("proxy (aux CE head)" if measurable else "no (no trained head)")})
    sel = pd.DataFrame(rows)
    ranked = sel[sel.val_auc_measures_classifier != "no (no trained head)"].sort_values("val_auc", ascending=False)
    chosen = str(ranked.iloc[0]["configuration"])
    sel["chosen"] = sel.configuration == chosen
    out.mkdir(parents=True, exist_ok=True)
    sel.to_csv(out / "selection.csv", index=False)
    dirs = [here / n for n in ADRENAL_SEEDS.values()]
    per = {s: json.loads((here / n / "metrics.json").read_text()) for s, n in ADRENAL_SEEDS.items()}
    classes = [str(c) for c in per[0]["classes"]]
    for s, n in ADRENAL_SEEDS.items():
        df = pd.read_csv(here / n / "predictions.csv", dtype={"study_id": str, "patient_id": str})
        cal = calibration_metrics(df, classes, positive="adrenal_mass", n_bootstrap=2000, seed=0)
        assert cal is not None
        per[s]["pooled"] = {**per[s]["pooled"], "brier": cal["brier"], "ece": cal["ece"]}
    ens = ensemble_runs(dirs, out / "ensemble", n_bootstrap=2000, seed=0, report=False)
    edf = pd.read_csv(out / "ensemble" / "predictions.csv", dtype={"study_id": str, "patient_id": str})
    ecal = calibration_metrics(edf, classes, positive="adrenal_mass", n_bootstrap=2000, seed=0)
    assert ecal is not None
    ens["pooled"] = {**ens["pooled"], "brier": ecal["brier"], "ece": ecal["ece"],
                     "ci": {**ens["pooled"].get("ci", {}), "brier": ecal["ci"]["brier"], "ece": ecal["ci"]["ece"]}}
    summary = seed_summary(per, ens)
    record: dict[str, object] = {
        "selection_rule": "highest validation AUC at the kept (lowest validation loss) epoch",
        "chosen": chosen, "seeds": {str(k): v for k, v in ADRENAL_SEEDS.items()}, "metrics": summary,
        "calibration_ensemble": {k: ecal[k] for k in ("brier", "ece", "ci", "n_bins", "strategy", "kind", "curve")}}
    (out / "seeds.json").write_text(json.dumps(record, indent=2) + "\n")
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["# AdrenalMNIST3D: configuration chosen on validation, 3 seeds on test", "",
             *markdown_table(["configuration", "kept epoch", "val loss", "val AUC", "val AUC measures", "chosen"],
                             [[r.configuration, r.kept_epoch, r.val_loss, r.val_auc, r.val_auc_measures_classifier,
                               "**yes**" if r.chosen else ""] for r in sel.itertuples()]),
             "", f"Chosen on validation: {chosen}. Test (298 volumes), its seeds {list(ADRENAL_SEEDS)}:", ""]
    mrows = []
    for k in ("auc", "accuracy", "sensitivity", "specificity", "brier", "ece"):
        m = summary[k]
        ci = m["ensemble_ci"]
        mrows.append([k, *[fmt(m["seeds"].get(str(s))) for s in ADRENAL_SEEDS], f"{fmt(m['mean'])} ± {fmt(m['sd'])}",
                      fmt(m["ensemble"]) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")])
    lines += markdown_table(["metric", *[f"seed {s}" for s in ADRENAL_SEEDS], "mean ± SD", "seed ensemble [95 % CI]"],
                            mrows)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return record


if __name__ == "__main__" and sys.argv[1:2] == ["--restate-adrenal"]:
    here = Path(__file__).resolve().parent
    print(restate_adrenal(here, here / "adrenalmnist3d28_val_selected")["chosen"])
elif __name__ == "__main__" and sys.argv[1:2] == ["--restate-paired"]:
    print(restate_paired(Path(sys.argv[2])))
elif __name__ == "__main__":
    src = Path(sys.argv[1])
    files = collect(src, Path(__file__).resolve().parent)
    print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 1e3:.0f} kB")
