"""LeNet-5 and AlexNet, the "milestone" baselines of Khan & Yong (paper 001), plus the shared plumbing of the
paper-001 nets (:class:`PaperNet`: input resizing, named trunk, ``first_conv``, ``feature_maps``).

Input sizes. Each net has a paper input size (LeNet 32 px, AlexNet 227 px). With ``input_size=<int>`` (the default
is the paper size) any ``(B, C, H, W)`` input is bilinearly resized to ``input_size × input_size`` inside the model
(antialiased when shrinking) — the same thing the paper's pipeline did (images resized to the net's size), so
MedNIST 64 px or the 28–32 px imbalance-study images see the receptive fields the architecture was designed for.
With ``input_size=None`` (or a non-paper ``input_size``) the net runs at that resolution and an adaptive average
pool before the first FC layer (the identity at the paper size) restores the paper's final map size, so FC shapes
never depend on the input; inputs smaller than ``min_size`` (the smallest side for which every conv/pool still
has an output) raise ``CadxDataError``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import torch.nn.functional as F
from pydantic import BeforeValidator
from torch import Tensor, nn

from cadx.errors import CadxConfigError, CadxDataError
from cadx.models.base import CadxModel, check_spatial_dims, maybe_load_pretrained
from cadx.models.registry import register_model
from cadx.registry import Options, PathText


def _input_size(value: Any) -> Any:
    """CLI/YAML text of ``input_size``: ``"227"`` → 227, ``"none"``/``"native"`` → None, ``"paper"`` kept."""
    if isinstance(value, str):
        key = value.strip().lower()
        return None if key in ("none", "native", "null", "") else key
    return value


#: ``input_size`` option of the paper nets: pixels, ``"paper"`` (the net's paper size) or None (native size).
InputSize = Annotated[int | Literal["paper"] | None, BeforeValidator(_input_size)]
INITS = ("he", "torch")


class PaperNetOptions(Options):
    """Options every paper-001 net takes: ``init`` (``he`` = the papers' He/MSRA init, ``torch`` = PyTorch's
    default) and ``pretrained_path`` (a local state_dict)."""

    init: Literal["he", "torch"] = "he"
    pretrained_path: PathText = None


class LeNetOptions(PaperNetOptions):
    variant: Literal["lenet5", "caffe"] = "lenet5"
    input_size: InputSize = "paper"


class AlexNetOptions(PaperNetOptions):
    input_size: InputSize = 227
    dropout: float = 0.5


def check_model_args(name: str, spatial_dims: int) -> None:
    """Raise ``CadxConfigError`` unless ``spatial_dims == 2`` (the paper-001 nets are 2D only)."""
    check_spatial_dims(spatial_dims, name, supported=(2,))


def paper_init(model: nn.Module, init: str = "he") -> nn.Module:
    """Weight initialisation of the paper-001 nets (none of them has batch norm).

    ``"he"`` (default): every conv/linear weight ~ N(0, 2 / fan_in) (Kaiming, ReLU gain), biases 0. ``"torch"``:
    PyTorch's default (Kaiming-uniform with a = √5, i.e. variance 1 / (3·fan_in)), which shrinks the signal by
    ~6× per ReLU layer: GoogLeNet's 22 layers then start with vanishing activations and, with the paper's SGD at
    lr 0.01, stay at chance. The paper does not state its initialisation (the Caffe originals used Gaussian or
    Xavier fillers); He is our choice for all four nets so that they are compared on equal terms."""
    if init not in INITS:
        raise CadxConfigError(f"init must be one of {INITS}, got {init!r}")
    if init == "he":
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model


def caffe_lrn() -> nn.LocalResponseNorm:
    """Local response normalisation as in Caffe's AlexNet/GoogLeNet: n=5, α=1e-4, β=0.75, k=1 (α divided by n)."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)


