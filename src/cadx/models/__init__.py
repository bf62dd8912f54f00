"""Models by name (``create_model``); each paper system in its own module, each declaring its options."""

from cadx.models import (  # noqa: F401  (each module registers its models)
    anatomy_cnn,
    attention,
    cnn3d,
    dmrn,
    googlenet,
    handcrafted,
    inpaint,
    lenet_alexnet,
    mtmr,
    multihead,
    pspnet,
    resnet,
    scnet,
    unet,
    unet_encoder,
    vgg,
    yolo_dense,
)
from cadx.models.registry import MODELS, PretrainedOptions, create_model, register_model

__all__ = ["MODELS", "PretrainedOptions", "create_model", "register_model"]
