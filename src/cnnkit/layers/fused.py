"""Fused "[2x2 max-pool ->] batch norm -> ReLU" for training on the CPU (written by hand: faster).

On 2 CPU cores with AMX, the convolutions of a small net such as fmnet are so fast that the
memory-bound layers between them take half the training step: eager PyTorch runs max-pool,
batch norm and ReLU (and in the backward the zero fill of the pool's input gradient) as
separate passes over each feature map, and the pool saves an int64 index per output.
``pool_bn_relu`` does the same maths in two passes forward and two backward (C++ kernels in
``csrc/pool_bn_relu.cpp``, threaded with torch's own thread pool), with a one-byte argmax.
Neither torch nor oneDNN offers this fusion on the CPU, and ``torch.compile`` did not make
the step faster here (benchmarks/results/compile_step_*.md); benchmarks/fused_step.py measures
the gain against eager in the same run.

The kernels are compiled with the system C++ compiler (``CXX``, else ``c++``) on first use
into ``~/.cache/cnnkit/ext`` (``CNNKIT_CACHE`` moves it), keyed by the source, torch's version
and the CPU. Where they cannot be built (no compiler), or where a layer does not match the
fused pattern (eval mode, GELU, group norm, CUDA, another pool, a contiguous NCHW map...),
:func:`fused_norm_act` runs the eager modules: the result is the same up to float rounding.
``CNNKIT_FUSED=0`` or :func:`set_enabled` turns the kernels off (``cnnkit train --no-fused``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "available",
    "build_status",
    "fused_conv",
    "fused_conv_relu",
    "fused_norm_act",
    "is_enabled",
    "pool_bn_relu",
    "set_enabled",
    "unavailable_reason",
]

_SOURCE = Path(__file__).parent / "csrc" / "pool_bn_relu.cpp"
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {
    "loaded": None,
    "reason": None,
    "enabled": os.environ.get("CNNKIT_FUSED", "1") != "0",
}


def set_enabled(enabled: bool) -> None:
    """Use the fused kernels where they apply (the default), or always the eager layers."""
    _STATE["enabled"] = bool(enabled)


def is_enabled() -> bool:
    return bool(_STATE["enabled"])


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def _build(target: Path) -> None:
    cxx = _compiler()
    if not cxx:
        raise RuntimeError("no C++ compiler (install g++, or set CXX)")
    torch_dir = Path(torch.__file__).parent
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        cmd = [
            cxx, "-O3", "-march=native", "-fopenmp", "-std=c++20", "-shared", "-fPIC", "-w",
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-I{torch_dir / 'include'}", str(_SOURCE), "-o", str(out),
            f"-L{torch_dir / 'lib'}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_dir / 'lib'}",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{cxx} failed: {done.stderr.strip()[-400:]}")
        os.replace(out, target)  # atomic: concurrent builders (torchrun ranks) never see half a file


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _target() -> Path:
    """Where the kernels for this source, torch and CPU are built."""
    key = hashlib.sha256(_SOURCE.read_bytes() + torch.__version__.encode() + _cpu_signature().encode())
    root = Path(os.environ.get("CNNKIT_CACHE") or Path.home() / ".cache" / "cnnkit")
    return root / "ext" / f"pool_bn_relu_{key.hexdigest()[:16]}.so"


def _library() -> bool:
    """Build (once per source, torch and CPU) and load the kernels; False, with a reason, if not."""
    if _STATE["loaded"] is not None:
        return bool(_STATE["loaded"])
    with _LOCK:
        if _STATE["loaded"] is None:
            target = _target()
            try:
                if not target.exists():
                    _build(target)
                torch.ops.load_library(str(target))
                _STATE["loaded"] = True
            except (OSError, RuntimeError) as e:
                _STATE["loaded"], _STATE["reason"] = False, str(e)
                warnings.warn(f"cnnkit's fused CPU kernels are off ({e}); the eager layers run", stacklevel=3)
    return bool(_STATE["loaded"])


def build_status() -> tuple[str, str]:
    """``(state, detail)`` without building: ``built`` (the library's path), ``unbuilt`` (the
    compiler that will build it on first use) or ``no-compiler``; for ``cnnkit doctor``."""
    target = _target()
    if target.exists():
        return "built", str(target)
    cxx = _compiler()
    return ("unbuilt", cxx) if cxx else ("no-compiler", "")


def available() -> bool:
    """Whether the fused kernels are built and loaded here (builds them on the first call)."""
    return _library()


def unavailable_reason() -> str | None:
    return None if _library() else str(_STATE["reason"])


class _PoolBNReLU(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        factor: float,
        eps: float,
        pool: bool,
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        ho, wo = (h // 2, w // 2) if pool else (h, w)
        cl = torch.channels_last
        p = torch.empty((n, c, ho, wo), dtype=x.dtype, memory_format=cl) if pool else x
        idx = torch.empty((n, c, ho, wo), dtype=torch.uint8, memory_format=cl) if pool else x
        sums = torch.empty((2, c), dtype=torch.float64)
        torch.ops.cnnkit_fused.pool_stats(x, p, idx, sums, pool)
        count = n * ho * wo
        # rows: mean, invstd, scale, shift (float32); the running statistics updated in place
        stats = torch.empty((4, c))
        torch.ops.cnnkit_fused.bn_stats(
            sums, count, eps, weight, bias, running_mean, running_var, factor, stats
        )
        y = torch.empty((n, c, ho, wo), dtype=x.dtype, memory_format=cl)
        torch.ops.cnnkit_fused.affine_relu(p, stats[2], stats[3], y)
        ctx.save_for_backward(p, idx, weight, stats)
        ctx.pool, ctx.in_shape, ctx.count = pool, x.shape, count
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        p, idx, weight, stats = ctx.saved_tensors
        mean, _, scale, shift = stats
        dy = dy.to(p.dtype).contiguous(memory_format=torch.channels_last)
        sums = torch.empty((2, p.shape[1]), dtype=torch.float64)
        torch.ops.cnnkit_fused.bwd_reduce(dy, p, scale, shift, mean, sums)
        # rows: dweight, dbias, then the input gradient's k, a, b (see csrc)
        grads = torch.empty((5, p.shape[1]))
        torch.ops.cnnkit_fused.bn_grads(sums, ctx.count, weight, stats, grads)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = torch.empty(ctx.in_shape, dtype=p.dtype, memory_format=torch.channels_last)
            torch.ops.cnnkit_fused.bwd_dx(
                dy, p, idx, scale, shift, mean, grads[2], grads[3], grads[4], dx, ctx.pool
            )
        dweight, dbias = grads[0].to(weight.dtype), grads[1].to(weight.dtype)
        return dx, dweight, dbias, None, None, None, None, None


def _pattern_pool(pool: nn.Module | None) -> bool | None:
    """True for a 2x2/stride-2 max-pool, False for no pool, None for anything else."""
    if pool is None or isinstance(pool, nn.Identity):
        return False
    if type(pool) is nn.MaxPool2d:
        ks, st, pad, dil = (
            (v, v) if isinstance(v, int) else tuple(v)
            for v in (pool.kernel_size, pool.stride, pool.padding, pool.dilation)
        )
        if ks == st == (2, 2) and pad == (0, 0) and dil == (1, 1) and not pool.ceil_mode:
            return not pool.return_indices or None
    return None


def _applies(x: torch.Tensor, norm: nn.Module, act: nn.Module, pool: bool | None) -> bool:
    if (
        type(x) is not torch.Tensor
        or pool is None
        or not _STATE["enabled"]
        or type(norm) is not nn.BatchNorm2d
        or type(act) is not nn.ReLU
    ):
        return False
    if not norm.training or not norm.affine or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    if any(
        t is not None and t.dtype != torch.float32 for t in (norm.weight, norm.running_mean, norm.running_var)
    ):
        return False
    if (
        torch.compiler.is_compiling()
        or x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.bfloat16)
    ):
        return False
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last) or type(x) is not torch.Tensor:
        return False
    n, _, h, w = x.shape
    if n * (h // 2 if pool else h) * (w // 2 if pool else w) < 2:
        return False  # batch norm's own error for one value per channel
    return _library()


def pool_bn_relu(x: torch.Tensor, norm: nn.BatchNorm2d, pool: bool) -> torch.Tensor:
    """``relu(norm(max_pool2d(x, 2)))`` (or without the pool) in training mode, fused; ``norm``'s
    running statistics are updated as ``nn.BatchNorm2d.forward`` updates them."""
    if not _library():
        raise RuntimeError(f"cnnkit's fused CPU kernels are not available: {_STATE['reason']}")
    factor = 0.0
    if norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    return _PoolBNReLU.apply(
        x, norm.weight, norm.bias, norm.running_mean, norm.running_var, factor, norm.eps, pool
    )


class _BiasReLU(torch.autograd.Function):
    """``relu(z + bias)`` whose backward gives the bias its gradient (and ``z`` its own if needed)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        c = z.shape[1]
        scale, shift = torch.ones(c), bias.detach().float()
        y = torch.empty(z.shape, dtype=z.dtype, memory_format=torch.channels_last)
        torch.ops.cnnkit_fused.affine_relu(z, scale, shift, y)
        ctx.save_for_backward(z, y, scale, shift)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, y, scale, shift = ctx.saved_tensors
        dy = dy.to(z.dtype).contiguous(memory_format=torch.channels_last)
        sums = torch.empty((2, z.shape[1]), dtype=torch.float64)
        torch.ops.cnnkit_fused.bwd_reduce(dy, z, scale, shift, torch.zeros_like(scale), sums)
        dz = dy.masked_fill(y <= 0, 0) if ctx.needs_input_grad[0] else None
        return dz, sums[0].to(shift.dtype) if ctx.needs_input_grad[1] else None


