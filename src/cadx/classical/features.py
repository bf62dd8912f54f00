"""Handcrafted image features: the DMRN HC baseline (LBP + HOG, 531 + 1296 = 1827-d) and first-order/shape/GLCM
ROI features (the MTMR-Net Table III LASSO / elastic-net baselines).

DMRN (Bi et al., Sec. IV-B) states only "a patch size of 64 for LBP ... a patch size of 32 for HOG ... a 531-d LBP
feature and a 1296-d HOG feature". The one parametrisation with skimage's standard descriptors that gives exactly
these numbers on a common grid is a **192 x 192** input (:data:`HC_SIZE`):

* LBP: ``P=8, R=1, method='nri_uniform'`` has ``P(P-1) + 3 = 59`` codes; a 192-px image holds ``(192/64)^2 = 9``
  non-overlapping 64-px patches → ``9 * 59 = 531``.
* HOG: 9 orientations, 16-px cells, 2 x 2-cell blocks, so one block = one 32-px patch = ``2*2*9 = 36`` values;
  ``(192/32)^2 = 36`` non-overlapping patches → ``36 * 36 = 1296``.

Images of any other size are resized (bilinear, anti-aliased) to ``size x size`` first, so every image gives the
same dimensions; each image is then min-max scaled on its own (window CT in HU before, e.g. with
``cadx.pipeline.preprocess.window_bounds``, or the 256 LBP grey levels span the whole HU range). LBP codes and HOG
gradients are computed on the whole resized image and then pooled per patch (no artificial patch borders).
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from skimage.feature import graycomatrix, graycoprops, hog, local_binary_pattern
from skimage.transform import resize

from cadx.errors import CadxDataError

__all__ = [
    "HC_SIZE", "HOG_DIM", "LBP_DIM", "ROI_FEATURE_NAMES", "handcrafted_features", "hog_features", "lbp_dim",
    "lbp_features", "roi_feature_matrix", "roi_features", "to_2d",
]

HC_SIZE = 192
LBP_DIM = 531
HOG_DIM = 1296


def to_2d(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float64 from ``(H, W)`` or channel-first ``(C, H, W)`` (channels averaged). Other ranks raise."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        a = a.mean(axis=0)
    if a.ndim != 2:
        raise CadxDataError(f"expected a 2D image (H, W) or (C, H, W), got shape {np.shape(image)}", field="image")
    if not np.all(np.isfinite(a)):
        raise CadxDataError("image contains NaN or infinite values", field="image")
    return a


def _prepare(image: np.ndarray, size: int | None) -> np.ndarray:
    """2D float image resized to ``size x size`` (``None`` = keep) and min-max scaled to [0, 1] (constant → 0)."""
    a = to_2d(image)
    if size is not None and a.shape != (size, size):
        a = resize(a, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def lbp_dim(P: int = 8, method: str = "nri_uniform") -> int:
    """Histogram bins of one patch: ``P(P-1)+3`` (nri_uniform), ``P+2`` (uniform), ``2^P`` (default/ror)."""
    if method == "nri_uniform":
        return P * (P - 1) + 3
    if method == "uniform":
        return P + 2
    if method in ("default", "ror"):
        return 2**P
    raise CadxDataError(f"unsupported LBP method {method!r}", field="method")


def _check_grid(size: int, patch: int, what: str) -> int:
    if patch < 1 or size % patch:
        raise CadxDataError(f"{what} patch {patch} must divide the image size {size}", field="patch")
    return size // patch


def lbp_features(image2d: np.ndarray, patch: int = 64, P: int = 8, R: float = 1, method: str = "nri_uniform",
                 size: int | None = HC_SIZE) -> np.ndarray:
    """Concatenated per-patch LBP histograms, ``(n_patches * lbp_dim(P, method),)`` float64; 531 by default.

    The image (``(H, W)`` or ``(C, H, W)``) is resized to ``size x size`` (``None`` = use as is; then each side must
    be a multiple of ``patch``), min-max scaled to uint8 [0, 255] (LBP on floats is tie-unstable), coded with
    ``skimage.feature.local_binary_pattern(img, P, R, method)`` and histogrammed over non-overlapping
    ``patch x patch`` tiles in row-major order; each histogram is normalised to sum 1.
    """
    a = _prepare(image2d, size)
    ny, nx = _check_grid(a.shape[0], patch, "LBP"), _check_grid(a.shape[1], patch, "LBP")
    codes = local_binary_pattern(np.round(a * 255).astype(np.uint8), P, R, method=method)
    bins = lbp_dim(P, method)
    out = np.empty((ny * nx, bins))
    for i in range(ny):
        for j in range(nx):
            tile = codes[i * patch:(i + 1) * patch, j * patch:(j + 1) * patch]
            out[i * nx + j] = np.bincount(tile.astype(np.int64).ravel(), minlength=bins)[:bins] / tile.size
    return out.ravel()


def hog_features(image2d: np.ndarray, patch: int = 32, orientations: int = 9, cells_per_patch: int = 2,
                 size: int | None = HC_SIZE) -> np.ndarray:
    """HOG of non-overlapping ``patch x patch`` tiles, ``(n_patches * cells_per_patch^2 * orientations,)``; 1296.

    ``skimage.feature.hog`` runs once on the whole image (resized to ``size x size``, min-max scaled to [0, 1]) with
    ``pixels_per_cell = patch / cells_per_patch`` and ``cells_per_block = cells_per_patch`` (L2-Hys); of its
    overlapping blocks (stride = one cell) the ones aligned with the patch grid are kept (row-major), so each
    32-px patch is described by one 2 x 2-cell block of 9-bin histograms = 36 values.
    """
    a = _prepare(image2d, size)
    _check_grid(a.shape[0], patch, "HOG")
    _check_grid(a.shape[1], patch, "HOG")
    if patch % cells_per_patch:
        raise CadxDataError(f"cells_per_patch {cells_per_patch} must divide the patch {patch}", field="patch")
    cell = patch // cells_per_patch
    blocks = hog(a, orientations=orientations, pixels_per_cell=(cell, cell),
                 cells_per_block=(cells_per_patch, cells_per_patch), block_norm="L2-Hys", feature_vector=False)
    return blocks[::cells_per_patch, ::cells_per_patch].reshape(-1)


def handcrafted_features(images: np.ndarray, lbp_patch: int = 64, hog_patch: int = 32,
                         size: int = HC_SIZE) -> np.ndarray:
    """DMRN HC features ``[LBP | HOG]`` of a stack: ``(N, H, W)`` or ``(N, C, H, W)`` → ``(N, 1827)`` float64.

    Channels of ``(N, C, H, W)`` are averaged (grey), so pass 3D data as slices (e.g. ``extract_slices``), not
    ``(N, D, H, W)`` volumes. Empty stacks give ``(0, D)``. See the module docstring for the parametrisation.
    """
    arr = np.asarray(images)
    if arr.ndim not in (3, 4):
        raise CadxDataError(f"expected images (N, H, W) or (N, C, H, W), got shape {arr.shape}", field="image")
    rows = [np.concatenate([lbp_features(im, patch=lbp_patch, size=size), hog_features(im, patch=hog_patch,
                                                                                       size=size)])
            for im in arr]
    if rows:
        return np.stack(rows)
    d = (size // lbp_patch) ** 2 * lbp_dim() + (size // hog_patch) ** 2 * 36
    return np.zeros((0, d))


ROI_FEATURE_NAMES: tuple[str, ...] = (
    "size_voxels", "size_mm", "equivalent_diameter_mm", "mean", "std", "min", "max", "p10", "p25", "p50", "p75",
    "p90", "skewness", "kurtosis", "glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation",
    "glcm_dissimilarity",
)


def _glcm(roi: np.ndarray, inside: np.ndarray, levels: int) -> dict[str, float]:
    """GLCM properties over in-mask pixel pairs, distance 1, angles 0/45/90/135°, symmetric, normalised.

    ``roi`` is 2D or 3D (3D: the co-occurrence counts of every axial slice are summed). Out-of-mask pixels are
    coded as grey level 0 and their pairs dropped. Fewer than one in-mask pair → NaN.
    """
    lo, hi = float(roi[inside].min()), float(roi[inside].max())
    q = np.zeros(roi.shape, dtype=np.uint8)
    scaled = (roi[inside] - lo) / (hi - lo) if hi > lo else np.zeros(int(inside.sum()))
    q[inside] = 1 + np.minimum((scaled * levels).astype(np.int64), levels - 1)
    slices = q[None] if q.ndim == 2 else q
    total = np.zeros((levels, levels, 1, 4))
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    for s in slices:
        m = graycomatrix(s, [1], angles, levels=levels + 1, symmetric=True, normed=False)
        total += m[1:, 1:].sum(axis=3, keepdims=True)
    if total.sum() == 0:
        return {k: float("nan") for k in ("contrast", "homogeneity", "energy", "correlation", "dissimilarity")}
    p = total / total.sum()
    out = {k: float(graycoprops(p, k)[0, 0]) for k in ("contrast", "homogeneity", "energy", "dissimilarity")}
    out["correlation"] = float(graycoprops(p, "correlation")[0, 0]) if hi > lo else 1.0
    return out


def roi_features(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...] | None = None,
                 levels: int = 32) -> dict[str, float]:
    """First-order, size and GLCM texture features of the voxels of ``image`` where ``mask`` is non-zero.

    Args:
        image: ``(H, W)`` or ``(D, H, W)`` (a leading channel axis of size 1 is dropped).
        mask: same spatial shape, non-zero = ROI.
        spacing: voxel size in mm in array order (default 1 mm per axis).
        levels: grey levels of the GLCM (in-mask min..max quantised linearly).
    Returns ``{name: value}`` in :data:`ROI_FEATURE_NAMES` order. Skewness/kurtosis (Fisher) are 0 for a constant
    ROI; an empty mask raises ``CadxDataError``.
    """
    img = np.asarray(image, dtype=np.float64)
    msk = np.asarray(mask) != 0
    if img.ndim in (3, 4) and img.shape[0] == 1 and img.ndim - 1 == msk.ndim:
        img = img[0]
    if msk.ndim == img.ndim + 1 and msk.shape[0] == 1:
        msk = msk[0]
    if img.shape != msk.shape or img.ndim not in (2, 3):
        raise CadxDataError(f"image {img.shape} and mask {msk.shape} must share a 2D or 3D shape", field="mask")
    if not msk.any():
        raise CadxDataError("empty ROI mask", field="mask")
    sp = np.ones(img.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)[-img.ndim:]
    v = img[msk]
    n = int(v.size)
    size_mm = n * float(np.prod(sp))
    eqd = 2 * np.sqrt(size_mm / np.pi) if img.ndim == 2 else 2 * np.cbrt(3 * size_mm / (4 * np.pi))
    pct = np.percentile(v, [10, 25, 50, 75, 90])
    const = float(v.max() - v.min()) == 0.0
    feats = {
        "size_voxels": float(n), "size_mm": size_mm, "equivalent_diameter_mm": float(eqd),
        "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()),
        **{f"p{q}": float(x) for q, x in zip((10, 25, 50, 75, 90), pct, strict=True)},
        "skewness": 0.0 if const else float(stats.skew(v)),
        "kurtosis": 0.0 if const else float(stats.kurtosis(v)),
    }
    box = tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(msk))
    feats.update({f"glcm_{k}": x for k, x in _glcm(img[box], msk[box], levels).items()})
    return {k: feats[k] for k in ROI_FEATURE_NAMES}


def roi_feature_matrix(images: list[np.ndarray] | np.ndarray, masks: list[np.ndarray] | np.ndarray,
                       spacings: list[tuple[float, ...] | None] | None = None, levels: int = 32) -> np.ndarray:
    """:func:`roi_features` of each (image, mask) pair stacked as ``(N, len(ROI_FEATURE_NAMES))``."""
    if len(images) != len(masks):
        raise CadxDataError(f"{len(images)} images but {len(masks)} masks", field="mask")
    sps = spacings if spacings is not None else [None] * len(images)
    rows = [list(roi_features(im, m, sp, levels).values()) for im, m, sp in zip(images, masks, sps, strict=True)]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(ROI_FEATURE_NAMES))