def _out_len(size: int, m: nn.Module) -> int:
    """Spatial length after conv/pool module ``m`` on a side of ``size`` (≤0 means no output)."""
    if not isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        return size
    def pair(v: Any) -> int:
        return int(v[0] if isinstance(v, tuple) else v)
    k, s, p = pair(m.kernel_size), pair(m.stride), pair(m.padding)
    d = pair(getattr(m, "dilation", 1))
    num = size + 2 * p - d * (k - 1) - 1
    if num < 0:
        return 0
    if getattr(m, "ceil_mode", False):
        out = math.ceil(num / s) + 1
        if (out - 1) * s >= size + p:  # PyTorch: the last window must start inside the input
            out -= 1
        return out
    return num // s + 1


def trunk_out_size(modules: Iterable[nn.Module], size: int) -> int:
    """Side length of the map after running a chain of modules (size-preserving modules are skipped)."""
    for m in modules:
        size = _out_len(size, m)
        if size <= 0:
            return 0
    return size


class PaperNet(CadxModel):
    """Common plumbing: ``trunk`` (named ``nn.Sequential`` of conv layers), input resizing, ``feature_maps``.

    Subclasses set ``self.trunk``, ``feature_dim``, call ``_init_head()`` (classifier ``head``, ``None`` when
    ``num_classes == 0``) and ``_check_input_size()``, and implement ``_fc(maps) -> (B, feature_dim)``.
    ``pre_head`` (identity, or dropout for AlexNet/GoogLeNet) sits between the features and the head.
    """

    paper_size: int = 224
    trunk: nn.Sequential

    def __init__(self, num_classes: int, in_channels: int, input_size: int | str | None) -> None:
        super().__init__(num_classes, in_channels, spatial_dims=2)
        self.pre_head: nn.Module = nn.Identity()
        if isinstance(input_size, str):  # from a CLI/YAML option: "227", "paper", "none"/"native"
            key = input_size.strip().lower()
            if key == "paper":
                input_size = self.paper_size
            elif key in ("none", "native", ""):
                input_size = None
            elif key.isdigit():
                input_size = int(key)
            else:
                raise CadxConfigError(f"input_size must be an int, 'paper', 'native' or None, got {input_size!r}")
        if input_size is not None and int(input_size) < 1:
            raise CadxConfigError(f"input_size must be a positive int or None, got {input_size}")
        self.in_channels = int(in_channels)
        self.input_size = None if input_size is None else int(input_size)

    def _check_input_size(self) -> None:
        """Call once ``trunk`` is built: caches ``min_size``; a fixed ``input_size`` must be ≥ ``min_size``."""
        mods = list(self.trunk.modules())
        self._min_size = next(s for s in range(1, 4097) if trunk_out_size(mods, s) >= 1)
        if self.input_size is not None and self.input_size < self.min_size:
            raise CadxConfigError(f"{type(self).__name__}: input_size={self.input_size} < minimum {self.min_size}")

    # -- sizes -------------------------------------------------------------------------------------------------
    @property
    def min_size(self) -> int:
        """Smallest input side the trunk accepts at native resolution (``input_size=None``)."""
        return self._min_size

    def prepare(self, x: Tensor) -> Tensor:
        """Check ``x`` is ``(B, C, H, W)`` with ``C == in_channels``; resize to ``input_size`` if set."""
        self.check_input(x)
        h, w = x.shape[-2:]
        if self.input_size is not None:
            if (h, w) != (self.input_size, self.input_size):
                shrink = h > self.input_size or w > self.input_size
                x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                  align_corners=False, antialias=shrink)
        elif min(h, w) < self.min_size:
            raise CadxDataError(f"{type(self).__name__} at native resolution needs inputs ≥ {self.min_size} px, "
                                f"got {h}×{w}; set input_size={self.paper_size} to resize inside the model")
        return x

    # -- visualisation helpers (paper 001 Figs. 7–11) ------------------------------------------------------------
    @property
    def first_conv(self) -> nn.Conv2d:
        """The first convolution (its ``weight`` (F, C, k, k) are the filters shown in the paper's figures)."""
        return next(m for m in self.trunk.modules() if isinstance(m, nn.Conv2d))

    @property
    def layer_names(self) -> list[str]:
        """Names accepted by :meth:`feature_maps`, in forward order."""
        return [n for n, _ in self.trunk.named_children()]

    def feature_maps(self, x: Tensor, layer: str) -> Tensor:
        """Activation ``(B, C_l, H_l, W_l)`` of trunk layer ``layer`` (e.g. ``"relu1"``, ``"conv2"``) for input x."""
        if layer not in self.layer_names:
            raise CadxConfigError(f"unknown layer {layer!r}; known: {', '.join(self.layer_names)}")
        h = self.prepare(x)
        for name, m in self.trunk.named_children():
            h = m(h)
            if name == layer:
                return h
        raise AssertionError("unreachable")

    # -- forward -----------------------------------------------------------------------------------------------
    def _fc(self, maps: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        """Penultimate FC activation ``(B, feature_dim)`` of image batch ``(B, C, H, W)``."""
        return self._fc(self.trunk(self.prepare(x)))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``{"features": (B, feature_dim), "logits": (B, K)}`` (no logits when ``num_classes == 0``)."""
        f = self.forward_features(x)
        out = {"features": f}
        if self.head is not None:
            out["logits"] = self.head(self.pre_head(f))
        return out


class LeNet(PaperNet):
    """LeNet-5 (LeCun et al. 1998) or the Caffe/DIGITS LeNet that paper 001 most likely ran.

    ``variant="lenet5"`` (32 px): C1 6@5×5 → tanh → S2 avg-pool 2 → C3 16@5×5 → tanh → S4 avg-pool 2 →
    C5 120@5×5 (on the 5×5 map, i.e. fully connected) → tanh → F6 84 → tanh → linear output (softmax-CE).
    Simplifications, stated: C3 is fully connected to S2 (the paper's sparse 60-link table has 1,516 params; ours
    2,416), S2/S4 are plain average pools (no trainable coefficient), the RBF output layer is a linear layer.
    ``variant="caffe"`` (28 px): conv 20@5×5 → max-pool 2 → conv 50@5×5 → max-pool 2 → fc 500 → ReLU → fc K.
    Features = F6 (84) resp. fc 500. Native mode adaptive-pools to 5×5 resp. 4×4 before the FC part.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, variant: str = "lenet5",
                 input_size: int | str | None = "paper") -> None:
        if variant not in ("lenet5", "caffe"):
            raise CadxConfigError(f"LeNet variant must be 'lenet5' or 'caffe', got {variant!r}")
        self.paper_size = 32 if variant == "lenet5" else 28
        super().__init__(num_classes, in_channels, input_size)
        self.variant = variant
        self.act: nn.Module
        if variant == "lenet5":
            self.trunk = nn.Sequential(OrderedDict([
                ("conv1", nn.Conv2d(in_channels, 6, 5)), ("act1", nn.Tanh()), ("pool1", nn.AvgPool2d(2)),
                ("conv2", nn.Conv2d(6, 16, 5)), ("act2", nn.Tanh()), ("pool2", nn.AvgPool2d(2)),
            ]))
            self.pool = nn.AdaptiveAvgPool2d(5)
            self.c5 = nn.Conv2d(16, 120, 5)
            self.f6 = nn.Linear(120, 84)
            self.act = nn.Tanh()
            self.feature_dim = 84
        else:
            self.trunk = nn.Sequential(OrderedDict([
                ("conv1", nn.Conv2d(in_channels, 20, 5)), ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(20, 50, 5)), ("pool2", nn.MaxPool2d(2)),
            ]))
            self.pool = nn.AdaptiveAvgPool2d(4)
            self.ip1 = nn.Linear(50 * 4 * 4, 500)
            self.act = nn.ReLU(inplace=True)
            self.feature_dim = 500
        self._check_input_size()
        self._init_head()

    def _fc(self, maps: Tensor) -> Tensor:
        maps = self.pool(maps)  # identity at the paper size (5×5 resp. 4×4 map)
        if self.variant == "lenet5":
            return self.act(self.f6(self.act(self.c5(maps)).flatten(1)))
        return self.act(self.ip1(maps.flatten(1)))


