"""cnnkit: the lecture "Convolutional Neural Networks 2" as a PyTorch toolkit.

Importing ``cnnkit`` does no work: the model zoo, analysis and trainer load on
first use of the names below (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

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
}

__all__ = ["__version__", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
