"""The anatomy CNN of Khan & Yong (paper 001, §III and Table I): a 4-conv + 2-fc modification of AlexNet.

Table I / §III give filters, kernels and strides; padding, the position of LRN and ReLU, and the LRN constants are
not stated. Choices (tested in ``tests/test_models_classic.py``):

* conv1 96@11×11/4, no padding → ReLU → LRN (Caffe's n=5, α=1e-4, β=0.75, k=1: the paper's GoogLeNet
  "loss1/accuracy(val)" naming is Caffe/DIGITS) → max-pool 3/2. Pooling only after conv1, as in the text ("The first
  layer i.e. conv1 layer is followed by pooling. … Pooling is followed by convolution conv2"); the stride-2 convs do
  the remaining downsampling.
* conv2 256@5×5/2 pad 2, conv3 384@3×3/2 pad 1, conv4 256@3×3/2 pad 1 (AlexNet's "same" paddings), each + ReLU.
  At 227 px the maps are 55 → 27 (pool) → 14 → 7 → 4, so conv4 gives 256×4×4 = 4096 inputs to fc5.
* fc5 4096 → ReLU, **no dropout** (§III: "fc5 is only subjected to rectified linear unit operation") =
  ``features``; fc6 (``head``) → K classes.

Input size: ``input_size=227`` (default) bilinearly resizes any input to 227 px inside the model. The net's total
stride is 64: a 64 px MedNIST image at native size leaves 14×14 after conv1, 6×6 after pooling, 3, 2 and a 1×1
map after conv4, and 28 px inputs reach 1×1 already at conv2 (5 → 2 → 1) — the 11×11
filters then see most of the image and the deeper layers see a single position. Resizing keeps the receptive
field / image ratio the paper designed for and is what its DIGITS pipeline did (images resized to the net input).
``input_size=None`` runs natively (≥ 19 px) and adaptive-average-pools conv4 to 4×4 so fc5 keeps its 4096 inputs.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from cadx.models.base import maybe_load_pretrained
from cadx.models.lenet_alexnet import InputSize, PaperNet, PaperNetOptions, caffe_lrn, check_model_args, paper_init
from cadx.models.registry import register_model


class AnatomyCNN(PaperNet):
    """Khan & Yong's modified AlexNet. Input ``(B, C, H, W)``; ``features`` = fc5 ReLU ``(B, 4096)``."""

    paper_size = 227

    def __init__(self, num_classes: int, in_channels: int = 1, input_size: int | str | None = 227,
                 fc_units: int = 4096) -> None:
        super().__init__(num_classes, in_channels, input_size)
        self.trunk = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 96, 11, stride=4)), ("relu1", nn.ReLU(inplace=True)),
            ("norm1", caffe_lrn()), ("pool1", nn.MaxPool2d(3, 2)),
            ("conv2", nn.Conv2d(96, 256, 5, stride=2, padding=2)), ("relu2", nn.ReLU(inplace=True)),
            ("conv3", nn.Conv2d(256, 384, 3, stride=2, padding=1)), ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 256, 3, stride=2, padding=1)), ("relu4", nn.ReLU(inplace=True)),
        ]))
        self._check_input_size()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc5 = nn.Linear(256 * 4 * 4, fc_units)
        self.feature_dim = fc_units
        self._init_head()  # fc6

    def _fc(self, maps: Tensor) -> Tensor:
        return F.relu(self.fc5(self.pool(maps).flatten(1)))  # the pool is the identity on a 4×4 map (227 px)


class AnatomyCNNOptions(PaperNetOptions):
    input_size: InputSize = 227
    fc_units: int = 4096


@register_model("anatomy_cnn", "Khan & Yong 2017 anatomy CNN: 4 conv (LRN after conv1) + fc 4096 (no dropout), 2D",
                options=AnatomyCNNOptions)
def anatomy_cnn(num_classes: int, in_channels: int, spatial_dims: int, num_attributes: int, *,
                input_size: int | str | None, fc_units: int, init: str, pretrained_path: str | None) -> AnatomyCNN:
    """``input_size=None`` = native resolution (≥ 19 px). ``num_attributes`` is ignored (no attribute head)."""
    check_model_args("anatomy_cnn", spatial_dims)
    model = paper_init(AnatomyCNN(num_classes, in_channels, input_size=input_size, fc_units=fc_units), init)
    return maybe_load_pretrained(model, pretrained_path)  # type: ignore[arg-type,return-value]


__all__ = ["AnatomyCNN", "AnatomyCNNOptions", "anatomy_cnn"]
