"""Report tables built from metrics.json dicts (see ``cadx.evaluation.evaluate_predictions``).

Every builder returns a :class:`Table` of already formatted strings so the HTML and Markdown renderers
print exactly the same cells. Numbers: 3 decimals, CIs as ``0.853 [0.801, 0.897]``, undefined as ``n/a``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cadx.report.runs import RunData

__all__ = ["HEADLINE", "Table", "abe_table", "comparison_table", "confusion_table", "dice_table",
           "extra_tables", "fingerprint_table", "fmt", "fmt_ci", "fold_table", "lesion_split_table",
           "per_class_table", "splits_table"]

HEADLINE = (("accuracy", "Acc"), ("sensitivity", "Sen"), ("specificity", "Spe"), ("precision", "Pre"),
            ("f1", "F1"), ("auc", "AUC"))
NA = "n/a"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    first_col_header: bool = field(default=True)


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def fmt(v: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals (integers as integers); None/NaN → ``n/a``; text as is."""
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    f = _num(v)
    return NA if f is None else f"{f:.{digits}f}"


def fmt_ci(v: Any, ci: Sequence[Any] | None) -> str:
    """``0.853 [0.801, 0.897]``; the value alone when there is no (finite) CI."""
    s = fmt(v)
    if s == NA or not ci or len(ci) != 2 or _num(ci[0]) is None or _num(ci[1]) is None:
        return s
    return f"{s} [{fmt(ci[0])}, {fmt(ci[1])}]"


def _has(block: dict[str, Any], key: str) -> bool:
    return key in block


