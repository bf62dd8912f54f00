"""``Study`` (one patient examination) and ``Cohort`` (an ordered table of studies).

A study holds lazily loaded images, its label, attribute scores, masks and boxes. ``patient_id`` is the
unit of every split: studies of one patient never go to two folds. Datasets without patient ids put a
near-duplicate group there instead (see :mod:`cadx.data.dedup`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
from rich.progress import track

from cadx.data.image import LazyImage
from cadx.errors import CadxDataError
from cadx.utils import atomic_write_json, progress_console

#: A box as ``(start_0, ..., start_n, stop_0, ..., stop_n)`` in voxel indices, array axis order, stop exclusive.
Box = tuple[int, ...]


@dataclass
class Study:
    """One study: ids, named lazy images, label, attributes (name → float), masks, boxes, metadata.

    ``label`` is the class name (``str``) or ``None`` for unlabelled studies; ``metadata["split"]``, when
    present, is the dataset's official split (``train``/``val``/``test``).
    """

    study_id: str
    patient_id: str
    images: dict[str, LazyImage] = field(default_factory=dict)
    label: str | None = None
    attributes: dict[str, float] = field(default_factory=dict)
    masks: dict[str, LazyImage] = field(default_factory=dict)
    boxes: list[Box] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def image(self, name: str | None = None) -> LazyImage:
        """The named image, or the only/first one when ``name`` is None."""
        if not self.images:
            raise CadxDataError("study has no image", path=self.study_id, field="images")
        if name is None:
            return next(iter(self.images.values()))
        if name not in self.images:
            raise CadxDataError(f"no image named {name!r} (has {sorted(self.images)})", path=self.study_id,
                                field="images")
        return self.images[name]

    def mask(self, name: str | None = None) -> LazyImage | None:
        if not self.masks:
            return None
        return next(iter(self.masks.values())) if name is None else self.masks.get(name)


class Cohort(Sequence[Study]):
    """An ordered collection of :class:`Study` with class bookkeeping.

    ``classes`` fixes the label order (index = class id); by default the sorted set of labels.
    ``study_id`` must be unique, and one patient must not carry two labels when ``patient_labels`` is
    ``"unique"`` (the default for patient-level classification).
    """

    def __init__(self, studies: Iterable[Study], classes: Sequence[str] | None = None, name: str = "cohort",
                 source: str | None = None, info: dict[str, Any] | None = None) -> None:
        self.studies: list[Study] = list(studies)
        self.name = name
        self.source = source or name
        self.info: dict[str, Any] = dict(info or {})
        seen: dict[str, int] = {}
        for i, s in enumerate(self.studies):
            if s.study_id in seen:
                raise CadxDataError(f"duplicate study_id {s.study_id!r} (rows {seen[s.study_id]} and {i})",
                                    path=self.source, field="study_id")
            seen[s.study_id] = i
        self._index = seen
        labels = sorted({s.label for s in self.studies if s.label is not None})
        if classes is None:
            self.classes = labels
        else:
            self.classes = list(classes)
            unknown = set(labels) - set(self.classes)
            if unknown:
                raise CadxDataError(f"labels {sorted(unknown)} not among classes {self.classes}",
                                    path=self.source, field="label")

    # --- sequence protocol ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.studies)

    @overload
    def __getitem__(self, i: int) -> Study: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Study]: ...
    def __getitem__(self, i: int | slice) -> Study | Sequence[Study]:
        return self.studies[i]

    def __iter__(self) -> Iterator[Study]:
        return iter(self.studies)

    def get(self, study_id: str) -> Study:
        try:
            return self.studies[self._index[study_id]]
        except KeyError:
            raise CadxDataError(f"no study {study_id!r}", path=self.source, field="study_id") from None

    # --- views ---------------------------------------------------------------------------------------
    @property
    def study_ids(self) -> list[str]:
        return [s.study_id for s in self.studies]

    @property
    def patient_ids(self) -> list[str]:
        """Patient id of each study (same order as the studies)."""
        return [s.patient_id for s in self.studies]

    @property
    def patients(self) -> list[str]:
        """Unique patient ids in order of first appearance."""
        return list(dict.fromkeys(self.patient_ids))

    def class_counts(self) -> dict[str, int]:
        """Studies per class, in ``classes`` order (unlabelled studies are not counted)."""
        c = Counter(s.label for s in self.studies if s.label is not None)
        return {k: int(c.get(k, 0)) for k in self.classes}

    def y(self) -> np.ndarray:
        """Class index per study, ``-1`` for unlabelled studies. Shape ``(N,)``, int64."""
        lut = {c: i for i, c in enumerate(self.classes)}
        return np.array([lut.get(s.label, -1) if s.label is not None else -1 for s in self.studies],
                        dtype=np.int64)

    def attribute_names(self) -> list[str]:
        names: dict[str, None] = {}
        for s in self.studies:
            names.update(dict.fromkeys(s.attributes))
        return list(names)

    def filter(self, predicate: Callable[[Study], bool], name: str | None = None) -> Cohort:
        """A new cohort with the studies for which ``predicate`` is true (classes kept)."""
        return Cohort([s for s in self.studies if predicate(s)], classes=self.classes,
                      name=name or self.name, source=self.source, info=self.info)

    def subset(self, study_ids: Iterable[str]) -> Cohort:
        ids = set(study_ids)
        return self.filter(lambda s: s.study_id in ids)

    def for_patients(self, patient_ids: Iterable[str]) -> Cohort:
        pids = set(patient_ids)
        return self.filter(lambda s: s.patient_id in pids)

    def check_patient_labels(self) -> None:
        """Raise when one patient carries two different labels (a patient-level task cannot use it)."""
        by_patient: dict[str, set[str]] = {}
        for s in self.studies:
            if s.label is not None:
                by_patient.setdefault(s.patient_id, set()).add(s.label)
        bad = {p: sorted(v) for p, v in by_patient.items() if len(v) > 1}
        if bad:
            p, v = next(iter(bad.items()))
            raise CadxDataError(f"patient {p!r} has two labels {v} ({len(bad)} such patients)",
                                path=self.source, field="label")

    def official_split(self) -> dict[str, str] | None:
        """``study_id → split`` when every study carries ``metadata['split']``, else None."""
        splits = {s.study_id: s.metadata.get("split") for s in self.studies}
        if self.studies and all(v in ("train", "val", "test") for v in splits.values()):
            return {k: str(v) for k, v in splits.items()}
        return None

    # --- fingerprint ---------------------------------------------------------------------------------
    def fingerprint(self, max_images: int = 200, percentiles: Sequence[float] = (0.5, 5, 50, 95, 99.5),
                    progress: bool = False) -> dict[str, Any]:
        """Summary of the cohort (nnU-Net style): counts, shapes, spacings and intensity percentiles.

        Shapes/spacings/intensities come from up to ``max_images`` studies spread evenly over the cohort
        (all of them when it is smaller); intensities use a strided sample of each image's voxels.
        """
        n = len(self.studies)
        idx: list[int] = (np.unique(np.linspace(0, n - 1, min(n, max_images)).round().astype(int)).tolist()
                          if n else [])
        shapes: list[tuple[int, ...]] = []
        spacings: list[tuple[float, ...]] = []
        samples: list[np.ndarray] = []
        channels: set[int] = set()
        it: Iterable[int] = idx
        if progress:
            it = track(idx, description="fingerprint", console=progress_console())
        for i in it:
            st = self.studies[int(i)]
            if not st.images:
                continue
            img = st.image().load()
            shapes.append(img.spatial_shape)
            spacings.append(img.spacing)
            channels.add(img.channels)
            a = np.asarray(img.array, dtype=np.float32).ravel()
            step = max(1, a.size // 20000)
            a = a[::step]
            samples.append(a[np.isfinite(a)])

        def _summ(rows: list[tuple[Any, ...]]) -> dict[str, list[float]] | None:
            if not rows or len({len(r) for r in rows}) != 1:
                return None
            arr = np.asarray(rows, dtype=float)
            return {"min": arr.min(0).tolist(), "median": np.median(arr, 0).tolist(), "max": arr.max(0).tolist()}

        allv = np.concatenate(samples) if samples else np.zeros(0)
        pct = ({f"p{p:g}": float(np.percentile(allv, p)) for p in percentiles} if allv.size else {})
        if allv.size:
            pct.update(mean=float(allv.mean()), std=float(allv.std()))
        attrs = self.attribute_names()
        attr_summary = {}
        for name in attrs:
            vals = np.array([s.attributes[name] for s in self.studies if name in s.attributes], dtype=float)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                attr_summary[name] = {"n": int(vals.size), "mean": float(vals.mean()), "min": float(vals.min()),
                                   "max": float(vals.max())}
        return {
            "name": self.name,
            "studies": n,
            "patients": len(self.patients),
            "classes": list(self.classes),
            "class_counts": self.class_counts(),
            "unlabelled": int(sum(s.label is None for s in self.studies)),
            "images_sampled": len(shapes),
            "channels": sorted(channels),
            "shape": _summ(shapes),
            "spacing": _summ(spacings),
            "intensity": pct,
            "attributes": attr_summary,
            "official_split": (dict(Counter(self.official_split().values()))  # type: ignore[union-attr]
                               if self.official_split() else None),
            "info": self.info,
        }

    def write_fingerprint(self, path: str | Path, **kw: Any) -> dict[str, Any]:
        fp = self.fingerprint(**kw)
        atomic_write_json(path, fp)
        return fp

    def describe(self) -> dict[str, Any]:
        """Counts only (no image is loaded): ``studies``, ``patients``, ``class_counts``."""
        d: dict[str, Any] = {"name": self.name, "studies": len(self), "patients": len(self.patients),
                             "class_counts": self.class_counts(), "classes": list(self.classes)}
        split = self.official_split()
        if split:
            d["official_split"] = dict(Counter(split.values()))
        attrs = self.attribute_names()
        if attrs:
            d["attributes"] = attrs
        d.update({k: v for k, v in self.info.items() if isinstance(v, int | float | str)})
        return d


def finite_or_none(x: float) -> float | None:
    return None if (x is None or not math.isfinite(x)) else float(x)
