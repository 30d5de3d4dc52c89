"""Model analysis: parameters, mult-adds, activation memory and receptive fields, per layer.

The lecture's arithmetic (slides "VGGNet", "MobileNets", "Receptive Fields") for any
``nn.Module``, traced on the ``meta`` device so no weight is allocated. Importing
this package loads neither torchvision nor matplotlib.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnkit.analysis.plot import plot_receptive_field, rf_growth
    from cnnkit.analysis.rf import ReceptiveField
    from cnnkit.analysis.summary import (
        Comparison,
        LayerRow,
        ModelSummary,
        TrainingMemory,
        build_on_meta,
        compare,
        summarize,
    )

__all__ = [
    "Comparison",
    "LayerRow",
    "ModelSummary",
    "ReceptiveField",
    "TrainingMemory",
    "build_on_meta",
    "compare",
    "plot_receptive_field",
    "rf_growth",
    "summarize",
]

# Names load on first use (PEP 562), so `cnnkit --help`, whose parser lives in
# cnnkit.analysis.cli_support, does not pay for importing torch.
_HOME = {
    "plot_receptive_field": "plot",
    "rf_growth": "plot",
    "ReceptiveField": "rf",
    **dict.fromkeys(
        ("Comparison", "LayerRow", "ModelSummary", "TrainingMemory", "build_on_meta", "compare", "summarize"),
        "summary",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"cnnkit.analysis.{_HOME[name]}"), name)
    raise AttributeError(f"module 'cnnkit.analysis' has no attribute {name!r}")
