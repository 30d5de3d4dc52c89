"""Model analysis: parameters, mult-adds, activation memory and receptive fields, per layer.

The lecture's arithmetic (slides "VGGNet", "MobileNets", "Receptive Fields") for any
``nn.Module``, traced on the ``meta`` device so no weight is allocated. Importing
this package loads neither torchvision nor matplotlib.
"""

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
