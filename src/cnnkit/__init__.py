"""cnnkit: the lecture "Convolutional Neural Networks 2" as a PyTorch toolkit.

Importing ``cnnkit`` does no work: the model zoo, analysis and trainer load on
first use of the names below (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import Any

from cnnkit._lazy import lazy_getattr

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "create_model": "cnnkit.models.registry",
    "list_models": "cnnkit.models.registry",
    "get_model_info": "cnnkit.models.registry",
    "load_torchvision_weights": "cnnkit.models.registry",
    "register_model": "cnnkit.models.registry",
    "summarize": "cnnkit.analysis",
    "compare": "cnnkit.analysis",
    "ModelSummary": "cnnkit.analysis",
    "plot_receptive_field": "cnnkit.analysis",
    "init_weights": "cnnkit.layers.init",
    "TrainConfig": "cnnkit.train.config",
    "load_run": "cnnkit.run",
    "decompose": "cnnkit.deploy.decomposition",
    "fuse_bn": "cnnkit.deploy.fuse",
    "export": "cnnkit.deploy.exporters",
    "load_exported": "cnnkit.deploy.exporters",
}
# public names that are a subpackage, callable (``cnnkit.train(model="resnet20")``)
_PACKAGES = ("train",)

__all__ = ["__version__", *_LAZY, *_PACKAGES]

_lazy = lazy_getattr(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name in _PACKAGES:  # the package itself, the same object once its submodules are imported
        return importlib.import_module(f"{__name__}.{name}")
    return _lazy(name)


def __dir__() -> list[str]:
    return sorted(__all__)
