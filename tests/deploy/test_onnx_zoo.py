"""ONNX export of one zoo model of every family, run under onnxruntime (``cnnkit[onnx]``): the
outputs on fresh inputs equal PyTorch's. Batch-norm statistics are set away from their
initial values first, so the logits are far from zero and the comparison means something."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cnnkit.deploy.exporters import export, load_exported, missing_onnx_packages
from cnnkit.models import create_model

pytestmark = pytest.mark.skipif(
    bool(missing_onnx_packages()),
    reason=f"needs {', '.join(missing_onnx_packages()) or '-'}: pip install 'cnnkit[onnx]'",
)

FAMILIES = [
    ("fmnet", 1, 28, True), ("resnet20", 1, 28, True), ("seresnet18", 1, 28, True), ("vgg11_bn", 1, 28, True),
    ("densenet_bc_100_12", 1, 28, True), ("googlenet", 1, 28, True), ("mobilenet_v1", 1, 28, True),
    ("shufflenet_v1_g3", 1, 28, True), ("alexnet", 3, 64, False),
]  # fmt: skip


@pytest.mark.parametrize(("name", "chans", "size", "small"), FAMILIES)
def test_a_zoo_model_of_each_family_exports_to_onnx(
    tmp_path: Path, name: str, chans: int, size: int, small: bool
) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=chans, small_input=small).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)  # also wakes branches that start at zero
    res = export(model, tmp_path / f"{name}.onnx", "onnx", torch.randn(2, chans, size, size))
    assert res.path.stat().st_size > 0
    ort = load_exported(res.path, "onnx")  # an onnxruntime session behind a module's call
    x = torch.randn(3, chans, size, size)  # another batch size than the example's
    with torch.no_grad():
        expected = model(x)
        got = ort(x)
    assert expected.std() > 1e-3  # logits that differ between images and classes
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
