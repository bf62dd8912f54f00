"""Table II re-run files and the per-epoch training curves (Khan & Yong Figs. 4–6 and 12).

``collect(src)`` copies the small files of each finished net run of ``cadx study anatomy --out SRC`` (``SRC/runs/
<net>[_naive]/``: ``config.yaml``, ``splits.json``, ``metrics.json``, ``predictions.csv``, ``fold_0/history.csv``,
``fold_0/metrics.json``, ``fold_0/DONE``) into ``rerun/<net>[_naive]/`` here, so each run's accuracy and CI
recompute from its ``predictions.csv`` (``cadx.evaluation.evaluate_predictions``). ``draw()`` plots, per net found
in ``rerun/``, training loss, validation loss and validation accuracy against the epoch from its
``history.csv`` (the paper's Figs. 4 LeNet, 5 AlexNet, 6 GoogLeNet, 12 Proposed CNN) into ``figures/``, and
``recompute()`` re-scores every committed ``predictions.csv`` into ``rerun/recomputed.csv``.

Usage: ``.venv/bin/python benchmarks/results/anatomy/table_ii/curves.py [SRC]`` (with SRC: collect first).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

from cadx.evaluation.summary import evaluate_predictions
from cadx.report.studies import new_figure, save_figure
from cadx.utils import read_json

HERE = Path(__file__).resolve().parent
FIG = {"lenet": "fig04", "alexnet": "fig05", "googlenet": "fig06", "proposed": "fig12"}
KEEP = ("config.yaml", "splits.json", "metrics.json", "predictions.csv", "fold_0/history.csv",
        "fold_0/metrics.json", "fold_0/DONE")


def collect(src: Path) -> list[str]:
    """Copy the finished runs (``fold_0/DONE`` present) of ``src/runs`` into ``rerun/``; returns their names."""
    done = []
    for run in sorted((src / "runs").iterdir()):
        if not (run / "fold_0" / "DONE").is_file() or not (run / "predictions.csv").is_file():
            continue
        for rel in KEEP:
            if (run / rel).is_file():
                (HERE / "rerun" / run.name / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run / rel, HERE / "rerun" / run.name / rel)
        done.append(run.name)
    return done


def recompute() -> pd.DataFrame:
    """Accuracy with its 95 % group-bootstrap CI (2000 resamples, seed 0) of every ``rerun/*/predictions.csv``."""
    rows = []
    for run in sorted(p for p in (HERE / "rerun").iterdir() if (p / "predictions.csv").is_file()):
        df = pd.read_csv(run / "predictions.csv", dtype={"study_id": str, "patient_id": str})
        classes = [str(c) for c in read_json(run / "metrics.json")["classes"]]
        m = evaluate_predictions(df, classes, n_bootstrap=2000, seed=0, decision="given")["pooled"]
        done = read_json(run / "fold_0" / "DONE")
        rows.append({"run": run.name, "test_images": len(df), "accuracy": m["accuracy"],
                     "ci_low": m["ci"]["accuracy"][0], "ci_high": m["ci"]["accuracy"][1],
                     "best_epoch": done.get("best_epoch")})
    out = pd.DataFrame(rows)
    out.to_csv(HERE / "rerun" / "recomputed.csv", index=False)
    return out


def draw() -> list[Path]:
    """One PNG per grouped-split net run: loss (train, val) and val accuracy per epoch, the kept epoch marked."""
    paths = []
    for net, fig in FIG.items():
        h = HERE / "rerun" / net / "fold_0" / "history.csv"
        if not h.is_file():
            continue
        t = pd.read_csv(h)
        best = int(read_json(HERE / "rerun" / net / "fold_0" / "DONE").get("best_epoch", -1))
        f = new_figure(9, 3.4)
        ax1, ax2 = f.subplots(1, 2)
        ep = t["epoch"] + 1
        ax1.plot(ep, t["train_loss"], "o-", label="training loss")
        ax1.plot(ep, t["val_loss"], "s-", label="validation loss")
        ax2.plot(ep, 100 * t["val_accuracy"], "s-", color="C2", label="validation accuracy")
        for ax in (ax1, ax2):
            ax.axvline(best + 1, color="0.6", ls="--", lw=1, label=f"kept epoch ({best + 1}, lowest val loss)")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        ax1.set_ylabel("cross-entropy")
        ax2.set_ylabel("%")
        f.suptitle(f"{net}: training and validation per epoch (MedNIST, grouped split; paper {fig})", fontsize=9)
        paths.append(save_figure(f, HERE / "figures" / f"{fig}_{net}_training.png"))
    return paths


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print("collected:", collect(Path(sys.argv[1])))
    print(recompute().to_string(index=False))
    print("\n".join(str(p) for p in draw()))