def _fold_items(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    folds = metrics.get("folds") or {}
    return [(str(k), folds[k]) for k in sorted(folds, key=lambda s: (len(str(s)), str(s)))]


def _metric_cells(block: dict[str, Any], keys: Sequence[str]) -> list[str]:
    ci = block.get("ci") or {}
    return [fmt_ci(block.get(k), ci.get(k)) if _has(block, k) else NA for k in keys]


def fold_table(run: RunData) -> Table | None:
    """Per-fold and pooled metrics of one run (rows = folds + pooled)."""
    m = run.metrics
    pooled = m.get("pooled") or {}
    keys = [k for k, _ in HEADLINE if k in pooled]
    names = [n for k, n in HEADLINE if k in pooled]
    if "dice_mean" in pooled:
        keys += ["dice_mean", "dice_median"]
        names += ["Dice mean", "Dice median"]
    if not keys:
        return None
    rows = []
    for k, b in _fold_items(m):
        rows.append([f"fold {k}", fmt(b.get("n_studies")), *_metric_cells(b, keys)])
    rows.append(["pooled", fmt(pooled.get("n_studies", m.get("n_studies"))), *_metric_cells(pooled, keys)])
    return Table(f"{run.name}: per-fold and pooled test metrics (95% CI)", ["", "Studies", *names], rows)


def comparison_table(runs: Sequence[RunData]) -> Table:
    """Runs side by side in the papers' format: rows = runs, columns = Acc, Sen, Spe, Pre, F1, AUC."""
    rows = []
    positives = []
    for r in runs:
        pooled = r.metrics.get("pooled") or {}
        rows.append([r.name, fmt(pooled.get("n_studies")), *_metric_cells(pooled, [k for k, _ in HEADLINE])])
        pos = pooled.get("positive", r.metrics.get("positive"))
        if pos is not None:
            positives.append(f"{r.name}: {pos}")
    which = ("; ".join(positives) if positives else "index 1 unless eval.positive names another")
    return Table("Pooled test metrics, all runs (95% CI)", ["Run", "Studies", *(n for _, n in HEADLINE)], rows,
                 note=f"Binary: Sen/Spe/Pre/F1 of the positive class ({which}); multi-class: macro means.")


def per_class_table(runs: Sequence[RunData]) -> Table | None:
    """One-vs-rest metrics per class (DMRN Table 3 layout): rows = metric × class, columns = runs."""
    classes: list[str] = []
    for r in runs:
        for c in (r.metrics.get("pooled") or {}).get("per_class") or {}:
            if c not in classes:
                classes.append(c)
    if not classes:
        return None
    rows = []
    for key, label in (("sensitivity", "Sen"), ("specificity", "Spe"), ("precision", "Pre"), ("f1", "F1"),
                       ("auc", "AUC"), ("support", "n")):
        for c in classes:
            cells = []
            for r in runs:
                pc = ((r.metrics.get("pooled") or {}).get("per_class") or {}).get(c)
                cells.append(fmt(pc.get(key)) if pc else NA)
            rows.append([label, c, *cells])
    return Table("One-vs-rest metrics per class (pooled)", ["Metric", "Class", *(r.name for r in runs)], rows)


def confusion_table(run: RunData) -> Table | None:
    """Pooled confusion matrix as a table (rows = true class, columns = predicted class)."""
    pooled = run.metrics.get("pooled") or {}
    cm = pooled.get("confusion_matrix")
    if not cm:
        return None
    classes = pooled.get("classes") or run.classes or [str(i) for i in range(len(cm))]
    rows = [[f"true {c}", *(fmt(int(v)) for v in row)] for c, row in zip(classes, cm, strict=False)]
    return Table(f"{run.name}: confusion matrix (pooled)", ["", *(f"pred {c}" for c in classes)], rows)


def dice_table(runs: Sequence[RunData]) -> Table | None:
    """Dice per volume (mean with CI, median) per run and fold."""
    rows = []
    for r in runs:
        blocks = [(f"fold {k}", b) for k, b in _fold_items(r.metrics)]
        blocks.append(("pooled", r.metrics.get("pooled") or {}))
        for label, b in blocks:
            if "dice_mean" in b:
                rows.append([r.name, label, fmt(b.get("n_dice", b.get("n_studies"))),
                             fmt_ci(b.get("dice_mean"), (b.get("ci") or {}).get("dice_mean")),
                             fmt(b.get("dice_median"))])
    if not rows:
        return None
    return Table("Segmentation: Dice per volume", ["Run", "Fold", "Volumes", "Mean (95% CI)", "Median"], rows,
                 note="Dice per study volume; NaN (no mask) is left out. cadx.evaluation.dice scores "
                      "both-empty masks 1.0 and exactly-one-empty 0.0.")


def lesion_split_table(runs: Sequence[RunData]) -> Table | None:
    """Segmentation split by lesion presence (``pooled.lesion_split``, :mod:`cadx.evaluation.seg_summary`): per
    run three lines — Dice over lesion-present cases, false-positive rate and mean predicted volume over
    lesion-absent cases, the overall Dice mean. None when no run has the block."""
    rows = []
    for r in runs:
        s = (r.metrics.get("pooled") or {}).get("lesion_split")
        if not isinstance(s, dict):
            continue
        les, neg, alls = s.get("lesion") or {}, s.get("no_lesion") or {}, s.get("all") or {}
        rows.append([r.name, "lesion present", fmt(les.get("n")), "Dice mean",
                     fmt_ci(les.get("dice_mean"), les.get("ci_dice_mean")), f"median {fmt(les.get('dice_median'))}"])
        rows.append([r.name, "lesion absent", fmt(neg.get("n")), "false-positive rate (any predicted voxel)",
                     fmt_ci(neg.get("false_positive_rate"), neg.get("ci_false_positive_rate")),
                     f"{fmt(neg.get('n_false_positive'))} of {fmt(neg.get('n'))}; mean predicted volume "
                     f"{fmt_ci(neg.get('pred_voxels_mean'), neg.get('ci_pred_voxels_mean'))} voxels"])
        rows.append([r.name, "all cases", fmt(alls.get("n")), "Dice mean",
                     fmt_ci(alls.get("dice_mean"), alls.get("ci_dice_mean")),
                     "mixes both groups (empty prediction on an empty mask = 1.0)"])
    if not rows:
        return None
    return Table("Segmentation by lesion presence (95% CI, patient bootstrap)",
                 ["Run", "Cases", "n", "Measure", "Value (95% CI)", "Detail"], rows,
                 note="Lesion present: ground-truth lesion voxels > 0; absent: an empty ground-truth mask. Cases "
                      "without a mask are left out. Volumes in voxels of the original grid.")


def abe_table(runs: Sequence[RunData]) -> Table | None:
    """Attribute absolute distance error (MTMR-Net Table III layout): rows = runs, columns = attributes."""
    attrs: list[str] = []
    for r in runs:
        for a in (r.metrics.get("pooled") or {}).get("abe") or {}:
            if a not in attrs:
                attrs.append(a)
    if not attrs:
        return None
    rows = [[r.name, *(fmt(((r.metrics.get("pooled") or {}).get("abe") or {}).get(a)) for a in attrs)]
            for r in runs]
    scales = {s for r in runs for s in ((r.metrics.get("pooled") or {}).get("abe_scale") or {}).values()}
    note = "ABE = mean |predicted − true| attribute score"
    note += " on the original unscaled range." if scales == {"original"} else f" (scale: {', '.join(sorted(scales))})."
    return Table("Attribute score error (ABE, pooled)", ["Run", *attrs], rows, note=note)


def _range(d: Any) -> str:
    if not isinstance(d, dict) or "median" not in d:
        return NA
    med = " × ".join(fmt(v, 2) for v in d["median"])
    lo = " × ".join(fmt(v, 2) for v in d.get("min", []))
    hi = " × ".join(fmt(v, 2) for v in d.get("max", []))
    return f"{med} (min {lo}, max {hi})"


def fingerprint_table(fp: dict[str, Any], title: str) -> Table:
    """Dataset fingerprint (cohort.fingerprint()): counts, classes, shapes, spacings, intensities."""
    rows: list[list[str]] = []
    for key, label in (("name", "Dataset"), ("studies", "Studies"), ("patients", "Patients"),
                       ("unlabelled", "Unlabelled studies"), ("images_sampled", "Images sampled")):
        if key in fp:
            rows.append([label, fmt(fp[key])])
    counts = fp.get("class_counts")
    if isinstance(counts, dict) and counts:
        rows.append(["Class counts", ", ".join(f"{k}: {v}" for k, v in counts.items())])
    if fp.get("channels"):
        rows.append(["Channels", ", ".join(str(c) for c in fp["channels"])])
    if "shape" in fp:
        rows.append(["Shape (array order, median)", _range(fp.get("shape"))])
    if "spacing" in fp:
        rows.append(["Spacing mm (array order, median)", _range(fp.get("spacing"))])
    inten = fp.get("intensity")
    if isinstance(inten, dict) and inten:
        rows.append(["Intensity", ", ".join(f"{k} {fmt(v, 1)}" for k, v in inten.items())])
    if isinstance(fp.get("official_split"), dict):
        rows.append(["Official split", ", ".join(f"{k}: {v}" for k, v in fp["official_split"].items())])
    attrs = fp.get("attributes")
    if isinstance(attrs, dict) and attrs:
        rows.append(["Attributes", ", ".join(
            f"{a} (n={v.get('n')}, {fmt(v.get('min'), 2)}–{fmt(v.get('max'), 2)})" for a, v in attrs.items())])
    return Table(title, ["Field", "Value"], rows)


def splits_table(run: RunData) -> Table | None:
    """Patients per fold and role from splits.json."""
    sp = run.splits or {}
    folds = sp.get("folds") or []
    if not folds:
        return None
    rows = [[f"fold {f.get('fold', i)}", *(fmt(len(f.get(k) or [])) for k in ("train", "val", "test"))]
            for i, f in enumerate(folds)]
    note = f"kind: {sp.get('kind', NA)}, seed: {sp.get('seed', NA)}"
    return Table(f"{run.name}: patients per split", ["", "Train", "Val", "Test"], rows, note=note)


def extra_tables(run: RunData) -> list[Table]:
    """Tables that paper-specific code put into metrics.json (``{"title", "columns", "rows"}``)."""
    out = []
    for t in run.extra("tables"):
        cols = [str(c) for c in t.get("columns") or []]
        rows = [[fmt(v) for v in row] for row in t.get("rows") or []]
        out.append(Table(f"{run.name}: {t.get('title', 'table')}", cols, rows, note=str(t.get("note", ""))))
    return out
