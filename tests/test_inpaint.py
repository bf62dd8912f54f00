"""Thesis A.9 inpainting GAN: shapes, the contextual attention, the losses against hand computation, and seeded,
resumable training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cadx.errors import CadxConfigError, CadxDataError
from cadx.models import MODELS, create_model
from cadx.models.inpaint import ContextualAttention, InpaintGAN, crop_local, hole_boxes
from cadx.objectives.inpaint import (
    PAPER_WEIGHTS,
    discounted_l1,
    gradient_penalty,
    known_l1,
    spatial_discount,
    wgan_critic_loss,
    wgan_generator_loss,
)
from cadx.pipeline.normal_patches import NormalPatchSampler, Slice2D
from cadx.training.gan import GanTrainConfig, load_gan_checkpoint, train_inpaint_gan


def _tiny(seed: int = 0, attention: bool = True) -> InpaintGAN:
    torch.manual_seed(seed)
    m = create_model("inpaint_gan", 0, 1, 2, fov=32, local_size=16, width=4, contextual_attention=attention)
    assert isinstance(m, InpaintGAN)
    return m


def test_registered_with_cpu_defaults_and_paper_weights() -> None:
    assert "inpaint_gan" in MODELS
    assert MODELS.options("inpaint_gan").model_dump() == {"fov": 64, "local_size": 32, "width": 16,
                                                          "contextual_attention": True}
    w = PAPER_WEIGHTS
    assert (w.mask, w.fov, w.gan, w.gp, w.gamma) == (1.2, 1.2, 0.001, 10.0, 0.99)


@pytest.mark.parametrize("attention", [True, False])
def test_generator_and_critic_shapes(attention: bool) -> None:
    m = _tiny(attention=attention)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    mask = torch.zeros(3, 1, 32, 32)
    mask[:, :, 8:24, 4:20] = 1
    with torch.no_grad():
        coarse, fine = m(x, mask)
    assert coarse.shape == fine.shape == (3, 1, 32, 32)
    assert float(fine.abs().max()) <= 1.0 and float(coarse.abs().max()) <= 1.0
    assert m.global_critic(x).shape == (3,) and m.local_critic(crop_local(x, mask, 16)).shape == (3,)
    assert m.critic(x, mask).shape == (3,)
    # the hole's content never reaches the generator: changing it changes nothing
    x2 = x.clone()
    x2[:, :, 8:24, 4:20] = 0.7
    with torch.no_grad():
        assert torch.equal(m(x2, mask)[1], fine)
    with pytest.raises(ValueError, match="multiples of 4"):
        m.generator(torch.zeros(1, 1, 30, 30), torch.zeros(1, 1, 30, 30))
    with pytest.raises(ValueError, match="16x16"):
        m.local_critic(torch.zeros(1, 1, 32, 32))


def test_crop_local_centres_on_the_hole_and_stays_inside() -> None:
    x = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32).repeat(2, 1, 1, 1)
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, :, 10:14, 12:16] = 1  # centre (12, 14) -> window rows 4..19, cols 6..21
    mask[1, :, 0:4, 28:32] = 1    # at the corner -> shifted to rows 0..15, cols 16..31
    assert hole_boxes(mask) == [(10, 12, 14, 16), (0, 28, 4, 32)]
    crops = crop_local(x, mask, 16)
    assert torch.equal(crops[0, 0], x[0, 0, 4:20, 6:22]) and torch.equal(crops[1, 0], x[1, 0, 0:16, 16:32])
    with pytest.raises(ValueError, match="no hole"):
        hole_boxes(torch.zeros(1, 1, 4, 4))


def test_contextual_attention_matches_a_per_sample_reference() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(3, 4, 6, 6, generator=g)
    m = torch.zeros(3, 1, 6, 6)
    m[:, :, 2:4, 1:5] = 1
    m[2] = 1  # all hole: nothing to borrow, features kept
    out = ContextualAttention()(f, m)
    assert torch.equal(out[2], f[2])
    for i in range(2):
        fi, mi = f[i], m[i]
        patches = F.unfold(fi[None], 3, padding=1)[0].T.reshape(36, 4, 3, 3)
        known = (mi.reshape(-1) < 0.5).float()[:, None, None]
        norm = patches.flatten(1).norm(dim=1)[:, None, None, None]
        score = F.conv2d(fi[None], patches / norm, padding=1)[0] * known - 1e4 * (1 - known)
        attn = torch.softmax(score * 10, 0) * known
        ref = fi * (1 - mi) + F.conv_transpose2d(attn[None], patches, padding=1)[0] / 9 * mi
        assert torch.allclose(out[i], ref, atol=1e-5)
        assert torch.equal(out[i][:, mi[0] < 0.5], fi[:, mi[0] < 0.5])  # outside the hole untouched


def test_spatial_discount_weights_by_hand() -> None:
    mask = np.zeros((2, 1, 5, 5), dtype=np.float32)
    mask[0, 0, 1:4, 1:4] = 1  # ring at distance 1, centre at distance 2
    mask[1, 0, 0:2, :] = 1    # two full rows at the top: row 1 touches known row 2, row 0 is 2 away
    w = spatial_discount(mask, 0.99).numpy()
    e0 = np.zeros((5, 5))
    e0[1:4, 1:4] = 0.99
    e0[2, 2] = 0.99 ** 2
    e1 = np.zeros((5, 5))
    e1[0] = 0.99 ** 2
    e1[1] = 0.99
    assert np.allclose(w[0, 0], e0) and np.allclose(w[1, 0], e1)
    with pytest.raises(ValueError, match="all hole"):
        spatial_discount(np.ones((1, 1, 3, 3)))


def test_discounted_and_known_l1_by_hand() -> None:
    mask = torch.zeros(1, 1, 5, 5)
    mask[0, 0, 1:4, 1:4] = 1
    target = torch.zeros(1, 1, 5, 5)
    pred = torch.ones(1, 1, 5, 5)
    pred[0, 0, 0, 0] = 3.0  # a known pixel
    assert float(discounted_l1(pred, target, mask)) == pytest.approx((8 * 0.99 + 0.99 ** 2) / 9, rel=1e-6)
    assert float(known_l1(pred, target, mask)) == pytest.approx((15 * 1 + 3) / 16)


def test_wgan_losses_and_gradient_penalty_on_a_linear_critic() -> None:
    assert float(wgan_critic_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.5]))) == pytest.approx(-1.5)
    assert float(wgan_generator_loss(torch.tensor([1.0, 2.0]))) == pytest.approx(-1.5)
    lin = torch.nn.Linear(16, 1, bias=True)
    with torch.no_grad():
        lin.weight.fill_(0.1)  # ||w|| = 0.1 * sqrt(16) = 0.4 -> GP = (0.4 - 1)^2 = 0.36
        lin.bias.fill_(5.0)

    def critic(x: torch.Tensor) -> torch.Tensor:
        return lin(x.flatten(1))[:, 0]

    real, fake = torch.rand(4, 1, 4, 4), torch.rand(4, 1, 4, 4)
    gp = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(1))
    assert float(gp) == pytest.approx(0.36, abs=1e-6)
    gp.backward()  # differentiable w.r.t. the critic: d/dw (||w||-1)^2 = 2 (0.4-1) w/||w|| = -0.3 per weight
    assert torch.allclose(lin.weight.grad, torch.full((1, 16), -0.3), atol=1e-5)


def _slices(n: int = 3, size: int = 24, seed: int = 0) -> list[Slice2D]:
    rng = np.random.default_rng(seed)
    return [Slice2D(f"s{i}", f"p{i}", 0, rng.uniform(0.2, 1, (size, size)).astype(np.float32),
                    np.zeros((size, size), bool)) for i in range(n)]


def _gan16() -> InpaintGAN:
    """A 16-px field-of-view GAN (critics of 16 px), small enough to train in a test."""
    torch.manual_seed(3)
    return InpaintGAN(1, fov=16, local_size=16, width=4, contextual_attention=True)


def _train(out: Path, epochs: int, lr: float = 1e-3) -> tuple[InpaintGAN, pd.DataFrame]:
    model = _gan16()
    sampler = NormalPatchSampler(_slices(), 16, 4, 8)
    val = NormalPatchSampler([Slice2D("v", "pv", 0, np.full((24, 24), 0.5, np.float32), np.zeros((24, 24), bool))],
                             16, 4, 8)
    cfg = GanTrainConfig(epochs=epochs, iters_per_epoch=1, batch_size=2, n_critic=2, lr=lr, seed=7, val_patches=2)
    hist = train_inpaint_gan(model, sampler, out, cfg, val_sampler=val, progress=False)
    return model, hist


def test_resume_gives_the_same_next_step(tmp_path: Path) -> None:
    straight, h_straight = _train(tmp_path / "a", epochs=2)
    _train(tmp_path / "b", epochs=1)
    assert load_gan_checkpoint(tmp_path / "b" / "checkpoint_last.pt")["epoch"] == 1
    resumed, h_resumed = _train(tmp_path / "b", epochs=2)  # a fresh model, loaded from epoch 1, trains epoch 2
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    cols = ["epoch", "d_loss", "gp", "g_adv", "l_mask", "l_fov", "g_loss", "val_hole_mse"]
    assert np.allclose(h_straight[cols].to_numpy(), h_resumed[cols].to_numpy())
    assert (tmp_path / "b" / "checkpoint_best.pt").is_file() and (tmp_path / "b" / "history.csv").is_file()
    # other settings than epochs: refused; a truncated checkpoint: one line naming it
    with pytest.raises(CadxConfigError, match="other training settings"):
        _train(tmp_path / "b", epochs=3, lr=5e-4)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "checkpoint_last.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CadxDataError, match=r"checkpoint_last\.pt"):
        _train(tmp_path / "c", epochs=1)


def test_same_seed_same_weights_and_training_moves_them(tmp_path: Path) -> None:
    a, _ = _train(tmp_path / "a", epochs=1)
    b, _ = _train(tmp_path / "b", epochs=1)
    init = _gan16()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(init.generator.state_dict()["coarse_enc.0.0.weight"],
                           a.generator.state_dict()["coarse_enc.0.0.weight"])
