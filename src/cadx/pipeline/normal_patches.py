"""Normal-only sampling for the A.9 inpainting GAN: 2D slices of studies, normal slices of training patients only,
and random patches with a foreground check and square holes of variable size.

- :func:`study_slices`: every 2D slice of a study (a 2D image is one slice) as a :class:`Slice2D`: one channel (or
  the channel mean), intensities divided by the 99th percentile of the study's non-zero voxels and clipped to
  [0, 1] (one scale per volume, so a slice with tumour and one without share it), resized to ``size`` square
  (``skimage.transform.resize``, anti-aliased; the mask nearest-neighbour). Non-square images (BUSI) are
  stretched to the square — a choice, stated here.
- :func:`normal_slices`: slices with an empty lesion mask (and, when ``normal_label`` is set, of studies with that
  label) from ``train_patients`` only; a patient also in ``test_patients`` is a :class:`CadxDataError`.
- :class:`NormalPatchSampler`: ``fov``-square patches whose fraction of foreground pixels (``> fg_threshold``) is
  at least ``fg_fraction`` (rejection sampling; the thesis: "overlap with breast tissue, by thresholding non-zero
  pixels"), each with one square hole of side uniform in ``[hole_min, hole_max]`` at a uniform position inside the
  patch. The sampler refuses a slice of a forbidden (test) patient.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from skimage.transform import resize

from cadx.data.study import Cohort, Study
from cadx.errors import CadxConfigError, CadxDataError

__all__ = ["NormalPatchSampler", "Slice2D", "center_mask", "lesion_slices", "normal_slices", "study_slices"]


@dataclass(frozen=True)
class Slice2D:
    """One 2D slice: ``image`` ``(H,W)`` float32 in [0, 1], ``lesion`` ``(H,W)`` bool; ``index`` = the slice's
    position in its volume (0 for a 2D study)."""

    study_id: str
    patient_id: str
    index: int
    image: np.ndarray
    lesion: np.ndarray
    label: str | None = None


def _normalise(arr: np.ndarray, source: str) -> np.ndarray:
    nz = arr[arr > 0]
    if nz.size == 0:
        raise CadxDataError("image is all zero", path=source, field="image")
    hi = float(np.percentile(nz, 99))
    if not np.isfinite(hi) or hi <= 0:
        raise CadxDataError(f"bad 99th intensity percentile {hi}", path=source, field="image")
    return np.clip(arr / hi, 0.0, 1.0).astype(np.float32)


def study_slices(study: Study, size: int, channel: int | None = None) -> list[Slice2D]:
    """Every slice of ``study`` (image ``(C,H,W)`` or ``(C,Z,H,W)``; mask ``(1,...)`` or absent = no lesion),
    channel ``channel`` (None = mean over channels), normalised and resized to ``size`` (see the module doc).

    Raises CadxDataError naming the study's file when the channel is missing or the mask's shape differs."""
    img = study.images["image"]
    arr = np.asarray(img.load().array, dtype=np.float32)
    source = img.source
    if arr.ndim not in (3, 4):
        raise CadxDataError(f"expected a (C,H,W) or (C,Z,H,W) image, got {arr.shape}", path=source, field="image")
    if channel is not None and channel >= arr.shape[0]:
        raise CadxDataError(f"channel {channel} of a {arr.shape[0]}-channel image", path=source, field="channel")
    grey = arr.mean(axis=0) if channel is None else arr[channel]
    vol = grey[None] if grey.ndim == 2 else grey  # (Z,H,W)
    if "mask" in study.masks:
        mask = np.asarray(study.masks["mask"].load().array)
        mvol = mask.reshape(-1, *mask.shape[-2:]) > 0
        if mvol.shape != vol.shape:
            raise CadxDataError(f"mask shape {mask.shape} differs from image {arr.shape}",
                                path=study.masks["mask"].source, field="mask")
    else:
        mvol = np.zeros(vol.shape, dtype=bool)
    vol = _normalise(vol, source)
    out = []
    for z in range(vol.shape[0]):
        im = resize(vol[z], (size, size), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
        le = resize(mvol[z].astype(np.float32), (size, size), order=0, anti_aliasing=False) > 0.5
        out.append(Slice2D(study.study_id, study.patient_id, z, im, le, study.label))
    return out


def _check_disjoint(train_patients: Iterable[str], test_patients: Iterable[str], what: str) -> set[str]:
    train, test = set(train_patients), set(test_patients)
    both = sorted(train & test)
    if both:
        raise CadxDataError(f"{len(both)} test patient(s) among the normal training patients, e.g. {both[0]}",
                            path=what, field="patient_id")
    return train


def normal_slices(cohort: Cohort, train_patients: Iterable[str], test_patients: Iterable[str], size: int,
                  channel: int | None = None, normal_label: str | None = None) -> list[Slice2D]:
    """The normal slices (empty lesion mask; label ``normal_label`` when given) of ``train_patients``' studies.

    Raises CadxDataError (naming the cohort and ``patient_id``) when a patient is in both ``train_patients`` and
    ``test_patients``; test patients never contribute. An empty result is a CadxDataError too."""
    train = _check_disjoint(train_patients, test_patients, cohort.name)
    out = []
    for s in cohort.studies:
        if s.patient_id not in train or (normal_label is not None and s.label != normal_label):
            continue
        out += [sl for sl in study_slices(s, size, channel) if not sl.lesion.any()]
    if not out:
        raise CadxDataError(f"no normal slice among {len(train)} training patients"
                            + (f" with label {normal_label!r}" if normal_label else ""), path=cohort.name,
                            field="mask")
    return out


def lesion_slices(cohort: Cohort, patients: Iterable[str], size: int, channel: int | None = None,
                  min_pixels: int = 1) -> list[Slice2D]:
    """Slices with at least ``min_pixels`` lesion pixels (after resizing) of ``patients``' studies."""
    keep = set(patients)
    out = []
    for s in cohort.studies:
        if s.patient_id in keep:
            out += [sl for sl in study_slices(s, size, channel) if int(sl.lesion.sum()) >= min_pixels]
    return out


