"""The model zoo: one architecture family per file, each builder registered by name."""

from cnnkit.models import (
    alexnet,
    densenet,
    fmnet,
    googlenet,
    mobilenet,
    resnet,
    resnext,
    senet,
    shufflenet,
    vgg,
)
from cnnkit.models.registry import (
    ModelInfo,
    create_model,
    get_model_info,
    list_models,
    load_torchvision_weights,
    register_model,
)

__all__ = [
    "ModelInfo",
    "alexnet",
    "create_model",
    "densenet",
    "fmnet",
    "get_model_info",
    "googlenet",
    "list_models",
    "load_torchvision_weights",
    "mobilenet",
    "register_model",
    "resnet",
    "resnext",
    "senet",
    "shufflenet",
    "vgg",
]
