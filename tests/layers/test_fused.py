"""cnnkit.layers.fused against the eager layers it replaces (torch's MaxPool2d, BatchNorm2d,
ReLU and Conv2d: the outside definition), in float32 to float rounding and in bfloat16 to
bfloat16 rounding, gradients and running statistics included."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from cnnkit.layers import fused
from cnnkit.models.registry import create_model

CL = torch.channels_last

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler to build the fused kernels"
)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / a.norm().clamp_min(1e-30)).item()


def _pair(c: int, momentum: float | None = 0.1) -> tuple[nn.BatchNorm2d, nn.BatchNorm2d]:
    bn = nn.BatchNorm2d(c, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn, copy.deepcopy(bn)


def test_kernels_build_here() -> None:
    assert fused.available(), fused.unavailable_reason()


# channels that are a multiple of 16 take the AVX-512 path, others the scalar one; odd sizes
# exercise the row and column a floor-mode 2x2 pool drops
SHAPES = [
    (4, 32, 28, 28, True),
    (3, 16, 7, 7, True),
    (2, 48, 14, 14, False),
    (3, 24, 5, 6, True),
    (2, 20, 3, 3, False),
]


@pytest.mark.parametrize(("n", "c", "h", "w", "pool"), SHAPES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_pool_bn_relu_matches_eager_float32(
    n: int, c: int, h: int, w: int, pool: bool, momentum: float | None
) -> None:
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w).contiguous(memory_format=CL)
    bn_ref, bn = _pair(c, momentum)
    pool_mod = nn.MaxPool2d(2) if pool else nn.Identity()
    x_ref, x_new = x.clone().requires_grad_(), x.clone().requires_grad_()
    for _ in range(2):  # twice: the running statistics' update, and with momentum=None their average
        y_ref = torch.relu(bn_ref(pool_mod(x_ref)))
        y = fused.pool_bn_relu(x_new, bn, pool)
    assert y.is_contiguous(memory_format=CL) and y.shape == y_ref.shape
    assert y.grad_fn is not None and "PoolBNReLU" in type(y.grad_fn).__name__
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y.backward(g)
    assert _rel(y_ref, y) < 1e-6
    assert _rel(x_ref.grad, x_new.grad) < 1e-5
    assert x_new.grad.is_contiguous(memory_format=CL)
    assert _rel(bn_ref.weight.grad, bn.weight.grad) < 1e-5
    assert _rel(bn_ref.bias.grad, bn.bias.grad) < 1e-5
    assert _rel(bn_ref.running_mean, bn.running_mean) < 1e-6
    assert _rel(bn_ref.running_var, bn.running_var) < 1e-6
    assert int(bn.num_batches_tracked) == int(bn_ref.num_batches_tracked) == 2


@pytest.mark.parametrize(("n", "c", "h", "w", "pool"), SHAPES[:3])
def test_pool_bn_relu_bfloat16_matches_eager(n: int, c: int, h: int, w: int, pool: bool) -> None:
    torch.manual_seed(1)
    x = torch.randn(n, c, h, w).to(torch.bfloat16).contiguous(memory_format=CL)
    bn_ref, bn = _pair(c)
    pool_mod = nn.MaxPool2d(2) if pool else nn.Identity()
    x_ref, x_new = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref = torch.relu(bn_ref(pool_mod(x_ref)))
    y = fused.pool_bn_relu(x_new, bn, pool)
    assert y.dtype == torch.bfloat16 == x_new.dtype
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y.backward(g)
    assert _rel(y_ref, y) < 1e-2  # bf16 has 8 significant bits: 2^-8 = 0.4% per value
    assert _rel(x_ref.grad, x_new.grad) < 2e-2
    assert _rel(bn_ref.weight.grad, bn.weight.grad) < 1e-2
    assert _rel(bn_ref.running_var, bn.running_var) < 1e-3


def test_pool_ties_go_to_the_first_maximum_as_aten() -> None:
    # a map of equal values: every 2x2 window is a four-way tie; aten's max-pool routes the
    # gradient to the first element of the window (row-major), so must the fused kernel
    x = torch.ones(2, 16, 4, 4).contiguous(memory_format=CL)
    x[:, :, 1, 1] = 3.0  # one window with a strict maximum in its last position
    bn_ref, bn = _pair(16)
    with torch.no_grad():  # every normalised value positive: the ReLU passes all gradients
        bn_ref.bias.fill_(3.0)
        bn.bias.fill_(3.0)
    x_ref, x_new = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(2, 16, 2, 2, generator=torch.Generator().manual_seed(0))
    torch.relu(bn_ref(nn.MaxPool2d(2)(x_ref))).backward(g)
    fused.pool_bn_relu(x_new, bn, True).backward(g)
    assert torch.equal((x_ref.grad != 0), (x_new.grad != 0))
    # the window with the 3 routes to it; the tied windows to their first (top-left) element
    assert (x_new.grad[:, :, 1, 1] != 0).all() and (x_new.grad[:, :, 0, 0] == 0).all()
    assert (x_new.grad[:, :, 0, 2] != 0).all() and (x_new.grad[:, :, 1, 3] == 0).all()


def test_fused_norm_act_falls_back_where_the_pattern_does_not_hold() -> None:
    x = torch.randn(4, 16, 8, 8).contiguous(memory_format=CL)
    pool, norm, act = nn.MaxPool2d(2), nn.BatchNorm2d(16), nn.ReLU()

    def kind(*args: nn.Module, inp: torch.Tensor = x) -> str:
        return type(fused.fused_norm_act(inp.requires_grad_(), *args).grad_fn).__name__

    assert "PoolBNReLU" in kind(pool, norm, act)
    assert "PoolBNReLU" not in kind(pool, norm, nn.GELU())
    assert "PoolBNReLU" not in kind(nn.MaxPool2d(3), norm, act)
    assert "PoolBNReLU" not in kind(pool, nn.GroupNorm(4, 16), act)
    assert "PoolBNReLU" not in kind(pool, norm, act, inp=x.contiguous().detach())  # NCHW map
    norm.eval()
    assert "PoolBNReLU" not in kind(pool, norm, act)
    norm.train()
    fused.set_enabled(False)
    try:
        assert "PoolBNReLU" not in kind(pool, norm, act)
    finally:
        fused.set_enabled(True)


@pytest.mark.parametrize("amp", [False, True])
def test_frozen_stem_bias_relu_matches_eager(amp: bool) -> None:
    torch.manual_seed(2)
    conv_ref = nn.Conv2d(1, 16, 3, padding=1).to(memory_format=CL)
    conv_ref.weight.requires_grad_(False)
    conv = copy.deepcopy(conv_ref)
    x = torch.randn(8, 1, 12, 12).contiguous(memory_format=CL)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        y_ref = torch.relu(conv_ref(x))
        y = fused.fused_conv_relu(x, conv, nn.ReLU())
    assert "BiasReLU" in type(y.grad_fn).__name__
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y.backward(g)
    assert conv.weight.grad is None
    if not amp:
        assert _rel(y_ref, y) < 1e-6
        assert _rel(conv_ref.bias.grad, conv.bias.grad) < 1e-5
    else:  # eager adds a bf16-rounded bias; the ReLU masks then differ where the sum is near 0
        assert _rel(y_ref, y) < 1e-2
        assert _rel(conv_ref.bias.grad, conv.bias.grad) < 0.1


@pytest.mark.parametrize("amp", [False, True])
def test_small_map_conv_matches_eager(amp: bool) -> None:
    torch.manual_seed(3)
    conv_ref = nn.Conv2d(64, 32, 3, padding=1, bias=False).to(memory_format=CL)
    conv = copy.deepcopy(conv_ref)
    x = torch.randn(6, 64, 3, 3).contiguous(memory_format=CL)
    x_ref, x_new = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        y_ref = conv_ref(x_ref)
        y = fused.fused_conv(x_new, conv)
    assert "SmallMapConv" in type(y.grad_fn).__name__ and y.dtype == y_ref.dtype
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y.backward(g)
    tol = 1e-2 if amp else 1e-5
    assert _rel(y_ref, y) < tol
    assert _rel(x_ref.grad, x_new.grad) < tol
    assert _rel(conv_ref.weight.grad, conv.weight.grad) < tol
    assert conv.weight.grad.dtype == torch.float32 and x_new.grad.dtype == torch.float32
    # larger maps keep torch's own convolution
    big = torch.randn(2, 64, 8, 8).contiguous(memory_format=CL).requires_grad_()
    assert "SmallMapConv" not in type(fused.fused_conv(big, conv).grad_fn).__name__


def test_fmnet_training_step_is_the_same_with_and_without_the_kernels() -> None:
    torch.manual_seed(4)
    net = create_model(
        "fmnet", num_classes=10, in_chans=1, widths=(32, 64, 64), stem_norm=False, act_layer="relu"
    )
    net = net.to(memory_format=CL).train()
    net.stem[0].weight.requires_grad_(False)
    ref = copy.deepcopy(net)
    x = torch.randn(8, 1, 28, 28).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (8,))
    fused.set_enabled(False)
    try:
        nn.functional.cross_entropy(ref(x), y).backward()
    finally:
        fused.set_enabled(True)
    nn.functional.cross_entropy(net(x), y).backward()
    for (name, p_ref), p in zip(ref.named_parameters(), net.parameters(), strict=True):
        if p_ref.grad is not None:
            assert _rel(p_ref.grad, p.grad) < 1e-4, name
    for (name, b_ref), b in zip(ref.named_buffers(), net.buffers(), strict=True):
        assert _rel(b_ref.float(), b.float()) < 1e-5, name


def test_without_a_compiler_the_eager_layers_run(tmp_path: object) -> None:
    code = (
        "import torch, warnings\n"
        "from torch import nn\n"
        "from cnnkit.layers import fused\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()\n"
        "    y = fused.fused_norm_act(x, nn.MaxPool2d(2), nn.BatchNorm2d(16), nn.ReLU())\n"
        "y.sum().backward()\n"
        "print(fused.available(), type(y.grad_fn).__name__, len(w), str(w[0].message) if w else '')\n"
    )
    env = {**os.environ, "CXX": "/nonexistent/c++", "CNNKIT_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    available, grad_fn, warned, message = out.stdout.strip().split(" ", 3)
    assert available == "False" and "PoolBNReLU" not in grad_fn and warned == "1"
    assert "fused CPU kernels are off" in message
