"""Copy the small result files of the DMRN measurement runs into this folder (no checkpoints, no slice tables).

Usage: ``.venv/bin/python benchmarks/results/dmrn/collect.py /tmp/dmrn_runs`` (see README.md for the runs).
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


if __name__ == "__main__":
    src = Path(sys.argv[1])
    files = collect(src, Path(__file__).resolve().parent)
    print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 1e3:.0f} kB")
