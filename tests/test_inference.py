"""Inference: flip TTA."""

from __future__ import annotations

import numpy as np
import torch

from helpers import TinyCNN  # noqa: F401


def test_infer_flip_tta_averages_the_flipped_views() -> None:
    """``tta="flips"``: proba/features = mean over identity + each spatial axis flipped (hand-computed)."""
    from cadx.runs.inference import infer, tta_flips

    class Left(torch.nn.Module):  # logit of class 1 = mean of the left half minus mean of the right half
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            w = x.shape[-1] // 2
            d = x[..., :w].mean((1, 2, 3)) - x[..., w:].mean((1, 2, 3))
            return {"logits": torch.stack([torch.zeros_like(d), d], 1), "features": d[:, None]}

    x = torch.zeros(2, 1, 4, 4)
    x[0, :, :, :2] = 1.0                      # bright left half: d = +1 unflipped, -1 when W is flipped
    x[1, :, :2, :] = 1.0                      # bright top half: d = 0 in every view
    assert tta_flips(2) == [(), (2,), (3,)] and len(tta_flips(3)) == 4
    plain = infer(Left(), x, features="features")
    tta = infer(Left(), x, features="features", tta="flips")
    s = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(plain["proba"][0, 1], s, rtol=1e-6)
    np.testing.assert_allclose(tta["proba"][0, 1], (s + s + (1 - s)) / 3, rtol=1e-6)  # views: id, H flip, W flip
    np.testing.assert_allclose(tta["features"][:, 0], [1 / 3, 0.0], atol=1e-6)
    np.testing.assert_allclose(tta["proba"][1], [0.5, 0.5], atol=1e-6)
