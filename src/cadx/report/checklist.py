"""The reporting checklist (TRIPOD+AI / CLAIM items a run folder can answer itself) and the report's warnings.

:func:`checklist` reads a run folder and answers, from its files and never from assumption:

- **unit of split** (``splits.json``: patient ids; near-duplicate groups when the dataset has no patient ids) and
  **unit of analysis** (one prediction per study, CIs resampling patients);
- **patients shared between training and test**: COUNTED from ``splits.json`` (each fold's train + val patients
  against its test patients) and from ``predictions.csv`` (a study scored by a fold whose training or validation
  part holds its patient); a leaked split gives a nonzero count and names the folds;
- **test set use** (``metrics.json`` ``selection.test_used``; else the split kind: official split or pooled
  out-of-fold CV), **CI method** (``bootstrap``: resamples, unit, and the resamples skipped per metric),
  **seeds** (``config.yaml`` ``seed`` / ``train.seed``, the split seed, ``metrics.json`` ``seeds`` when present),
  **which split chose each setting** (``selection``; else each fold's ``best_epoch``/``decision_fit``),
  **calibration** (``metrics.json`` ``calibration`` or ``pooled.calibration``: Brier/ECE; else "not measured"),
  **multiplicity** (given by the report: the number of paired tests and their correction),
  **data source and licence** (``fingerprint.json`` ``info.data_source`` / ``info.licence``, recorded by
  :func:`cadx.data.datasets.load_dataset`), **exclusions with counts** (``data_check.json`` and the adapter's
  counts in ``fingerprint.json`` ``info``: skipped masks, unmatched folders, invalid ratings; cohort studies not
  scored).

An item the folder cannot answer says so ("not recorded ..."); nothing is filled in by default.

:func:`run_warnings` lists what a reader must see first: a binary sensitivity or specificity of 0 (and of 1 with a
CI of zero width), any CI of zero width, bootstrap resamples skipped, and external evaluations whose patients were
seen in training.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cadx.errors import CadxDataError

__all__ = ["Item", "checklist", "leaked_patients", "merge_checklists", "run_warnings"]

Item = tuple[str, str]


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CadxDataError(f"invalid JSON ({e.msg}, line {e.lineno})", path=path) from None


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def leaked_patients(splits: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{fold: sorted patient ids in both (train ∪ val) and test of that fold}`` from a ``splits.json`` dict;
    folds without a leak are left out (an empty dict = no patient on both sides)."""
    out: dict[str, list[str]] = {}
    for i, f in enumerate(splits.get("folds") or []):
        seen = {str(p) for p in (f.get("train") or [])} | {str(p) for p in (f.get("val") or [])}
        both = sorted(seen & {str(p) for p in (f.get("test") or [])})
        if both:
            out[str(f.get("fold", i))] = both
    return out


