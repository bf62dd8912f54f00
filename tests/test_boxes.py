"""Lesion boxes from masks and study boxes (thesis A.8 convention: 2D box on the central slice + slice span)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.measure import label, regionprops

from cadx.data.boxes import LesionBox, box_lesions, mask_lesions, positive_slices, slice_span, study_lesions
from cadx.data.image import ImageData, LazyImage
from cadx.data.study import Study
from cadx.errors import CadxDataError
from conftest import shared_path


def test_two_2d_components_hand_boxes() -> None:
    m = np.zeros((10, 12), np.uint8)
    m[1:3, 2:5] = 1          # rows 1-2, cols 2-4
    m[6:10, 8:9] = 255       # rows 6-9, col 8
    les = mask_lesions(m)
    assert [lb.as_tuple() for lb in les] == [(1, 2, 3, 5, 0, 0, 1), (6, 8, 10, 9, 0, 0, 1)]
    assert les[0].center == (2.0, 3.5)
    assert les[0].diagonal == pytest.approx(math.hypot(2, 3))


def test_connectivity_diagonal_touch() -> None:
    m = np.zeros((4, 4), bool)
    m[0, 0] = m[1, 1] = True
    assert len(mask_lesions(m)) == 1                      # 8-connected (default, as skimage)
    assert len(mask_lesions(m, connectivity=1)) == 2     # 4-connected
    with pytest.raises(CadxDataError, match="connectivity"):
        mask_lesions(m, connectivity=3)


def test_matches_skimage_regionprops_2d() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((40, 40)) > 0.93
    ours = sorted((lb.y0, lb.x0, lb.y1, lb.x1) for lb in mask_lesions(m))
    ref = sorted(tuple(int(v) for v in r.bbox) for r in regionprops(label(m, connectivity=2)))
    assert ours == ref and len(ours) > 5


def test_3d_central_slice_footprint() -> None:
    m = np.zeros((1, 8, 20, 20), np.uint8)   # channel-first volume
    m[0, 2, 5:7, 5:7] = 1                    # slice 2: small
    m[0, 3, 4:10, 3:12] = 1                  # slice 3 (central of 2..5): wide
    m[0, 4, 5:7, 5:7] = 1
    m[0, 5, 5:6, 5:6] = 1
    (lb,) = mask_lesions(m)
    # extent z 2..5 -> central (2 + 6 - 1) // 2 = 3; box = the footprint on slice 3 only
    assert lb.as_tuple() == (4, 3, 10, 12, 3, 2, 6)
    m2 = m[0].copy()
    m2[6, 15:17, 15:17] = 1                  # separate 2-voxel lesion
    assert len(mask_lesions(m2)) == 2
    assert len(mask_lesions(m2, min_voxels=5)) == 1


def test_empty_and_bad_shapes() -> None:
    assert mask_lesions(np.zeros((1, 5, 5))) == []
    with pytest.raises(CadxDataError, match="mask must be"):
        mask_lesions(np.zeros(5))
    with pytest.raises(CadxDataError, match="y0 < y1"):
        LesionBox(3, 0, 3, 4)


def test_box_lesions_from_manifest_boxes() -> None:
    les = box_lesions([(1, 2, 5, 6), (4, 10, 20, 9, 30, 40)])
    assert les[0].as_tuple() == (1, 2, 5, 6, 0, 0, 1)
    assert les[1].as_tuple() == (10, 20, 30, 40, 6, 4, 9)   # central (4 + 9 - 1) // 2 = 6
    with pytest.raises(CadxDataError, match="4 \\(2D\\) or 6"):
        box_lesions([(1, 2, 3)])


def test_slice_span_and_positive_slices() -> None:
    assert slice_span(16, 16) == 4             # sqrt(16)
    assert slice_span(70, 56) == 8             # sqrt(63) = 7.94 -> 8
    assert slice_span(1, 1) == 1
    lb = LesionBox(0, 0, 16, 16, z=5, z0=2, z1=9)
    assert positive_slices(lb, 20).tolist() == [3, 4, 5, 6]       # span 4 centred on 5
    assert positive_slices(lb, 20, factor=0.5).tolist() == [4, 5]  # halved span (validation)
    edge = LesionBox(0, 0, 16, 16, z=0, z0=0, z1=2)
    assert positive_slices(edge, 3).tolist() == [0, 1]             # clipped at the volume start


def _study(mask: np.ndarray | None, boxes: list[tuple[int, ...]] | None = None) -> Study:
    img = ImageData(np.zeros((1, 6, 6), np.float32), (1.0, 1.0))
    masks = {} if mask is None else {"mask": LazyImage(lambda: ImageData(mask, (1.0, 1.0)), "m.png")}
    return Study("s1", "p1", images={"image": LazyImage(lambda: img, "img.png")}, masks=masks,
                 boxes=list(boxes or []))


def test_study_lesions_boxes_mask_and_missing() -> None:
    m = np.zeros((1, 6, 6), np.uint8)
    m[0, 1:3, 1:4] = 1
    assert [lb.as_tuple() for lb in study_lesions(_study(m))] == [(1, 1, 3, 4, 0, 0, 1)]
    assert [lb.as_tuple() for lb in study_lesions(_study(m, [(0, 0, 2, 2)]))] == [(0, 0, 2, 2, 0, 0, 1)]
    assert study_lesions(_study(np.zeros((1, 6, 6), np.uint8))) == []
    with pytest.raises(CadxDataError, match="s1: no box and no mask"):
        study_lesions(_study(None))


def test_real_lgg_and_busi_counts() -> None:
    from cadx.data.datasets import load_dataset

    lgg = load_dataset("lgg", shared_path("lgg"))
    s = lgg.get("TCGA_CS_4941_19960909")
    (lb,) = study_lesions(s)
    assert lb.as_tuple()[4:] == (13, 10, 18) and (lb.height, lb.width) == (77, 95)
    two = study_lesions(lgg.get("TCGA_DU_5855_19951217"))
    assert len(two) == 2                       # the tumour and a separate 78-voxel component
    busi = load_dataset("busi", shared_path("busi"))
    counts = np.bincount([len(study_lesions(st)) for st in busi])
    assert counts.tolist() == [50, 93, 4, 2]   # 50 normal images, 107 lesions in all
