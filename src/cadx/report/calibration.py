"""The run report's calibration section: Brier score and ECE with their patient-bootstrap CIs (``metrics.json``
``calibration``, :mod:`cadx.evaluation.calibration`), before and after post-hoc scaling, which split fitted the
scaling per fold, and the reliability diagram (:func:`cadx.report.figures.reliability_png`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cadx.report import tables as T
from cadx.report.figures import reliability_png
from cadx.report.runs import RunData
from cadx.utils import read_json

__all__ = ["CalibrationSection", "calibration_section"]


@dataclass
class CalibrationSection:
    """What the report shows: a paragraph, a table and (when there are curves) the reliability diagram PNG."""

    text: str
    table: T.Table
    png: bytes | None
    title: str


def _fold_fits(run: RunData) -> list[tuple[str, dict[str, Any]]]:
    """``(fold, decision_fit.calibration)`` of each fold folder that has one."""
    out = []
    for d in sorted(run.path.glob("fold_*"), key=lambda p: p.name):
        m = d / "metrics.json"
        if m.is_file():
            cal = (read_json(m).get("decision_fit") or {}).get("calibration")
            if isinstance(cal, dict):
                out.append((d.name.removeprefix("fold_"), cal))
    return out


def _row(label: str, block: dict[str, Any]) -> list[str]:
    ci = block.get("ci") or {}
    return [label, T.fmt_ci(block.get("brier"), ci.get("brier")), T.fmt_ci(block.get("ece"), ci.get("ece")),
            str(block.get("n", ""))]


def calibration_section(run: RunData) -> CalibrationSection | None:
    """The section of one run, or None when its ``metrics.json`` has no ``calibration`` (older runs, regression
    or segmentation). The paragraph states what is measured (positive-class or top-label reliability, bins,
    strategy, CI method), the scaling method and, per fold, whether it was fitted on validation studies or not
    (with the reason: a fold without validation patients is not calibrated)."""
    cal = run.metrics.get("calibration")
    if not isinstance(cal, dict) or "brier" not in cal:
        return None
    kind = cal.get("kind", "positive-class")
    classes = run.classes
    pos = cal.get("positive")
    what = (f"the probability of the positive class {classes[pos]!s}" if kind == "positive-class" and pos is not None
            and 0 <= int(pos) < len(classes) else "the top-label confidence (multi-class)")
    nb = (run.metrics.get("bootstrap") or {}).get("n_resamples")
    text = (f"Calibration of the pooled out-of-fold study probabilities: {what} against the observed outcome. "
            f"ECE over {cal.get('n_bins')} {'equal-width' if cal.get('strategy') == 'uniform' else 'equal-mass'} "
            "bins (sum of |observed − predicted| weighted by the bin's studies); Brier = mean squared error of "
            f"the probability. 95% CIs: percentile patient bootstrap ({nb if nb is not None else '?'} resamples).")
    method = str(cal.get("method", "none"))
    fits = _fold_fits(run)
    if method != "none":
        fitted = [f for f, c in fits if c.get("fitted")]
        not_fitted = [(f, str(c.get("reason", ""))) for f, c in fits if not c.get("fitted")]
        text += f" Post-hoc scaling: {method}"
        if fits:
            text += (f", fitted on the validation studies of fold(s) {', '.join(fitted) or 'none'}"
                     + "".join(f"; fold {f} not calibrated ({r})" for f, r in not_fitted))
        text += "; never on test studies."
    else:
        text += " No post-hoc scaling (eval.calibration: none)."
    rows = []
    curves: dict[str, dict[str, Any]] = {}
    before = cal.get("before")
    if isinstance(before, dict):
        rows.append(_row("before scaling", before))
        curves["before scaling"] = before
        rows.append(_row(f"after {method} scaling", cal))
        curves[f"after {method}"] = cal
    else:
        rows.append(_row("as predicted" if method == "none" else f"{method} (no fold calibrated)", cal))
        curves["as predicted"] = cal
    table = T.Table(f"{run.name}: calibration (pooled)", ["Probabilities", "Brier [95% CI]", "ECE [95% CI]",
                                                          "Studies"], rows)
    title = f"{run.name}: reliability diagram"
    return CalibrationSection(text, table, reliability_png(curves, title), title)
