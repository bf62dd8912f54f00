"""Patient-level splits: stratified group k-fold, holdout, the dataset's official split; ``splits.json`` I/O.

Every split is made on **patients** (``Study.patient_id``): all studies of a patient land in the same part of a
fold, so near-duplicates and repeat scans never leak from training into testing. Stratification uses the
patient's majority label (ties → the lower class index); unlabelled patients form one extra stratum.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from cadx.data.study import Cohort
from cadx.errors import CadxConfigError, CadxDataError
from cadx.utils import atomic_write_json

PARTS = ("train", "val", "test")


@dataclass
class Fold:
    """One fold: sorted patient ids of the ``train``, ``val`` (may be empty) and ``test`` parts."""

    fold: int
    train: list[str]
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fold = int(self.fold)
        self.train = sorted(str(p) for p in self.train)
        self.val = sorted(str(p) for p in self.val)
        self.test = sorted(str(p) for p in self.test)

    def part(self, name: str) -> list[str]:
        if name not in PARTS:
            raise CadxConfigError(f"unknown split part {name!r} (known: {', '.join(PARTS)})")
        return list(getattr(self, name))

    def indices(self, cohort: Cohort, part: str) -> np.ndarray:
        """Study indices (into ``cohort``) of the patients in ``part``; shape ``(n,)`` int64, ascending."""
        pids = set(self.part(part))
        return np.array([i for i, p in enumerate(cohort.patient_ids) if p in pids], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"fold": self.fold, "train": self.train, "val": self.val, "test": self.test}


@dataclass
class Splits:
    """A list of folds plus how they were made (``seed``, ``kind`` = kfold/official/holdout, ``meta``)."""

    folds: list[Fold]
    seed: int | None = 0
    kind: str = "kfold"
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.folds)

    def __iter__(self) -> Iterator[Fold]:
        return iter(self.folds)

    def __getitem__(self, k: int) -> Fold:
        return self.folds[k]

    def to_dict(self) -> dict[str, Any]:
        """``{"folds": [...], "seed", "kind", **meta}`` (meta keys must not shadow the three main keys)."""
        d: dict[str, Any] = {"folds": [f.to_dict() for f in self.folds], "seed": self.seed, "kind": self.kind}
        d.update({k: v for k, v in self.meta.items() if k not in d})
        return d

    def save(self, path: str | Path) -> Path:
        """Write ``splits.json`` atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Splits:
        """Read ``splits.json``; any missing or malformed field raises CadxDataError naming file and field."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CadxDataError("splits file not found", path=path) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CadxDataError(f"not valid JSON ({e})", path=path) from None
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "<splits>") -> Splits:
        if not isinstance(data, dict):
            raise CadxDataError("expected a JSON object", path=source)
        raw = data.get("folds")
        if not isinstance(raw, list) or not raw:
            raise CadxDataError("missing or empty list", path=source, field="folds")
        folds = []
        for i, fd in enumerate(raw):
            where = f"folds[{i}]"
            if not isinstance(fd, dict):
                raise CadxDataError("expected an object", path=source, field=where)
            parts: dict[str, list[str]] = {}
            for name in PARTS:
                ids = fd.get(name, [] if name == "val" else None)
                if not isinstance(ids, list) or not all(isinstance(p, str | int) for p in ids):
                    raise CadxDataError("expected a list of patient ids", path=source, field=f"{where}.{name}")
                parts[name] = [str(p) for p in ids]
            k = fd.get("fold", i)
            if not isinstance(k, int) or isinstance(k, bool):
                raise CadxDataError(f"fold number must be an integer, got {k!r}", path=source,
                                    field=f"{where}.fold")
            folds.append(Fold(k, **parts))
        seed = data.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise CadxDataError(f"seed must be an integer or null, got {seed!r}", path=source, field="seed")
        kind = data.get("kind", "kfold")
        if not isinstance(kind, str):
            raise CadxDataError(f"kind must be a string, got {kind!r}", path=source, field="kind")
        meta = {k: v for k, v in data.items() if k not in ("folds", "seed", "kind")}
        out = cls(folds, seed, kind, meta)
        out._check_structure(source)
        return out

    def _check_structure(self, source: str | Path) -> None:
        nums = [f.fold for f in self.folds]
        if len(set(nums)) != len(nums):
            raise CadxDataError(f"fold numbers repeat: {nums}", path=source, field="folds")
        seen_test: dict[str, int] = {}
        for f in self.folds:
            where = f"folds[fold={f.fold}]"
            for name in PARTS:
                ids = f.part(name)
                if len(set(ids)) != len(ids):
                    dup = next(p for p, c in Counter(ids).items() if c > 1)
                    raise CadxDataError(f"patient {dup!r} listed twice", path=source, field=f"{where}.{name}")
            for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
                both = set(f.part(a)) & set(f.part(b))
                if both:
                    raise CadxDataError(f"{len(both)} patient(s) in both {a} and {b} (leakage), e.g. "
                                        f"{sorted(both)[0]!r}", path=source, field=where)
            for p in f.test:
                if p in seen_test:
                    raise CadxDataError(f"patient {p!r} is in the test set of folds {seen_test[p]} and "
                                        f"{f.fold}", path=source, field=f"{where}.test")
                seen_test[p] = f.fold

    def check(self, cohort: Cohort, source: str | Path | None = None) -> None:
        """Raise CadxDataError on leakage (a patient in two parts of a fold, or in two folds' test sets)
        or on patient ids the cohort does not know. An empty ``val`` is allowed."""
        src = source if source is not None else f"splits of {cohort.name}"
        self._check_structure(src)
        known = set(cohort.patient_ids)
        for f in self.folds:
            for name in PARTS:
                unknown = sorted(set(f.part(name)) - known)
                if unknown:
                    raise CadxDataError(f"{len(unknown)} patient(s) not in cohort {cohort.name!r}, e.g. "
                                        f"{unknown[0]!r}", path=src, field=f"folds[fold={f.fold}].{name}")


# --- making splits ---------------------------------------------------------------------------------------

def patient_strata(cohort: Cohort) -> dict[str, int]:
    """Patient id → stratum: the patient's majority class index (ties → lower index), ``-1`` if unlabelled."""
    y = cohort.y()
    counts: dict[str, Counter[int]] = {}
    for pid, label in zip(cohort.patient_ids, y, strict=True):
        c = counts.setdefault(pid, Counter())
        if label >= 0:
            c[int(label)] += 1
    out = {}
    for pid, c in counts.items():
        out[pid] = min(c, key=lambda k: (-c[k], k)) if c else -1
    return out


def subsample_patients(cohort: Cohort, n_patients: int, seed: int) -> Cohort:
    """A seeded random subset of ``n_patients`` patients (all their studies), stratified by the patients' majority
    class so that every class keeps about its share (each class with at least one patient while ``n_patients``
    allows). ``n_patients`` ≥ the cohort's patient count returns the cohort unchanged. For quick looks and smoke
    runs (``data.max_patients``), never for reported results."""
    if n_patients < 1:
        raise CadxConfigError(f"data.max_patients must be ≥ 1, got {n_patients}")
    strata = patient_strata(cohort)
    if n_patients >= len(strata):
        return cohort
    rng = np.random.default_rng(seed)
    groups: dict[int, list[str]] = {}
    for pid in sorted(strata):
        groups.setdefault(strata[pid], []).append(pid)
    order = {k: list(rng.permutation(v)) for k, v in sorted(groups.items())}
    keep: list[str] = []
    while len(keep) < n_patients:  # round-robin over the strata, largest share first
        for k in sorted(order, key=lambda k: -len(groups[k])):
            if order[k] and len(keep) < n_patients:
                keep.append(str(order[k].pop(0)))
    return cohort.for_patients(keep)


def _split_patients(cohort: Cohort, strata: dict[str, int], pids: Sequence[str], fraction: float, seed: int,
                    what: str) -> tuple[list[str], list[str]]:
    """Split the patients ``pids`` into (rest, held) with about ``fraction`` of them held out, stratified.

    When ``1/fraction`` is an integer k (0.5, 0.25, 0.2, 0.1 …) the held part is fold 0 of
    ``StratifiedGroupKFold(k)`` on these patients' studies, which balances *study* counts per class even
    when patients have many studies; otherwise (also when every class has fewer than k studies, which
    scikit-learn refuses) ``train_test_split`` on patients stratified by their label (plain random when a stratum
    is too small to appear in both parts).
    """
    if not 0.0 < fraction < 1.0:
        raise CadxConfigError(f"{what} must be in (0, 1), got {fraction}")
    pids = sorted(pids)
    n_held = round(fraction * len(pids))
    if n_held < 1 or n_held >= len(pids):
        raise CadxConfigError(f"{what}={fraction} of {len(pids)} patients leaves an empty part")
    k = round(1 / fraction)
    keep = set(pids)
    sel = np.array([p for p in cohort.patient_ids if p in keep])  # studies of these patients
    y = np.array([strata[p] for p in sel], dtype=np.int64)
    # scikit-learn refuses k folds when every class has fewer than k studies: then the patient split below
    if abs(k * fraction - 1) < 1e-9 and k <= len(pids) and max(Counter(y.tolist()).values()) >= k:
        sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*least populated class.*")
            _, te = next(sgkf.split(np.zeros(sel.size), y, groups=sel))
        held_set = set(sel[te].tolist())
        return [p for p in pids if p not in held_set], sorted(held_set)
    labels = [strata[p] for p in pids]
    counts = Counter(labels)
    ok = min(counts.values()) >= 2 and n_held >= len(counts) and len(pids) - n_held >= len(counts)
    rest, held = train_test_split(pids, test_size=n_held, random_state=seed, stratify=labels if ok else None)
    return sorted(rest), sorted(held)


def _sub_seed(seed: int, k: int) -> int:
    return int(np.random.default_rng([seed, k]).integers(2**31 - 1))


def make_splits(cohort: Cohort, folds: int = 5, seed: int = 0, val_fraction: float = 0.0,
                use_official: bool = True) -> Splits:
    """Patient-level stratified k-fold (``StratifiedGroupKFold(shuffle=True, random_state=seed)``).

    Studies are grouped by patient and stratified by the patient's majority label. With
    ``val_fraction > 0`` a validation set (that fraction of each fold's training *patients*, stratified,
    deterministic for ``seed`` and fold) is carved out of training. When ``use_official`` and the cohort
    has an official split, one fold with the official train/val/test is returned (``kind="official"``)
    and ``folds``/``val_fraction`` are ignored. ``folds=1`` without an official split is an error (use
    :func:`holdout_split`).
    """
    if use_official and cohort.official_split() is not None:
        return official_splits(cohort, seed=seed)
    if folds < 2:
        raise CadxConfigError(f"folds={folds}: k-fold needs at least 2 folds (the cohort has no official "
                              "split; use holdout_split for a single train/test split)")
    strata = patient_strata(cohort)
    n_pat = len(strata)
    if n_pat < folds:
        raise CadxDataError(f"{n_pat} patients cannot make {folds} folds", path=cohort.source,
                            field="patient_id")
    pid_arr = np.array(cohort.patient_ids)
    y_study = np.array([strata[p] for p in pid_arr], dtype=np.int64)
    sgkf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        for k, (tr, te) in enumerate(sgkf.split(np.zeros(len(pid_arr)), y_study, groups=pid_arr)):
            train = sorted(set(pid_arr[tr].tolist()))
            test = sorted(set(pid_arr[te].tolist()))
            val: list[str] = []
            if val_fraction > 0:
                train, val = _split_patients(cohort, strata, train, val_fraction, _sub_seed(seed, k),
                                             "val_fraction")
            out.append(Fold(k, train, val, test))
    meta = {"folds_requested": folds, "val_fraction": val_fraction, "patients": n_pat,
            "studies": len(cohort), "cohort": cohort.name}
    return Splits(out, seed, "kfold", meta)


def official_splits(cohort: Cohort, seed: int | None = 0) -> Splits:
    """One fold from ``study.metadata["split"]``; a patient whose studies sit in two splits is an error."""
    split = cohort.official_split()
    if split is None:
        raise CadxDataError("cohort has no official split (metadata['split'] missing on some studies)",
                            path=cohort.source, field="split")
    by_patient: dict[str, str] = {}
    for s in cohort:
        part = split[s.study_id]
        prev = by_patient.setdefault(s.patient_id, part)
        if prev != part:
            raise CadxDataError(f"patient {s.patient_id!r} has studies in both {prev} and {part} of the "
                                "official split", path=cohort.source, field="split")
    parts = {p: [pid for pid, v in by_patient.items() if v == p] for p in PARTS}
    meta = {"patients": len(by_patient), "studies": len(cohort), "cohort": cohort.name}
    return Splits([Fold(0, **parts)], seed, "official", meta)


def holdout_split(cohort: Cohort, test_fraction: float = 0.2, seed: int = 0, val_fraction: float = 0.0) -> Splits:
    """A single fixed stratified patient-level split (``kind="holdout"``, one fold numbered 0).

    About ``test_fraction`` of all patients go to test, then ``val_fraction`` of the remaining (training)
    patients to val (see :func:`_split_patients`: exact study-level stratification when ``1/fraction`` is
    an integer, else a patient-level stratified split).
    """
    strata = patient_strata(cohort)
    train, test = _split_patients(cohort, strata, list(strata), test_fraction, seed, "test_fraction")
    val: list[str] = []
    if val_fraction > 0:
        train, val = _split_patients(cohort, strata, train, val_fraction, _sub_seed(seed, 0), "val_fraction")
    meta = {"test_fraction": test_fraction, "val_fraction": val_fraction, "patients": len(strata),
            "studies": len(cohort), "cohort": cohort.name}
    return Splits([Fold(0, train, val, test)], seed, "holdout", meta)
