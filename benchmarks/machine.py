"""What the speed benchmarks record about the machine, and its measured convolution peak.

``machine_info()`` names the CPU (model, cores, the SIMD flags that decide whether bf16 is
native), the thread count and the torch build, so a recorded figure can be read against
the machine it came from. ``conv_peak(dtype)`` is the best throughput, in FLOP/s, of a
3x3 convolution forward pass over a few layer shapes typical of small-image nets, in
channels_last (oneDNN's fast layout) and NCHW: the denominator of model-FLOPs
utilisation (MFU), measured in the same process as the numerator.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["conv_peak", "machine_info", "machine_kind", "training_peak", "write_results"]

# (channels, spatial size, batch): 3x3 convs as in fmnet/ResNet stages on 28x28 inputs
PEAK_SHAPES = ((64, 28, 64), (128, 14, 64), (256, 7, 128))


def machine_info() -> dict[str, Any]:
    from cnnkit.doctor import cpu_flags, cpu_name

    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "simd": flags,
        "native_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
        "kind": machine_kind(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1min_at_start": os.getloadavg()[0],
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def machine_kind() -> str:
    """The kind of machine a speed figure belongs to, as the issue "Speed" names them: ``cuda``,
    ``amx-bf16`` (AMX tiles: bf16 convolutions near 1 TFLOP/s on 2 cores), ``avx512-bf16``
    (AVX512 bf16 dot products) or ``avx2`` (bf16 emulated: fp32 is the fast precision)."""
    from cnnkit.doctor import cpu_flags

    if torch.cuda.is_available():
        return "cuda"
    flags = cpu_flags()
    for kind, flag in (("amx-bf16", "amx_bf16"), ("avx512-bf16", "avx512_bf16")):
        if flag in flags:
            return kind
    return "avx2"


def conv_peak(
    dtype: torch.dtype = torch.float32, repeat: int = 5, batch_divisor: int = 1, *, train: bool = False
) -> dict[str, Any]:
    """Best FLOP/s of a 3x3 conv (2 FLOPs per multiply-add) over ``PEAK_SHAPES`` and both layouts.

    Forward only, or with ``train`` forward and both backward passes (the input's gradient and
    the weight's: 3x the forward's FLOPs), as a training step runs them. bf16 runs under CPU
    autocast, as the trainer's ``--amp bf16`` does. Each figure is the median of ``repeat``
    timed calls after two warm-up calls; ``batch_divisor`` shrinks the batches for a quick
    (less exact) reading.
    """
    rows = []
    for c, hw, full in PEAK_SHAPES:
        n = max(full // batch_divisor, 1)
        for cl in (False, True):
            conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
            x = torch.randn(n, c, hw, hw)
            if cl:
                conv = conv.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_(train)

            def call(conv: torch.nn.Module = conv, x: torch.Tensor = x) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    y = conv(x)
                if train:
                    y.backward(torch.ones_like(y))

            with torch.set_grad_enabled(train):
                for _ in range(2):
                    call()
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - t0)
            flops = 2 * n * c * c * 9 * hw * hw * (3 if train else 1)
            rows.append(
                {
                    "channels": c,
                    "size": hw,
                    "batch": n,
                    "channels_last": cl,
                    "gflops": flops / statistics.median(times) / 1e9,
                }
            )
    best = max(rows, key=lambda r: r["gflops"])
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "peak_gflops": best["gflops"],
        "best": best,
        "shapes": rows,
    }


def training_peak(repeat: int = 5, batch_divisor: int = 1) -> dict[str, Any]:
    """P of the issue "Speed": the machine's best 3x3-convolution training throughput, in
    GFLOP/s (forward and both backward passes, best of fp32 and bf16 and of both layouts).
    A run's normalised time is its wall-clock training time x P / 1000: the seconds it would
    take on a machine whose peak is 1 TFLOP/s. bf16 is measured only where it is native (an
    emulated bf16 is never the best)."""
    from cnnkit.train.precision import native_bf16

    dtypes = [torch.float32] + ([torch.bfloat16] if native_bf16() else [])
    peaks = {str(d).removeprefix("torch."): conv_peak(d, repeat, batch_divisor, train=True) for d in dtypes}
    best = max(peaks, key=lambda k: peaks[k]["peak_gflops"])
    return {"P_gflops": peaks[best]["peak_gflops"], "dtype": best, "by_dtype": peaks}


def write_results(
    output: Path | None, results: Path, name: str, smoke: bool, report: dict[str, Any], markdown: str
) -> Path:
    """Write a speed benchmark's JSON and its Markdown table beside it, and print the table.
    The default path is ``results/<name>_<machine kind>.json`` (``<name>_smoke.json`` for a
    smoke run): one record per machine kind."""
    out = output or results / (f"{name}_smoke.json" if smoke else f"{name}_{machine_kind()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return out
