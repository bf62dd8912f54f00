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


if __name__ == "__main__" and sys.argv[1:2] == ["--restate-paired"]:
    print(restate_paired(Path(sys.argv[2])))
elif __name__ == "__main__":
    src = Path(sys.argv[1])
    files = collect(src, Path(__file__).resolve().parent)
    print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 1e3:.0f} kB")
