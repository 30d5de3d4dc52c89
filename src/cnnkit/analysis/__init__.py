"""Model analysis: parameters, mult-adds, activation memory and receptive fields, per layer.

The lecture's arithmetic (slides "VGGNet", "MobileNets", "Receptive Fields") for any
``nn.Module``, traced on the ``meta`` device so no weight is allocated. Importing
this package loads neither torchvision nor matplotlib.

Modules, from the top down: :mod:`~cnnkit.analysis.summary` (``summarize``,
``compare``), :mod:`~cnnkit.analysis.records` (what a summary holds) and
:mod:`~cnnkit.analysis.render` (its tables), :mod:`~cnnkit.analysis.meta` (models on
``meta``), :mod:`~cnnkit.analysis.tracer` (one traced forward) with its handlers
(:mod:`~cnnkit.analysis.products`, :mod:`~cnnkit.analysis.handlers`,
:mod:`~cnnkit.analysis.aten`), tables (:mod:`~cnnkit.analysis.op_tables`) and
formulas (:mod:`~cnnkit.analysis.op_math`), :mod:`~cnnkit.analysis.rf` (receptive
fields), :mod:`~cnnkit.analysis.plot` and :mod:`~cnnkit.analysis.cli_support`.
"""

from typing import TYPE_CHECKING

from cnnkit._lazy import lazy_getattr

if TYPE_CHECKING:
    from cnnkit.analysis.meta import build_on_meta
    from cnnkit.analysis.plot import plot_receptive_field, rf_growth
    from cnnkit.analysis.records import Comparison, LayerRow, ModelSummary, TrainingMemory
    from cnnkit.analysis.rf import ReceptiveField
    from cnnkit.analysis.summary import compare, summarize

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
    **dict.fromkeys(("Comparison", "LayerRow", "ModelSummary", "TrainingMemory"), "records"),
    "build_on_meta": "meta",
    "compare": "summary",
    "summarize": "summary",
}


__getattr__ = lazy_getattr(__name__, _HOME)
