"""Deploy trained models: low-rank separable decompositions, batch-norm folding, export.

The lecture's cheap convolutions (spatially separable, flattened, depthwise separable;
"Various Types of Convolutions") applied to networks that are already trained:
:func:`decompose` approximates their k x k convolutions by SVD, :func:`fuse_bn` folds
inference-mode batch norm into the convolutions, :func:`export` writes TorchScript,
``torch.export`` or ONNX files and checks them. Importing this package loads no model
and reads no file.
"""

from typing import TYPE_CHECKING

from cnnkit._lazy import lazy_getattr

if TYPE_CHECKING:
    from cnnkit.deploy.decomposition import (
        METHODS,
        DecompositionPlan,
        LayerDecomposition,
        build_decomposed,
        decompose,
        decompose_with_plan,
        energy_for_budget,
        plan_decomposition,
    )
    from cnnkit.deploy.exporters import EXPORT_FORMATS, ExportResult, export, load_exported
    from cnnkit.deploy.fuse import fold_conv_bn, foldable_pairs, fuse_bn
    from cnnkit.deploy.latency import Latency, compare_latency, measure_latency
    from cnnkit.deploy.runs import decompose_run, finetune_config, recalibrate_bn
    from cnnkit.run import load_run

__all__ = [
    "EXPORT_FORMATS",
    "METHODS",
    "DecompositionPlan",
    "ExportResult",
    "Latency",
    "LayerDecomposition",
    "build_decomposed",
    "compare_latency",
    "decompose",
    "decompose_run",
    "decompose_with_plan",
    "energy_for_budget",
    "export",
    "finetune_config",
    "fold_conv_bn",
    "foldable_pairs",
    "fuse_bn",
    "load_exported",
    "load_run",
    "measure_latency",
    "plan_decomposition",
    "recalibrate_bn",
]

# Names load on first use (PEP 562), so `cnnkit --help`, whose parser lives in
# cnnkit.deploy.cli_support, does not pay for importing torch.
_HOME = {
    "DecompositionPlan": "decomposition",
    "EXPORT_FORMATS": "exporters",
    "ExportResult": "exporters",
    "Latency": "latency",
    "LayerDecomposition": "decomposition",
    "METHODS": "decomposition",
    "build_decomposed": "decomposition",
    "compare_latency": "latency",
    "decompose": "decomposition",
    "decompose_run": "runs",
    "decompose_with_plan": "decomposition",
    "energy_for_budget": "decomposition",
    "export": "exporters",
    "finetune_config": "runs",
    "fold_conv_bn": "fuse",
    "foldable_pairs": "fuse",
    "fuse_bn": "fuse",
    "load_exported": "exporters",
    "load_run": "cnnkit.run",
    "measure_latency": "latency",
    "plan_decomposition": "decomposition",
    "recalibrate_bn": "runs",
}


__getattr__ = lazy_getattr(__name__, _HOME)