class AlexNet(PaperNet):
    """AlexNet (Krizhevsky et al. 2012, Caffe reference layout) at 227 px.

    conv1 96@11×11/4 → ReLU → LRN → max-pool 3/2 → conv2 256@5×5 p2 → ReLU → LRN → max-pool 3/2 →
    conv3 384@3×3 p1 → conv4 384@3×3 p1 → conv5 256@3×3 p1 (each + ReLU) → max-pool 3/2 → 256×6×6 →
    fc6 4096 → ReLU → dropout 0.5 → fc7 4096 → ReLU (= ``features``) → dropout 0.5 → fc8 K.
    Choice: no channel groups (the 2-GPU split of the original is an implementation artefact; DIGITS/Caffe
    single-GPU runs are equivalent in function but have ~2× the conv2/4/5 weights). Native mode
    (``input_size=None``) needs ≥ 67 px (pool5 needs a 3×3 map), so 28–64 px inputs must be resized (default).
    """

    paper_size = 227

    def __init__(self, num_classes: int, in_channels: int = 1, input_size: int | str | None = 227,
                 dropout: float = 0.5) -> None:
        super().__init__(num_classes, in_channels, input_size)
        self.trunk = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 96, 11, stride=4)), ("relu1", nn.ReLU(inplace=True)),
            ("norm1", caffe_lrn()), ("pool1", nn.MaxPool2d(3, 2)),
            ("conv2", nn.Conv2d(96, 256, 5, padding=2)), ("relu2", nn.ReLU(inplace=True)),
            ("norm2", caffe_lrn()), ("pool2", nn.MaxPool2d(3, 2)),
            ("conv3", nn.Conv2d(256, 384, 3, padding=1)), ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 384, 3, padding=1)), ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(384, 256, 3, padding=1)), ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(3, 2)),
        ]))
        self._check_input_size()
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.drop6 = nn.Dropout(dropout)
        self.pre_head = nn.Dropout(dropout)  # drop7
        self.feature_dim = 4096
        self._init_head()  # fc8

    def _fc(self, maps: Tensor) -> Tensor:
        maps = self.pool(maps)  # identity at 227 px (6×6 map)
        h = self.drop6(F.relu(self.fc6(maps.flatten(1))))
        return F.relu(self.fc7(h))


