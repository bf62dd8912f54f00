"""The input pipeline above the array operations: study → items, item store, epoch batches/partners, loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cadx.config import InputConfig
from cadx.data.image import ImageData
from cadx.pipeline.items import build_store
from cadx.pipeline.loaders import BatchKey, EpochBatchSampler, eval_loader, train_loader
from cadx.pipeline.preprocess import StudyPreprocessor
from helpers import tiny_cohort, tiny_config


def _vol() -> tuple[ImageData, np.ndarray]:
    arr = np.zeros((1, 10, 30, 30), np.float32)
    arr[0, 2:7, 10:20, 12:18] = 100.0
    mask = arr > 0
    return ImageData(arr, (2.0, 1.0, 1.0)), mask


def test_slices2d_one_item_per_box_slice_with_25d_channels() -> None:
    img, mask = _vol()
    pre = StudyPreprocessor(InputConfig(kind="slices2d", size=16, channels=3, normalize="minmax"))
    items, _, pos = pre.items(img, mask, [(2, 10, 12, 7, 20, 18)])
    assert pos == [2, 3, 4, 5, 6]
    assert all(x.shape == (3, 16, 16) for x in items)
    # centre channel of the middle slice holds the lesion (bright), the box is centred in the crop
    assert items[2][1, 8, 8] > 0.9
    # first slice's lower neighbour (z=1) is background
    assert items[0][0].max() < 0.1
    capped = StudyPreprocessor(InputConfig(kind="slices2d", size=8, max_slices=2)).items(img, mask, [(2, 10, 12, 7, 20,
                                                                                                     18)])
    assert capped[2] == [2, 6]


def test_roi2d_volume3d_image2d_shapes() -> None:
    img, mask = _vol()
    roi = StudyPreprocessor(InputConfig(kind="roi2d", size=12, roi="mask"), with_masks=True)
    items, masks, pos = roi.items(img, mask, [])
    assert len(items) == 1 and items[0].shape == (1, 12, 12) and masks[0].shape == (1, 12, 12)
    assert 2 <= pos[0] < 7 and masks[0].sum() > 0
    vol = StudyPreprocessor(InputConfig(kind="volume3d", size=[4, 8, 8], roi="box"))
    v, _, _ = vol.items(img, None, [(2, 10, 12, 7, 20, 18)])
    assert v[0].shape == (1, 4, 8, 8)
    rgb = ImageData(np.stack([np.full((5, 7), c, np.float32) for c in (0.0, 0.5, 1.0)]), (1.0, 1.0))
    g, _, pos = StudyPreprocessor(InputConfig(kind="image2d", size=6, normalize="none",
                                              convert_channels=True)).items(rgb, None, [])
    assert g[0].shape == (1, 6, 6) and np.allclose(g[0], 0.5) and pos == [-1]
    # no box and no mask: the whole image (volume: its central slice)
    _, _, pos = StudyPreprocessor(InputConfig(kind="roi2d", size=8)).items(img, None, [])
    assert pos == [4]
    # slices2d of a volume without box or mask: every non-blank axial slice (z 2..6), max_slices evenly spaced
    sl, _, pos = StudyPreprocessor(InputConfig(kind="slices2d", size=8, roi="none")).items(img, None, [])
    assert pos == [2, 3, 4, 5, 6] and len(sl) == 5 and all(s.max() > 0 for s in sl)
    _, _, pos = StudyPreprocessor(InputConfig(kind="slices2d", size=8, roi="none", max_slices=3)).items(img, None, [])
    assert pos == [2, 4, 6]
    blank = ImageData(np.zeros((1, 6, 8, 8), np.float32), (1.0, 1.0, 1.0))
    assert StudyPreprocessor(InputConfig(kind="slices2d", size=8, roi="none")).items(blank, None, [])[2] == [2]


def test_diameter_roi_scales_with_diameter() -> None:
    img, _ = _vol()
    pre = StudyPreprocessor(InputConfig(kind="roi2d", size=10, roi="diameter", diameter_scale=1.0,
                                        normalize="none"))
    small = pre.items(img, None, [(2, 10, 12, 7, 20, 18)], diameter_mm=6.0)[0][0]
    big = pre.items(img, None, [(2, 10, 12, 7, 20, 18)], diameter_mm=30.0)[0][0]
    assert small.min() == 100.0          # 6 mm crop lies inside the lesion
    assert big.min() == 0.0              # 30 mm crop includes background


def test_store_targets_and_study_index() -> None:
    cohort = tiny_cohort(6, attributes=True)
    cfg = tiny_config("task.attributes=all", "task.segmentation=true")
    st = build_store(cohort, cfg, progress=False)
    assert st.images.shape[1:] == (1, 8, 8) and st.masks is not None and st.masks.shape[1:] == (1, 8, 8)
    assert len(st) == 6 * 4                      # 4 slices per lesion box
    np.testing.assert_array_equal(np.bincount(st.study), [4] * 6)
    np.testing.assert_array_equal(st.labels, [0, 1, 0, 1, 0, 1])
    assert st.attribute_names == ["size"] and st.attributes.shape == (6, 1)
    np.testing.assert_array_equal(st.items_of_studies(np.array([1])), [4, 5, 6, 7])


def test_epoch_batches_are_a_function_of_seed_and_epoch() -> None:
    y = np.array([0] * 10 + [1] * 3)
    s = EpochBatchSampler(y, 4, seed=3, kind="oversample", pairs="balanced")
    s.set_epoch(2)
    a = list(s)
    s.set_epoch(2)
    b = list(s)
    assert a == b
    s.set_epoch(3)
    assert list(s) != a
    items = [i for k in a for i in k.items]
    assert len(items) == 20 and np.bincount(y[items]).tolist() == [10, 10]   # oversampled to balance
    assert all(p != i for k in a for i, p in zip(k.items, k.partners, strict=True))
    assert len(s) == len(a) and all(len(k.items) >= 2 for k in a)


def test_loaders_build_paired_dict_batches() -> None:
    cohort = tiny_cohort(6)
    cfg = tiny_config("pairs=balanced", "input.augment.enabled=true", "input.augment.noise=0.1")
    st = build_store(cohort, cfg, progress=False)
    items = np.arange(len(st))
    dl = train_loader(st, items, cfg, seed=1)
    dl.batch_sampler.set_epoch(0)
    b1 = next(iter(dl))
    dl.batch_sampler.set_epoch(0)
    b2 = next(iter(dl))
    assert set(b1) >= {"image", "label", "attributes", "score", "study_index", "image_b", "label_b"}
    assert b1["image"].shape == (8, 1, 8, 8) and b1["label"].dtype == torch.int64
    assert torch.equal(b1["image"], b2["image"])            # same (seed, epoch, batch) → same augmentation
    assert not torch.equal(b1["image"], st.images[b1["item_index"]])   # augmented
    ev = next(iter(eval_loader(st, items, 5, pairs="balanced")))
    assert torch.equal(ev["image"], st.images[:5]) and "image_b" in ev


def test_batch_key_partner_gather() -> None:
    cohort = tiny_cohort(4)
    st = build_store(cohort, tiny_config(), progress=False)
    from cadx.pipeline.loaders import ItemDataset

    ds = ItemDataset(st, np.arange(len(st)))
    b = ds.__getitems__(BatchKey(0, 0, (0, 5), (5, 0)))
    assert torch.equal(b["image"][0], b["image_b"][1])
    assert b["label"].tolist() == [0, 1] and b["label_b"].tolist() == [1, 0]


def test_embedding_svm_probabilities_cover_all_classes() -> None:
    from cadx.classical.svm import EmbeddingSVM

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    x[y == 1] += 3.0
    svm = EmbeddingSVM(classes=[0, 1, 2], random_state=1).fit(x, y)
    p = svm.predict_proba(x)
    assert p.shape == (40, 3) and np.allclose(p.sum(1), 1) and (p[:, 2] == 0).all()
    assert (p.argmax(1) == y).mean() == 1.0
    again = EmbeddingSVM(classes=[0, 1, 2], random_state=1).fit(x, y)
    np.testing.assert_array_equal(p, again.predict_proba(x))  # seeded


def test_fixed_fov_keeps_absolute_lesion_size() -> None:
    img, _ = _vol()                                   # 1 mm in-plane, lesion 10 × 6 px
    pre = StudyPreprocessor(InputConfig(kind="roi2d", size=20, fov_mm=20.0, normalize="none"))
    item = pre.items(img, None, [(2, 10, 12, 7, 20, 18)])[0][0]
    assert item.shape == (1, 20, 20)
    assert int((item[0, :, 10] == 100.0).sum()) == 10   # 20 mm → 20 px: no rescaling of the lesion
    assert int((item[0, 10, :] == 100.0).sum()) == 6


def test_context_channel_keeps_size_beside_diameter_roi() -> None:
    img, _ = _vol()                                   # 1 mm in-plane, lesion 10 × 6 px
    box = [(2, 10, 12, 7, 20, 18)]
    plain = StudyPreprocessor(InputConfig(kind="roi2d", size=20, roi="diameter", normalize="none"))
    both = StudyPreprocessor(InputConfig(kind="roi2d", size=20, roi="diameter", context_fov_mm=20.0,
                                         normalize="none"))
    fov = StudyPreprocessor(InputConfig(kind="roi2d", size=20, fov_mm=20.0, normalize="none"))
    roi = plain.items(img, None, box, diameter_mm=5.0)[0][0]
    item = both.items(img, None, box, diameter_mm=5.0)[0][0]
    assert item.shape == (2, 20, 20) and both.channels_out(1, 3) == 2
    np.testing.assert_array_equal(item[:1], roi)      # the ROI channel is unchanged …
    np.testing.assert_array_equal(item[1:], fov.items(img, None, box)[0][0])   # … the context is the 20-mm view
    assert int((item[1, :, 10] == 100.0).sum()) == 10  # where the lesion keeps its 10 px
    assert int((roi[0, :, 10] == 100.0).sum()) == 20   # while the 10-mm ROI magnifies it twofold


def test_covariate_channels_are_constant_log_planes() -> None:
    from cadx.errors import CadxDataError

    img, _ = _vol()
    box = [(2, 10, 12, 7, 20, 18)]
    pre = StudyPreprocessor(InputConfig(kind="roi2d", size=20, roi="diameter", normalize="none",
                                        covariate_channels=["diameter_mm"]))
    plain = StudyPreprocessor(InputConfig(kind="roi2d", size=20, roi="diameter", normalize="none"))
    item = pre.items(img, None, box, diameter_mm=5.0, covariates={"diameter_mm": 5.0})[0][0]
    assert item.shape == (2, 20, 20) and pre.channels_out(1, 3) == 2
    np.testing.assert_array_equal(item[:1], plain.items(img, None, box, diameter_mm=5.0)[0][0])
    np.testing.assert_allclose(item[1], np.log(5.0))          # one constant plane = log(diameter)
    raw = StudyPreprocessor(InputConfig(kind="roi2d", size=20, normalize="none", covariate_log=False,
                                        covariate_channels=["age", "sex"]))
    two = raw.items(img, None, box, covariates={"age": 61.0, "sex": 0.0})[0][0]
    assert two.shape == (3, 20, 20) and (two[1] == 61.0).all() and (two[2] == 0.0).all()
    with pytest.raises(CadxDataError, match="diameter_mm") as e:
        pre.items(img, None, box, source="nodule_7", covariates={})
    assert e.value.path == "nodule_7" or "nodule_7" in str(e.value)
    with pytest.raises(CadxDataError, match="positive"):
        pre.items(img, None, box, covariates={"diameter_mm": 0.0})


def test_lightning_sets_the_epoch_so_every_epoch_draws_its_own_batches(tmp_path, monkeypatch) -> None:
    """Lightning calls set_epoch only on ``loader.sampler`` / ``loader.batch_sampler.sampler`` and stops after
    len(loader) batches: a real fit must still see epochs 0, 1, 2 (before the fix every epoch replayed epoch 0)."""
    from lightning.fabric.utilities.data import _set_sampler_epoch

    from cadx.pipeline import loaders
    from cadx.training.trainer import fit

    cohort = tiny_cohort(8)
    cfg = tiny_config("train.epochs=3", "input.augment.enabled=true", "input.augment.noise=0.1")
    st = build_store(cohort, cfg, progress=False)
    items = np.arange(len(st))
    dl = train_loader(st, items, cfg, seed=1)
    seen = []
    for epoch in range(2):  # exactly what Lightning's loop does
        _set_sampler_epoch(dl, epoch)
        it = iter(dl)
        seen.append([next(it)["image"] for _ in range(len(dl))])
    assert not torch.equal(seen[0][0], seen[1][0])

    keys: list[int] = []
    real = loaders.ItemDataset.__getitems__

    def spy(self, key):  # type: ignore[no-untyped-def]
        if isinstance(key, BatchKey):
            keys.append(key.epoch)
        return real(self, key)

    monkeypatch.setattr(loaders.ItemDataset, "__getitems__", spy)
    fit(cfg, st, items, np.zeros(0, np.int64), tmp_path, seed=0)
    per_batch = len(keys) // 3
    assert keys == [0] * per_batch + [1] * per_batch + [2] * per_batch