def fused_conv_relu(x: torch.Tensor, conv: nn.Module, act: nn.Module) -> torch.Tensor:
    """``act(conv(x))``; for a frozen convolution with a trained bias (``--whiten``'s stem) over
    an input without gradient, followed by ReLU, the bias and ReLU are fused and the backward is
    the bias's gradient alone: eager autograd computes the frozen weight's gradient with it (one
    oneDNN call gives both)."""
    if (
        type(x) is torch.Tensor  # not a torch.fx Proxy or a tensor subclass: those trace the modules
        and type(conv) is nn.Conv2d
        and type(act) is nn.ReLU
        and conv.training
        and _STATE["enabled"]
        and conv.bias is not None
        and conv.bias.requires_grad
        and not conv.weight.requires_grad
        and not x.requires_grad
        and torch.is_grad_enabled()
        and x.device.type == "cpu"
        and not (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling())
        and conv.padding_mode == "zeros"
        and _library()
    ):
        with torch.no_grad():
            z = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        if z.dtype in (torch.float32, torch.bfloat16) and z.is_contiguous(memory_format=torch.channels_last):
            return _BiasReLU.apply(z, conv.bias)
    return act(conv(x))


def _tile(t: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, H, W) channels_last -> (N/k, C, H, k(W+1)): k images side by side, each followed
    by a zero column, so a 3x3 padding-1 convolution over the strip sees every image with its
    own zero border."""
    n, c, h, w = t.shape
    z = t.new_zeros(n // k, h, k, w + 1, c)
    z[:, :, :, :w] = t.permute(0, 2, 3, 1).reshape(n // k, k, h, w, c).transpose(1, 2)
    return z.view(n // k, h, k * (w + 1), c).permute(0, 3, 1, 2)


class _SmallMapConv3x3(torch.autograd.Function):
    """A 3x3, stride-1, padding-1 convolution whose weight gradient is computed over strips of
    ``k`` images side by side (:func:`_tile`): the same sum over every position, but oneDNN's
    weight-gradient kernel, slow on maps of 7x7 and 3x3 (a reduction over 49 or 9 positions per
    image), runs 1.5-4x faster over 32-wide strips (benchmarks/fused_step.py)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype, k: int) -> torch.Tensor:
        xc, wc = x.to(dtype), weight.to(dtype)
        with torch.autocast("cpu", enabled=False):
            y = F.conv2d(xc, wc, None, 1, 1)
        ctx.save_for_backward(xc, wc)
        ctx.x_dtype, ctx.w_dtype, ctx.k = x.dtype, weight.dtype, k
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xc, wc = ctx.saved_tensors
        dy = dy.to(xc.dtype).contiguous(memory_format=torch.channels_last)
        dx = dw = None
        conv_args = ([1, 1], [1, 1], [1, 1], False, [0, 0], 1)
        if ctx.needs_input_grad[0]:
            dx = torch.ops.aten.convolution_backward(dy, xc, wc, None, *conv_args, [True, False, False])[0]
            dx = dx.to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            dw = torch.ops.aten.convolution_backward(
                _tile(dy, ctx.k), _tile(xc, ctx.k), wc, None, *conv_args, [False, True, False]
            )[1]
            dw = dw.to(ctx.w_dtype)
        return dx, dw, None, None


