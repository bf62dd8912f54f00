"""Thesis A.9 (Swiecicki et al. 2021): a DeepFill-v1-style inpainting GAN sized for a CPU.

Yu et al. 2018 ("Generative Image Inpainting with Contextual Attention"), as the paper uses it:

- :class:`InpaintGenerator`: a two-stage generator. The *coarse* net (strided convs, dilated convs with rates
  2/4/8/16, upsampling) fills the hole; its output is pasted into the hole and the *refinement* net, a dilated-conv
  branch plus (option ``contextual_attention``) a contextual-attention branch, produces the fine result.
  Input ``x`` ``(B,C,H,W)`` in [-1, 1] and ``mask`` ``(B,1,H,W)`` (1 = hole); the hole of ``x`` is ignored (zeroed
  inside). Output ``(coarse, fine)``, each ``(B,C,H,W)`` in [-1, 1] (tanh; DeepFill v1 clips instead — a choice
  made for smooth gradients). ``H`` and ``W`` must be multiples of 4.
- :class:`Critic`: a WGAN critic (strided 5×5 convs, leaky ReLU, no normalisation as WGAN-GP requires, one linear
  output) → ``(B,)``. The *global* critic sees the whole field of view, the *local* critic the
  ``local_size``-square window around the hole (:func:`crop_local`).
- :class:`InpaintGAN` holds the three, registered as model ``inpaint_gan``.

Sizes are parameters: the paper's field of view is 256 (or 512) px with 64/128-px holes and 64 base channels
(DeepFill v1: 32 per stage at 256 px); the CPU default here is a 64-px field of view, a 32-px local window and
``width`` 16.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from cadx.models.registry import register_model
from cadx.registry import Options

__all__ = ["ContextualAttention", "Critic", "InpaintGAN", "InpaintGenerator", "InpaintOptions", "crop_local",
           "hole_boxes"]


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, act: bool = True) -> nn.Sequential:
    """'Same'-padded conv (+ ELU as in DeepFill v1)."""
    pad = dilation * (k - 1) // 2
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation)]
    if act:
        layers.append(nn.ELU())
    return nn.Sequential(*layers)


class _Up(nn.Module):
    """Nearest ×2 upsampling then a 3×3 conv (DeepFill's ``gen_deconv``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = _conv(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _encoder(cin: int, c: int, dilations: tuple[int, ...]) -> nn.Sequential:
    """conv5, down, conv, down, conv, conv, then dilated convs: ``(B,cin,H,W)`` → ``(B,4c,H/4,W/4)``."""
    layers = [_conv(cin, c, 5), _conv(c, 2 * c, 3, 2), _conv(2 * c, 2 * c), _conv(2 * c, 4 * c, 3, 2),
              _conv(4 * c, 4 * c), _conv(4 * c, 4 * c)]
    layers += [_conv(4 * c, 4 * c, dilation=d) for d in dilations]
    return nn.Sequential(*layers)


def _decoder(cin: int, c: int, cout: int) -> nn.Sequential:
    """conv, conv, up, conv, up, conv, conv to ``cout`` (no activation): ``(B,cin,H/4,W/4)`` → ``(B,cout,H,W)``."""
    return nn.Sequential(_conv(cin, 4 * c), _conv(4 * c, 4 * c), _Up(4 * c, 2 * c), _conv(2 * c, 2 * c),
                         _Up(2 * c, c), _conv(c, c // 2), _conv(c // 2, cout, act=False))


class ContextualAttention(nn.Module):
    """Contextual attention (Yu et al. 2018, §3.2) on feature maps (the batch in one grouped convolution).

    Foreground features ``f`` ``(B,C,h,w)`` are matched against ``ksize``-square patches of background features
    (the same map) by cosine similarity; patches whose centre lies in the hole (``mask`` ``(B,1,h,w)``, 1 = hole)
    are excluded; a softmax over patches (scaled by ``softmax_scale`` = 10 as in Yu et al.) weights the
    patches, which are pasted back with a transposed convolution (overlaps averaged by ``ksize**2``). Pixels
    outside the hole keep their features. Yu et al. also match on a 2× downsampled map and propagate attention
    scores; both are left out here (the feature map is already small at a 64-px field of view).
    """

    def __init__(self, ksize: int = 3, softmax_scale: float = 10.0) -> None:
        super().__init__()
        self.ksize = ksize
        self.scale = softmax_scale

    def forward(self, f: Tensor, mask: Tensor) -> Tensor:
        k, pad = self.ksize, self.ksize // 2
        b, c, h, w = f.shape
        n = h * w
        patches = F.unfold(f, k, padding=pad).transpose(1, 2).reshape(b * n, c, k, k)  # (B*L,C,k,k)
        known = (mask.reshape(b, n, 1, 1) < 0.5).to(f.dtype)  # (B,L,1,1): background patch centres
        norm = patches.flatten(1).norm(dim=1).clamp_min(1e-4)[:, None, None, None]
        score = F.conv2d(f.reshape(1, b * c, h, w), patches / norm, padding=pad, groups=b).reshape(b, n, h, w)
        score = score * known - 1e4 * (1 - known)
        attn = torch.softmax(score * self.scale, dim=1) * known
        rec = F.conv_transpose2d(attn.reshape(1, b * n, h, w), patches, padding=pad, groups=b)
        rec = rec.reshape(b, c, h, w) / (k * k)
        has_bg = (known.flatten(1).sum(dim=1) > 0).to(f.dtype)[:, None, None, None]  # else keep the features
        m = mask * has_bg
        return f * (1 - m) + rec * m


class InpaintGenerator(nn.Module):
    """Coarse-to-fine generator: ``forward(x, mask) -> (coarse, fine)``, shapes as ``x`` (see the module doc)."""

    def __init__(self, in_channels: int = 1, width: int = 16, contextual_attention: bool = True) -> None:
        super().__init__()
        c = width
        cin = in_channels + 2  # image, ones, mask
        self.coarse_enc = _encoder(cin, c, (2, 4, 8, 16))
        self.coarse_dec = _decoder(4 * c, c, in_channels)
        self.refine_conv = _encoder(cin, c, (2, 4, 8, 16))
        self.use_attention = contextual_attention
        if contextual_attention:
            self.refine_att_enc = _encoder(cin, c, ())
            self.attention = ContextualAttention()
            self.refine_att_post = nn.Sequential(_conv(4 * c, 4 * c), _conv(4 * c, 4 * c))
            self.refine_dec = _decoder(8 * c, c, in_channels)
        else:
            self.refine_dec = _decoder(4 * c, c, in_channels)

    def _input(self, x: Tensor, mask: Tensor) -> Tensor:
        return torch.cat([x * (1 - mask), torch.ones_like(mask), mask], dim=1)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"InpaintGenerator: height and width must be multiples of 4, got {tuple(x.shape)}")
        coarse = torch.tanh(self.coarse_dec(self.coarse_enc(self._input(x, mask))))
        pasted = x * (1 - mask) + coarse * mask
        inp = self._input(pasted, mask)
        feats = self.refine_conv(inp)
        if self.use_attention:
            att = self.refine_att_enc(inp)
            small = F.interpolate(mask, size=att.shape[-2:], mode="nearest")
            att = self.refine_att_post(self.attention(att, small))
            feats = torch.cat([feats, att], dim=1)
        fine = torch.tanh(self.refine_dec(feats))
        return coarse, fine


class Critic(nn.Module):
    """WGAN critic ``(B,C,S,S)`` → ``(B,)``: 4 strided 5×5 convs (width, 2w, 4w, 4w), leaky ReLU 0.2, linear.

    ``size`` (S) must be a multiple of 16."""

    def __init__(self, in_channels: int, size: int, width: int = 16) -> None:
        super().__init__()
        if size % 16:
            raise ValueError(f"Critic: size must be a multiple of 16, got {size}")
        chans = [in_channels, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(chans):
            layers += [nn.Conv2d(a, b, 5, 2, 2), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.size = size
        self.fc = nn.Linear(4 * width * (size // 16) ** 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            raise ValueError(f"Critic: expected {self.size}x{self.size} inputs, got {tuple(x.shape[-2:])}")
        return self.fc(self.features(x).flatten(1))[:, 0]


def hole_boxes(mask: Tensor) -> list[tuple[int, int, int, int]]:
    """Bounding box ``(y0, x0, y1, x1)`` (stop-exclusive) of the hole of each ``mask`` ``(B,1,H,W)``.

    Raises ValueError for a sample without a hole."""
    out = []
    for m in mask[:, 0] > 0.5:
        ys, xs = torch.nonzero(m.any(dim=1)), torch.nonzero(m.any(dim=0))
        if len(ys) == 0:
            raise ValueError("hole_boxes: a mask has no hole pixel")
        out.append((int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1))
    return out


def crop_local(x: Tensor, mask: Tensor, size: int) -> Tensor:
    """The ``size``-square window of ``x`` ``(B,C,H,W)`` centred on each sample's hole, shifted to stay inside the
    image → ``(B,C,size,size)``. A hole larger than ``size`` is cut to its centre part."""
    h, w = x.shape[-2:]
    crops = []
    for i, (y0, x0, y1, x1) in enumerate(hole_boxes(mask)):
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        top = min(max(cy - size // 2, 0), h - size)
        left = min(max(cx - size // 2, 0), w - size)
        crops.append(x[i, :, top:top + size, left:left + size])
    return torch.stack(crops)


class InpaintOptions(Options):
    """``fov``: field of view (px, multiple of 16); ``local_size``: the local critic's window (px, multiple of 16;
    the largest training hole); ``width``: base channels; ``contextual_attention``: the refinement net's attention
    branch."""

    fov: int = Field(default=64, ge=16)
    local_size: int = Field(default=32, ge=16)
    width: int = Field(default=16, ge=2)
    contextual_attention: bool = True


class InpaintGAN(nn.Module):
    """The generator and both critics: ``generator``, ``local_critic`` (on ``local_size`` windows), ``global_critic``
    (on ``fov`` patches). ``forward(x, mask) -> (coarse, fine)`` is the generator; :meth:`critic` scores a
    completed patch with both critics."""

    def __init__(self, in_channels: int = 1, fov: int = 64, local_size: int = 32, width: int = 16,
                 contextual_attention: bool = True) -> None:
        super().__init__()
        if local_size > fov:
            raise ValueError(f"InpaintGAN: local_size {local_size} exceeds the field of view {fov}")
        self.fov, self.local_size, self.in_channels = fov, local_size, in_channels
        self.generator = InpaintGenerator(in_channels, width, contextual_attention)
        self.local_critic = Critic(in_channels, local_size, width)
        self.global_critic = Critic(in_channels, fov, width)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.generator(x, mask)

    def critic(self, x: Tensor, mask: Tensor) -> Tensor:
        """``D_local(window around the hole) + D_global(x)`` → ``(B,)`` (higher = more like training data)."""
        return self.local_critic(crop_local(x, mask, self.local_size)) + self.global_critic(x)


@register_model("inpaint_gan", "Thesis A.9 DeepFill-v1-style inpainting GAN (coarse+refine generator, "
                "local/global WGAN-GP critics)", options=InpaintOptions)
def inpaint_gan(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, fov: int,
                local_size: int, width: int, contextual_attention: bool) -> InpaintGAN:
    """Factory for :class:`InpaintGAN` (2D only; ``num_classes`` and ``num_attributes`` are unused)."""
    if spatial_dims != 2:
        raise ValueError("inpaint_gan is 2D only")
    return InpaintGAN(in_channels, fov, local_size, width, contextual_attention)
