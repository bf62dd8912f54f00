"""The external-validation section of a run's report: every ``<run>/external/<name>/metrics.json`` written by
``cadx evaluate`` (:func:`cadx.runs.evaluate.evaluate_run`) as two tables — the cohorts (dataset, root, options
with where each came from, models, studies/patients) and their metrics with 95% CIs beside the run's own
cross-validation (pooled out-of-fold) figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cadx.report import tables as T
from cadx.report.runs import RunData

__all__ = ["external_results", "external_tables"]

_DICE = (("dice_mean", "Dice mean"), ("dice_median", "Dice median"))


def external_results(run_dir: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``(name, metrics)`` of each external evaluation of a run, by name; folders whose ``metrics.json`` is
    missing, unreadable or has no ``external`` block are left out."""
    out = []
    for p in sorted(Path(run_dir).glob("external/*/metrics.json")):
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(m, dict) and isinstance(m.get("external"), dict):
            out.append((p.parent.name, m))
    return out


def _options_text(ext: dict[str, Any]) -> str:
    used = ext.get("options") or {}
    given = ext.get("options_override") or {}
    inherited = ext.get("options_from_run") or {}
    bits = []
    for k in sorted(used):
        if k in given:
            src = "given, overrides the run's " + str(inherited[k]) if k in inherited and inherited[k] != given[k] \
                else "given"
        else:
            src = "run"
        bits.append(f"{k}={used[k]} ({src})")
    return ", ".join(bits) or "none"


def _overlap_text(e: dict[str, Any]) -> str:
    """``"12 of 24 (50 %)"`` from ``n_patients_overlap``; ``n/a`` for evaluations made before it was recorded."""
    n, tot = e.get("n_patients_overlap"), e.get("n_patients")
    if n is None or not tot:
        return T.NA
    text = f"{n} of {tot} ({100 * n / tot:.0f} %)"
    if e.get("fold") == "own":
        text += "; own-fold re-scoring of the run's cohort"
    return text


def _row(label: str, block: dict[str, Any], n_patients: Any, keys: list[str]) -> list[str]:
    ci = block.get("ci") or {}
    return [label, T.fmt(block.get("n_studies")), T.fmt(n_patients),
            *[T.fmt_ci(block.get(k), ci.get(k)) if k in block else T.NA for k in keys]]


def external_tables(run: RunData) -> list[T.Table]:
    """The cohort table and the metrics table (CV row first) of ``run``'s external evaluations; empty when the
    run has none."""
    results = external_results(run.path)
    if not results:
        return []
    cohort_rows = []
    for name, m in results:
        e = m["external"]
        cohort_rows.append([name, str(e.get("dataset", T.NA)), str(e.get("root", T.NA)), _options_text(e),
                            str(e.get("models_text") or ", ".join(e.get("models") or []) or T.NA),
                            T.fmt(e.get("n_studies")), T.fmt(e.get("n_patients")),
                            T.fmt(e.get("n_patients_in_training")) if "n_patients_in_training" in e else T.NA,
                            _overlap_text(e)])
    cohorts = T.Table(f"{run.name}: external validation cohorts",
                      ["Evaluation", "Dataset", "Root", "Options", "Models", "Studies", "Patients",
                       "Seen in training", "Overlap with training"], cohort_rows,
                      note="Options: 'run' = the run's own data.options (same dataset adapter), 'given' = passed to "
                           "cadx evaluate. Seen in training: patients the scoring model was trained or validated on "
                           "(by patient id, same dataset adapter only; n/a for another dataset); for them the "
                           "evaluation is not external. Overlap with training: patients whose images are identical "
                           "to a training study's (SHA-1 of the image arrays), or whose ids match when the cohort "
                           "is the run's own load (cadx evaluate refuses a full overlap).")
    blocks = [run.metrics.get("pooled") or {}] + [m.get("pooled") or {} for _, m in results]
    pairs = [(k, n) for k, n in (*T.HEADLINE, *_DICE) if any(k in b for b in blocks)]
    keys, names = [k for k, _ in pairs], [n for _, n in pairs]
    cv = run.metrics.get("pooled") or {}
    rows = [_row("cross-validation (out-of-fold)", cv, cv.get("n_patients", run.metrics.get("n_patients")), keys)]
    rows += [_row(name, m.get("pooled") or {}, (m.get("pooled") or {}).get("n_patients",
                                                                            m["external"].get("n_patients")), keys)
             for name, m in results]
    metrics = T.Table(f"{run.name}: external validation beside cross-validation (95% CI)",
                      ["", "Studies", "Patients", *names], rows,
                      note="Same scoring as the CV rows: the decision rule and aggregation of the run; segmentation "
                           "Dice per volume on the original grid after the run's post-processing.")
    return [cohorts, metrics]