def fused_conv(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """``conv(x)``; a bias-free 3x3 convolution (stride 1, padding 1) of at least 32 input
    channels over a channels_last CPU map of at most 8x8, in training, computes its weight
    gradient over strips of images (:class:`_SmallMapConv3x3`)."""
    if (
        type(x) is torch.Tensor
        and type(conv) is nn.Conv2d
        and _STATE["enabled"]
        and conv.training
        and conv.bias is None
        and conv.weight.requires_grad
        and torch.is_grad_enabled()
        and conv.in_channels >= 32
        and x.dim() == 4
        and x.shape[2] <= 8
        and x.shape[3] <= 8
        and x.device.type == "cpu"
        and x.is_contiguous(memory_format=torch.channels_last)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling())
    ):
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        # strips about 32 columns wide; the batch must split into whole strips
        k = max(32 // (x.shape[3] + 1), 1)
        while x.shape[0] % k:
            k //= 2
        if dtype in (torch.float32, torch.bfloat16) and k > 1:
            return _SmallMapConv3x3.apply(x, conv.weight, dtype, k)
    return conv(x)


def fused_norm_act(x: torch.Tensor, pool: nn.Module | None, norm: nn.Module, act: nn.Module) -> torch.Tensor:
    """``act(norm(pool(x)))``: the fused kernels where the layers match their pattern (2x2 max-pool
    or none, training-mode ``nn.BatchNorm2d``, ``nn.ReLU``, a channels_last CPU map in float32
    or bfloat16), else the modules themselves."""
    kind = _pattern_pool(pool)
    if _applies(x, norm, act, kind):
        return pool_bn_relu(x, norm, bool(kind))  # type: ignore[arg-type]
    return act(norm(x if pool is None else pool(x)))
