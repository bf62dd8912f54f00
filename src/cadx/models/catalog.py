"""The built-in models as a static table: ``cadx models list`` prints it without importing a network (torch and
MONAI take seconds to import; the listing answers in well under one).

It must equal what the registry says once the model modules are imported (name, module, description, options
with defaults): ``tests/test_cli_latency.py`` checks that, and prints the table to paste when a model is added
or its options change (a model missing here is still created and validated by name; only the listing would
lack it until then). Names of test stand-ins (``_test*``) are not listed.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["CATALOG", "CatalogEntry", "catalog_rows", "model_module"]


class CatalogEntry(NamedTuple):
    """One built-in model: the ``cadx.models`` module that registers it, its one-line description and its options
    as ``cadx.registry.Registry.describe_options`` writes them."""

    module: str
    description: str
    options: str


CATALOG: dict[str, CatalogEntry] = {
    'alexnet': CatalogEntry(
        'lenet_alexnet',
        'AlexNet (Krizhevsky 2012, LRN + dropout), paper-001 baseline, 2D, 227 px',
        "init: 'he'|'torch' = 'he', pretrained_path: str|None = None, input_size: int|'paper'|None = 227, "
        'dropout: float = 0.5'),
    'anatomy_cnn': CatalogEntry(
        'anatomy_cnn',
        'Khan & Yong 2017 anatomy CNN: 4 conv (LRN after conv1) + fc 4096 (no dropout), 2D',
        "init: 'he'|'torch' = 'he', pretrained_path: str|None = None, input_size: int|'paper'|None = 227, "
        'fc_units: int = 4096'),
    'arl': CatalogEntry(
        'attention',
        'ARL: ResNet-50 whose bottlenecks add a parameter-free attention term (Zhang et al. 2019)',
        "pretrained_path: str|None = None, depth: int = 50, width: int = 64, stem: 'imagenet'|'pool'|'small' = "
        "'imagenet', attention: 'softmax'|'sigmoid' = 'softmax', attend: 'identity'|'residual' = 'identity', "
        'dropout: float = 0.0'),
    'cnn3d': CatalogEntry(
        'cnn3d',
        '3D CNN baseline: 6 x (Conv3d+BN+ReLU) with pooling, 3 FC layers (DMRN Table 2)',
        'pretrained_path: str|None = None, width: int = 32, pool_size: int = 2, fc_dims: ints = (256, 128), '
        'dropout: float = 0.5'),
    'cnn3d_small': CatalogEntry(
        'cnn3d',
        'small 3D CNN: 4 stages 16-128 channels, global pooling (AdrenalMNIST3D 28^3/64^3)',
        'pretrained_path: str|None = None, width: int = 16, convs_per_stage: int = 1, dropout: float = 0.2'),
    'dmrn': CatalogEntry(
        'dmrn',
        'DMRN: ResNet + residual pooling unit per stage, multi-scale contrastive embeddings (SVM)',
        "pretrained_path: str|None = None, depth: int = 18, width: int = 64, stem: 'imagenet'|'pool'|'small' = "
        "'imagenet', multiscale: bool = True"),
    'googlenet': CatalogEntry(
        'googlenet',
        'GoogLeNet / Inception v1 (Szegedy 2015) with 2 aux heads in training, 2D, 224 px',
        "init: 'he'|'torch' = 'he', pretrained_path: str|None = None, input_size: int|'paper'|None = 224, aux: "
        'bool = True, dropout: float = 0.4, aux_dropout: float = 0.7'),
    'hc_svm': CatalogEntry(
        'handcrafted',
        "LBP + HOG features → SVM (DMRN's HC baseline; not a network: the handcrafted run kind)",
        "kernel: 'linear'|'rbf' = 'linear', C: float = 1.0, lbp_patch: int = 64, hog_patch: int = 32, size: int ="
        ' 192'),
    'inpaint_gan': CatalogEntry(
        'inpaint',
        'Thesis A.9 DeepFill-v1-style inpainting GAN (coarse+refine generator, local/global WGAN-GP critics)',
        'fov: int = 64, local_size: int = 32, width: int = 16, contextual_attention: bool = True'),
    'lenet': CatalogEntry(
        'lenet_alexnet',
        "LeNet-5 (LeCun 1998; variant='caffe' = DIGITS LeNet), paper-001 baseline, 2D",
        "init: 'he'|'torch' = 'he', pretrained_path: str|None = None, variant: 'lenet5'|'caffe' = 'lenet5', "
        "input_size: int|'paper'|None = 'paper'"),
    'mtmr': CatalogEntry(
        'mtmr',
        'MTMR-Net: ResNet + attribute regression (fc→256→A) concatenated into the classifier',
        "pretrained_path: str|None = None, depth: int = 50, width: int = 64, stem: 'imagenet'|'pool'|'small' = "
        "'imagenet', attribute_dim: int = 256, attribute_branch: bool = True, attribute_activation: "
        "'sigmoid'|'linear' = 'sigmoid'"),
    'multihead': CatalogEntry(
        'multihead',
        'thyroid-us multi-task CNN: shared trunk, malignancy head + one categorical head per feature (A.6)',
        "pretrained_path: str|None = None, categories: list = PydanticUndefined, trunk: 'thyroid'|'resnet' = "
        "'thyroid', filters: list = PydanticUndefined, pools: int = 5, dropout: float = 0.5, batch_norm: bool = "
        "False, depth: int = 18, width: int = 16, stem: 'imagenet'|'pool'|'small' = 'small'"),
    'pspnet': CatalogEntry(
        'pspnet',
        'PSPNet: dilated ResNet-50 (output stride 8) + SCNet PPM (bins 1/2,1/4,1/8 + shortcut); '
        'num_seg_classes=3, width=, depth=',
        'pretrained_path: str|None = None, num_seg_classes: int = 3, depth: 18|34|50|101 = 50, width: int = 64, '
        'output_stride: int = 8, ppm_ratios: ints = (2, 4, 8), dropout: float = 0.1'),
    'resnet10': CatalogEntry(
        'resnet',
        'ResNet-10 (basic blocks), 2D or 3D',
        "pretrained_path: str|None = None, width: int = 64, stem: 'imagenet'|'pool'|'small' = 'imagenet', "
        'dropout: float = 0.0'),
    'resnet101': CatalogEntry(
        'resnet',
        'ResNet-101 (bottleneck blocks), 2D or 3D',
        "pretrained_path: str|None = None, width: int = 64, stem: 'imagenet'|'pool'|'small' = 'imagenet', "
        'dropout: float = 0.0'),
    'resnet152': CatalogEntry(
        'resnet',
        'ResNet-152 (bottleneck blocks), 2D or 3D',
        "pretrained_path: str|None = None, width: int = 64, stem: 'imagenet'|'pool'|'small' = 'imagenet', "
        'dropout: float = 0.0'),
    'resnet18': CatalogEntry(
        'resnet',
        'ResNet-18 (basic blocks), 2D or 3D',
        "pretrained_path: str|None = None, width: int = 64, stem: 'imagenet'|'pool'|'small' = 'imagenet', "
        'dropout: float = 0.0'),
    'resnet34': CatalogEntry(
        'resnet',
        'ResNet-34 (basic blocks), 2D or 3D',
        "pretrained_path: str|None = None, width: int = 64, stem: 'imagenet'|'pool'|'small' = 'imagenet', "
        'dropout: float = 0.0'),
    'resnet50': CatalogEntry(
        'resnet',
        'ResNet-50 (bottleneck blocks), 2D or 3D',
        "pretrained_path: str|None = None, width: int = 64, stem: 'imagenet'|'pool'|'small' = 'imagenet', "
        'dropout: float = 0.0'),
    'scnet': CatalogEntry(
        'scnet',
        'SCNet multi-task: PSPNet trunk + 2-step SegNet Y=Φ2(Φ1(X)·F(X)+F(X)) + residual ClsNet; two_step=, '
        'width=, depth=',
        'pretrained_path: str|None = None, num_seg_classes: int = 3, depth: 18|34|50|101 = 50, width: int = 64, '
        'output_stride: int = 2, ppm_ratios: ints = (2, 4, 8), two_step: bool = True, seg_channels: int = 32, '
        'cls_blocks: int = 2, cls_channels: int|None = None, dropout: float = 0.1'),
    'sdl': CatalogEntry(
        'attention',
        'SDL: two ResNet classifiers + synergic net on pair features (same/different class)',
        "pretrained_path: str|None = None, depth: int = 50, width: int = 64, stem: 'imagenet'|'pool'|'small' = "
        "'imagenet', synergic_hidden: int = 256, dropout: float = 0.5"),
    'unet': CatalogEntry(
        'unet',
        '2D U-Net of thesis A.3 (32-256 filters, 4 levels, BN, transposed-conv decoder); num_seg_classes=1 '
        '(sigmoid), optional classification head',
        'pretrained_path: str|None = None, num_seg_classes: int = 1, base_filters: int = 32, levels: int = 4, '
        'batch_norm: bool = True, dropout: float = 0.0'),
    'unet_encoder': CatalogEntry(
        'unet_encoder',
        'encoder of the A.3 U-Net + global pool + dropout + linear head (A.4 starts: loads unet weights by name)',
        'pretrained_path: str|None = None, base_filters: int = 32, levels: int = 4, batch_norm: bool = True, '
        'dropout: float = 0.5'),
    'vgg19': CatalogEntry(
        'vgg',
        'VGG-19 (BN by default), 2D or 3D; width=, pool_size=1 and fc_dim= for small inputs',
        'pretrained_path: str|None = None, width: int = 64, batch_norm: bool = True, pool_size: int = 7, fc_dim: '
        'int = 4096, dropout: float = 0.5'),
    'yolo_dense': CatalogEntry(
        'yolo_dense',
        'thesis A.8 single-stage YOLO-style detector, MONAI DenseNet trunk, one box per cell (objectness + offset'
        ' + log-scale vs a square anchor), focal-prior bias',
        'pretrained_path: str|None = None, growth_rate: int = 8, block_config: list = PydanticUndefined, '
        'num_init_features: int = 16, bn_size: int = 4, anchor: float = 32.0, prior: float = 0.01'),
}


def catalog_rows() -> list[tuple[str, str, str]]:
    """``(name, description, options)`` of every built-in model, sorted by name (the ``cadx models list`` rows)."""
    return [(name, e.description, e.options) for name, e in sorted(CATALOG.items())]


def model_module(name: str) -> str | None:
    """The module that registers built-in model ``name`` (``cadx.models.<module>``), None when not listed."""
    entry = CATALOG.get(name)
    return f"cadx.models.{entry.module}" if entry is not None else None