def center_mask(fov: int, hole: int) -> np.ndarray:
    """``(fov,fov)`` float32 with a centred ``hole``-square of ones (top-left at ``(fov - hole) // 2``)."""
    if not 0 < hole < fov:
        raise CadxConfigError(f"hole {hole} must be between 1 and fov-1 = {fov - 1}")
    m = np.zeros((fov, fov), dtype=np.float32)
    o = (fov - hole) // 2
    m[o:o + hole, o:o + hole] = 1.0
    return m


class NormalPatchSampler:
    """Random normal patches with holes (see the module doc).

    ``slices``: normal :class:`Slice2D` (each at least ``fov`` square); ``forbidden_patients``: patients that must
    never contribute (test patients) — a slice of one is a CadxDataError. :meth:`sample` returns
    ``(patches, masks)``, each ``(n,1,fov,fov)`` float32 (patches in [0, 1], masks 1 = hole).
    """

    def __init__(self, slices: Sequence[Slice2D], fov: int, hole_min: int, hole_max: int,
                 fg_threshold: float = 0.05, fg_fraction: float = 0.5,
                 forbidden_patients: Iterable[str] = (), max_tries: int = 1000) -> None:
        if not 1 <= hole_min <= hole_max < fov:
            raise CadxConfigError(f"holes: need 1 <= hole_min ({hole_min}) <= hole_max ({hole_max}) < fov ({fov})")
        forbidden = set(forbidden_patients)
        bad = [s for s in slices if s.patient_id in forbidden]
        if bad:
            raise CadxDataError("a test patient's slice reached the normal training sampler", path=bad[0].study_id,
                                field="patient_id")
        small = [s for s in slices if min(s.image.shape) < fov]
        if small:
            raise CadxDataError(f"slice {small[0].image.shape} smaller than the field of view {fov}",
                                path=small[0].study_id, field="image")
        if not slices:
            raise CadxDataError("no normal slice to sample from", path="normal_slices", field="mask")
        self.slices = list(slices)
        self.fov, self.hole_min, self.hole_max = fov, hole_min, hole_max
        self.fg_threshold, self.fg_fraction, self.max_tries = fg_threshold, fg_fraction, max_tries

    @property
    def patients(self) -> set[str]:
        return {s.patient_id for s in self.slices}

    def foreground_ok(self, patch: np.ndarray) -> bool:
        """Whether ``patch``'s fraction of pixels above ``fg_threshold`` reaches ``fg_fraction``."""
        return float((patch > self.fg_threshold).mean()) >= self.fg_fraction

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` patches and hole masks (see the class doc), drawn with ``rng`` only (same state ⇒ same batch).

        Raises CadxDataError when ``max_tries`` draws in a row fail the foreground check."""
        f = self.fov
        patches = np.zeros((n, 1, f, f), dtype=np.float32)
        masks = np.zeros((n, 1, f, f), dtype=np.float32)
        for i in range(n):
            for _ in range(self.max_tries):
                s = self.slices[int(rng.integers(len(self.slices)))]
                h, w = s.image.shape
                y, x = int(rng.integers(h - f + 1)), int(rng.integers(w - f + 1))
                p = s.image[y:y + f, x:x + f]
                if self.foreground_ok(p):
                    break
            else:
                raise CadxDataError(f"{self.max_tries} patches in a row below foreground fraction "
                                    f"{self.fg_fraction} (threshold {self.fg_threshold})", path="normal_slices",
                                    field="fg_fraction")
            side = int(rng.integers(self.hole_min, self.hole_max + 1))
            hy, hx = int(rng.integers(f - side + 1)), int(rng.integers(f - side + 1))
            patches[i, 0] = p
            masks[i, 0, hy:hy + side, hx:hx + side] = 1.0
        return patches, masks