@register_model("lenet", "LeNet-5 (LeCun 1998; variant='caffe' = DIGITS LeNet), paper-001 baseline, 2D",
                options=LeNetOptions)
def lenet(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *, variant: str,
          input_size: int | str | None, init: str, pretrained_path: str | None) -> LeNet:
    """``input_size="paper"`` = the variant's paper size (32 or 28); None = native resolution (≥ 16 px).
    ``num_attributes`` is ignored (no attribute head)."""
    check_model_args("lenet", spatial_dims)
    model = paper_init(LeNet(num_classes, in_channels, variant=variant, input_size=input_size), init)
    return maybe_load_pretrained(model, pretrained_path)  # type: ignore[arg-type,return-value]


@register_model("alexnet", "AlexNet (Krizhevsky 2012, LRN + dropout), paper-001 baseline, 2D, 227 px",
                options=AlexNetOptions)
def alexnet(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *,
            input_size: int | str | None, dropout: float, init: str, pretrained_path: str | None) -> AlexNet:
    """``input_size=None`` = native resolution (≥ 67 px). ``num_attributes`` is ignored (no attribute head)."""
    check_model_args("alexnet", spatial_dims)
    model = paper_init(AlexNet(num_classes, in_channels, input_size=input_size, dropout=dropout), init)
    return maybe_load_pretrained(model, pretrained_path)  # type: ignore[arg-type,return-value]


__all__ = ["INITS", "AlexNet", "AlexNetOptions", "InputSize", "LeNet", "LeNetOptions", "PaperNet", "PaperNetOptions",
           "caffe_lrn", "check_model_args", "paper_init", "trunk_out_size"]