def _predictions_leak(run_dir: Path, splits: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(studies scored by a fold that trained/validated on their patient, studies checked)`` from
    ``predictions.csv``; None without the file or its ``fold``/``patient_id`` columns."""
    f = run_dir / "predictions.csv"
    if not f.is_file():
        return None
    df = pd.read_csv(f, dtype={"patient_id": str}, usecols=lambda c: c in ("fold", "patient_id"))
    if not {"fold", "patient_id"} <= set(df.columns):
        return None
    seen = {str(fd.get("fold", i)): {str(p) for p in (fd.get("train") or [])} | {str(p) for p in (fd.get("val") or [])}
            for i, fd in enumerate(splits.get("folds") or [])}
    bad = sum(str(p) in seen.get(str(k), set()) for k, p in zip(df["fold"], df["patient_id"], strict=True))
    return int(bad), len(df)


def _fold_metrics(run_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for d in sorted(run_dir.glob("fold_*")):
        if d.is_dir() and d.name.removeprefix("fold_").isdigit():
            m = _json(d / "metrics.json")
            if isinstance(m, dict):
                out[d.name.removeprefix("fold_")] = m
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def _config(run_dir: Path) -> dict[str, Any]:
    f = run_dir / "config.yaml"
    if not f.is_file():
        return {}
    try:
        cfg = yaml.safe_load(f.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _split_unit(splits: Mapping[str, Any] | None, info: Mapping[str, Any]) -> str:
    if not splits:
        return "not recorded (no splits.json)"
    folds = splits.get("folds") or []
    unit = ("near-duplicate image groups standing in for patients (the dataset has no patient ids; grouping: "
            f"{info['group']})" if info.get("group") else "patient")
    return (f"{unit}; splits.json kind {splits.get('kind', 'n/a')}, {len(folds)} fold(s), split seed "
            f"{splits.get('seed', 'n/a')}")


def _analysis_unit(metrics: Mapping[str, Any]) -> str:
    pooled = metrics.get("pooled") or {}
    n_st, n_pt = metrics.get("n_studies", pooled.get("n_studies")), metrics.get("n_patients", pooled.get("n_patients"))
    what = "study (one prediction per study" + (", Dice per volume" if "dice_mean" in pooled else "") + ")"
    counts = f": {n_st} studies of {n_pt} patients" if n_st is not None else ""
    return f"{what}{counts}; CIs resample patients, so a patient's studies move together"


def _shared(run_dir: Path, splits: Mapping[str, Any] | None) -> str:
    if not splits:
        return "not checked (no splits.json)"
    leaks = leaked_patients(splits)
    n = len({p for ids in leaks.values() for p in ids})
    folds = splits.get("folds") or []
    text = (f"{n} (checked: train + val against test in each of {len(folds)} fold(s) of splits.json)" if not leaks
            else f"{n} patient(s) on both sides — " + "; ".join(
                f"fold {k}: {len(v)} ({', '.join(v[:3])}{' …' if len(v) > 3 else ''})" for k, v in leaks.items()))
    pl = _predictions_leak(run_dir, splits)
    if pl is not None:
        text += f"; predictions.csv: {pl[0]} of {pl[1]} studies scored by a fold that trained on their patient"
    return text


def _test_use(metrics: Mapping[str, Any], splits: Mapping[str, Any] | None) -> str:
    sel = metrics.get("selection") or {}
    kind = str((splits or {}).get("kind", ""))
    how = ("the official test split, scored once by each fold's final model" if kind == "official"
           else "a held-out test split (holdout), scored once by the model chosen on validation" if kind == "holdout"
           else "cross-validation: each patient's studies scored once, out of fold, then pooled" if kind
           else "not recorded (no splits.json)")
    if isinstance(sel, dict) and sel.get("test_used"):
        how += f"; selection record: {sel['test_used']}"
    return how


def _ci(metrics: Mapping[str, Any]) -> str:
    bs = metrics.get("bootstrap") or {}
    n = bs.get("n_resamples")
    if not n:
        return "no bootstrap CIs (0 resamples)" if n == 0 else "not recorded"
    alpha = _num(bs.get("alpha")) or 0.05
    skipped = (metrics.get("pooled") or {}).get("bootstrap_skipped") or {}
    sk = ", ".join(f"{k} {v}" for k, v in skipped.items()) if skipped else "not recorded"
    return (f"percentile bootstrap, {n} resamples of {bs.get('unit', 'patient')}s, {100 * (1 - alpha):g}% "
            f"intervals, seed {bs.get('seed', 'n/a')}; resamples skipped (single class or undefined): {sk}")


def _seeds(metrics: Mapping[str, Any], cfg: Mapping[str, Any], splits: Mapping[str, Any] | None) -> str:
    bits = []
    if "seed" in cfg:
        bits.append(f"config seed {cfg['seed']}")
    train_seed = (cfg.get("train") or {}).get("seed") if isinstance(cfg.get("train"), dict) else None
    if train_seed is not None:
        bits.append(f"training seed {train_seed}")
    if splits and "seed" in splits:
        bits.append(f"split seed {splits['seed']}")
    seeds = metrics.get("seeds")
    if isinstance(seeds, list | dict) and seeds:
        bits.append(f"{len(seeds)} training seeds: {', '.join(str(s) for s in seeds)}")
    else:
        bits.append("one training seed (no seed spread measured)")
    return "; ".join(bits)


def _selection(metrics: Mapping[str, Any], folds: Mapping[str, Mapping[str, Any]],
               splits: Mapping[str, Any] | None) -> str:
    sel = metrics.get("selection")
    if isinstance(sel, dict) and any(isinstance(v, dict) for v in sel.values()):
        parts = [f"{k}: {v.get('split', 'n/a')} ({v.get('rule', '')})".replace(" ()", "")
                 for k, v in sel.items() if isinstance(v, dict)]
        return "; ".join(parts)
    bits = []
    epochs = {k: m.get("best_epoch") for k, m in folds.items() if m.get("best_epoch") is not None}
    if epochs:
        sf = (splits or {}).get("folds") or []
        n_val = sum(bool(f.get("val")) for f in sf)
        bits.append("epoch: " + ", ".join(f"fold {k} epoch {v}" for k, v in epochs.items())
                    + f" (split not recorded in metrics.json; {n_val} of {len(sf)} fold(s) have a validation part "
                      "in splits.json)")
    rules = {str((m.get("decision_fit") or {}).get("rule")) for m in folds.values() if m.get("decision_fit")}
    if rules:
        bits.append("decision: " + ", ".join(sorted(rules)) + " (fitted per fold; split not recorded)")
    return "; ".join(bits) or "not recorded"


def _calibration(metrics: Mapping[str, Any]) -> str:
    cal = metrics.get("calibration") or (metrics.get("pooled") or {}).get("calibration")
    if not isinstance(cal, dict) or not cal:
        return "not measured"
    bits = []
    cis = cal.get("ci") if isinstance(cal.get("ci"), dict) else {}
    for key, label in (("brier", "Brier"), ("ece", "ECE")):
        v = _num(cal.get(key))
        ci = cis.get(key) if isinstance(cis, dict) else None
        if v is not None:
            ci_txt = (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, list | tuple) and len(ci) == 2
                      and all(_num(c) is not None for c in ci) else "")
            bits.append(f"{label} {v:.3f}{ci_txt}")
    method = cal.get("method")
    if method and method != "none":
        bits.append(f"post-hoc {method} scaling")
    elif bits:
        bits.append("no post-hoc scaling")
    return ", ".join(bits) or "recorded without Brier/ECE: " + ", ".join(sorted(cal))


def _source(fp: Mapping[str, Any] | None, metrics: Mapping[str, Any]) -> str:
    info = (fp or {}).get("info") or {}
    name = (fp or {}).get("name") or (metrics.get("run") or {}).get("dataset") or "dataset"
    src, lic = info.get("data_source"), info.get("licence")
    if not src and not lic:
        return f"{name}: not recorded (fingerprint.json has no data_source/licence)"
    return f"{name}: {src or 'source not recorded'}; licence: {lic or 'not recorded'}"


def _exclusions(run_dir: Path, fp: Mapping[str, Any] | None, metrics: Mapping[str, Any]) -> str:
    bits = []
    dc = _json(run_dir / "data_check.json")
    if isinstance(dc, dict):
        if dc.get("skipped"):
            bits.append(f"data check skipped ({dc.get('reason', 'no reason')})")
        else:
            bits.append(f"data check: {dc.get('studies', 'n/a')} studies, {len(dc.get('warnings') or [])} warning(s)")
    else:
        bits.append("no data_check.json")
    info = (fp or {}).get("info") or {}
    for key, label in (("skipped_masks", "masks skipped"), ("unmatched_folders", "folders without a label row"),
                       ("invalid_ratings", "invalid ratings treated as missing"), ("hu_crops", "crops in HU")):
        v = info.get(key)
        if v is not None:
            bits.append(f"{label}: {len(v) if isinstance(v, list | dict) else v}")
    if fp and fp.get("unlabelled"):
        bits.append(f"unlabelled studies: {fp['unlabelled']}")
    n_cohort = (fp or {}).get("studies")
    n_scored = metrics.get("n_studies", (metrics.get("pooled") or {}).get("n_studies"))
    if isinstance(n_cohort, int) and isinstance(n_scored, int):
        bits.append(f"{n_cohort - n_scored} of {n_cohort} cohort studies not scored")
    return "; ".join(bits)


def checklist(run_dir: str | Path, comparisons: tuple[int, str] | str | None = None) -> list[Item]:
    """``[(item, answer)]`` for one run folder (see the module docstring). ``comparisons``: ``(number of paired
    tests in the report, correction)`` when the report makes them; a string = the report's own statement, printed
    as is; None = the report makes none.
    Raises CadxDataError for a folder without ``metrics.json`` or with invalid JSON."""
    p = Path(run_dir)
    metrics = _json(p / "metrics.json")
    if not isinstance(metrics, dict):
        raise CadxDataError("no metrics.json (run not evaluated yet?)", path=p)
    splits = _json(p / "splits.json")
    fp = _json(p / "fingerprint.json")
    cfg = _config(p)
    folds = _fold_metrics(p)
    info = (fp or {}).get("info") or {}
    mult = (comparisons if isinstance(comparisons, str)
            else "none: the report makes no paired comparison" if not comparisons or comparisons[0] == 0
            else f"{comparisons[0]} paired comparison(s), {comparisons[1]}")
    return [
        ("Unit of split", _split_unit(splits, info)),
        ("Unit of analysis", _analysis_unit(metrics)),
        ("Patients shared between training and test", _shared(p, splits)),
        ("Use of the test data", _test_use(metrics, splits)),
        ("Confidence intervals", _ci(metrics)),
        ("Seeds", _seeds(metrics, cfg, splits)),
        ("Which split chose each setting", _selection(metrics, folds, splits)),
        ("Calibration", _calibration(metrics)),
        ("Multiplicity", mult),
        ("Data source and licence", _source(fp, metrics)),
        ("Exclusions", _exclusions(p, fp, metrics)),
    ]


def merge_checklists(named: list[tuple[str, list[Item]]]) -> list[Item]:
    """One checklist for several runs (a study): an item's answer once when every run gives it, else
    ``"<run>: <answer>"`` per run, joined by `` · ``. Items keep the first run's order."""
    if not named:
        return []
    out = []
    for i, (item, _) in enumerate(named[0][1]):
        answers = [(name, items[i][1]) for name, items in named if i < len(items) and items[i][0] == item]
        same = {a for _, a in answers}
        out.append((item, answers[0][1] if len(same) == 1 else " · ".join(f"{n}: {a}" for n, a in answers)))
    return out


def _zero_width(ci: Any) -> bool:
    return (isinstance(ci, list | tuple) and len(ci) == 2 and _num(ci[0]) is not None and _num(ci[1]) is not None
            and float(ci[0]) == float(ci[1]))


def run_warnings(metrics: Mapping[str, Any], external: Sequence[tuple[str, Mapping[str, Any]]] | None = None
                 ) -> list[str]:
    """Warnings for the first lines of a run's report, from its ``metrics.json`` dict (pooled block):

    - binary task, sensitivity or specificity 0 (whatever its CI), or 1 with a CI of zero width;
    - every other CI of zero width (``ci`` entries and the segmentation ``lesion_split`` CIs);
    - bootstrap resamples skipped (``bootstrap_skipped``: how many of how many, per metric);
    - ``external``: ``(name, metrics.json)`` of external evaluations whose patients overlap the training patients.
    Empty when nothing needs saying."""
    pooled = metrics.get("pooled") or {}
    ci = pooled.get("ci") or {}
    out: list[str] = []
    flagged: set[str] = set()
    classes = pooled.get("classes") or metrics.get("classes") or []
    if len(classes) == 2:
        for key in ("sensitivity", "specificity"):
            v = _num(pooled.get(key))
            c = ci.get(key)
            if v is None:
                continue
            if v == 0.0 or (v == 1.0 and _zero_width(c)):
                what = ("every positive case missed" if (key, v) == ("sensitivity", 0.0)
                        else "every negative case called positive" if v == 0.0
                        else "no error at all on this class, and the CI cannot show any uncertainty")
                ci_txt = f" [{c[0]:.3f}, {c[1]:.3f}]" if c is not None and _zero_width(c) else ""
                out.append(f"{key} {v:.3f}{ci_txt}: {what} (check the decision rule and the positive class).")
                flagged.add(key)
    for key, c in ci.items():
        if key not in flagged and _zero_width(c):
            out.append(f"{key}: the 95% CI has zero width ([{c[0]:.3f}, {c[1]:.3f}]); the resamples never moved it.")
    ls = pooled.get("lesion_split")
    if isinstance(ls, dict):
        for grp in ("lesion", "no_lesion", "all"):
            for k, c in (ls.get(grp) or {}).items():
                if k.startswith("ci_") and _zero_width(c):
                    out.append(f"{grp} {k.removeprefix('ci_')}: the 95% CI has zero width ([{c[0]:.3f}, {c[1]:.3f}]).")
    n_res = (metrics.get("bootstrap") or {}).get("n_resamples")
    skipped = {k: int(v) for k, v in (pooled.get("bootstrap_skipped") or {}).items() if v}
    if skipped:
        of = f" of {n_res}" if n_res else ""
        out.append("bootstrap resamples skipped (single class or undefined metric): "
                   + ", ".join(f"{k} {v}{of}" for k, v in skipped.items()) + "; the CIs rest on the rest.")
    for name, m in external or []:
        e = m.get("external") or {}
        n, tot = e.get("n_patients_overlap"), e.get("n_patients")
        if n:
            out.append(f"external evaluation {name}: {n} of {tot} patients ({100 * n / tot:.0f} %) were seen in "
                       "training by the model that scored them; for them it is not external.")
    return out
