"""Export (cnnkit.deploy.exporters): the file, loaded back without cnnkit's classes, gives the
model's outputs on fresh inputs of another batch size; ONNX needs packages this
environment may lack, and then says which.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cnnkit.deploy.decomposition import decompose
from cnnkit.deploy.exporters import export, load_exported, missing_onnx_packages
from cnnkit.deploy.fuse import fuse_bn
from cnnkit.models.registry import create_model


def _tiny() -> nn.Module:
    model = create_model(
        "fmnet", num_classes=10, in_chans=1, small_input=True, widths=[8, 16, 32], stem_width=8
    )
    return model.eval()


def _check_fresh_inputs(model: nn.Module, loaded: nn.Module) -> None:
    x = torch.randn(5, 1, 28, 28)  # neither the example's batch size nor its values
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("fmt", "suffix"),
    [("torchscript", ".pt"), pytest.param("exported_program", ".pt2", marks=pytest.mark.slow)],
)
def test_export_round_trips(tmp_path: Path, fmt: str, suffix: str) -> None:
    model = _tiny()
    res = export(model, tmp_path / f"m{suffix}", fmt, torch.randn(2, 1, 28, 28))
    assert res.path.is_file() and res.max_abs_diff is not None and res.max_abs_diff < 1e-5
    assert res.checked_batch_sizes == (2, 3)
    _check_fresh_inputs(model, load_exported(res.path, fmt))


def test_decomposed_and_fused_model_exports(tmp_path: Path) -> None:
    model = fuse_bn(decompose(_tiny(), "flattened", rank=2))
    res = export(model, tmp_path / "m.pt", "torchscript", torch.randn(1, 1, 28, 28))
    assert res.checked_batch_sizes == (1, 3)
    _check_fresh_inputs(model, load_exported(res.path, "torchscript"))


def test_export_leaves_a_training_model_in_training_mode(tmp_path: Path) -> None:
    model = _tiny().train()
    export(model, tmp_path / "m.pt", "torchscript", torch.randn(2, 1, 28, 28))
    assert model.training


@pytest.mark.skipif(
    bool(missing_onnx_packages()),
    reason=f"ONNX export needs {', '.join(missing_onnx_packages()) or '-'} (not installed here)",
)
def test_onnx_export_matches_under_onnxruntime(tmp_path: Path) -> None:  # pragma: no cover (needs onnx)
    model = _tiny()
    res = export(model, tmp_path / "m.onnx", "onnx", torch.randn(2, 1, 28, 28))
    _check_fresh_inputs(model, load_exported(res.path, "onnx"))


@pytest.mark.skipif(not missing_onnx_packages(), reason="onnx, onnxscript and onnxruntime are installed")
def test_onnx_without_its_packages_names_them(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"pip install .*(onnx|onnxscript|onnxruntime)"):
        export(_tiny(), tmp_path / "m.onnx", "onnx", torch.randn(2, 1, 28, 28))
    assert not (tmp_path / "m.onnx").exists()


def test_bad_arguments_raise(tmp_path: Path) -> None:
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match="unknown export format"):
        export(_tiny(), tmp_path / "m.x", "tflite", x)
    with pytest.raises(ValueError, match=r"\.pt2"):
        export(_tiny(), tmp_path / "m.pt", "exported_program", x)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        export(_tiny(), tmp_path / "m.pt", "torchscript", x[0])
