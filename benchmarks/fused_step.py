"""cnnkit's fused CPU kernels (``cnnkit.layers.fused``) against eager PyTorch, layer by layer and
for the whole training step of the default and the accurate recipe (issue "Speed", target 3).

Layers: each fused pattern on the feature-map shapes of fmnet at batch 256 (the default's
32/64/128 widths and the accurate recipe's 64/128/256), forward and backward, fused against
the eager modules (``nn.MaxPool2d``, ``nn.BatchNorm2d``, ``nn.ReLU``; ``nn.Conv2d``).
Step: the recipe's model as it trains (fmnet, ReLU, no stem norm, a frozen stem with a trained
bias as ``--whiten`` leaves it, channels_last, the precision ``--amp auto`` prefers here),
cross-entropy with label smoothing, SGD with Nesterov momentum; blocks of steps with the
kernels on and off alternate in one process, so both see the same machine state. Reported:
median milliseconds per step, images per second, fused/eager, and the step's model-FLOPs
utilisation against P, the machine's 3x3-convolution training peak measured in the same run.

Run: ``python benchmarks/fused_step.py`` (writes ``benchmarks/results/fused_step_<kind>.{json,md}``);
``--smoke`` is a short check with small batches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, training_peak, write_results

from cnnkit.layers import fused

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CL = torch.channels_last

# (pattern, channels, input size): fmnet's maps at 28x28 input, default then accurate widths
LAYERS = (
    ("pool-bn-relu", 32, 28), ("bn-relu", 32, 14), ("pool-bn-relu", 64, 14), ("bn-relu", 64, 7),
    ("pool-bn-relu", 128, 7), ("bn-relu", 128, 3), ("bias-relu", 16, 28), ("conv3x3-small", 128, 3),
    ("pool-bn-relu", 64, 28), ("bn-relu", 64, 14), ("pool-bn-relu", 128, 14), ("bn-relu", 128, 7),
    ("pool-bn-relu", 256, 7), ("bn-relu", 256, 3), ("conv3x3-small", 256, 3),
)  # fmt: skip


def _median_ms(fn: Callable[[], None], repeat: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _layer_pair(
    pattern: str, c: int, size: int, batch: int, dtype: torch.dtype
) -> tuple[Callable[[], None], ...]:
    """(eager, fused) forward+backward closures of one pattern on one map shape."""
    x = (
        torch.randn(batch, c, size, size)
        .to(dtype)
        .contiguous(memory_format=CL)
        .requires_grad_(pattern != "bias-relu")
    )
    amp = dtype == torch.bfloat16

    def amp_step(f: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                y = f()
            y.backward(torch.ones_like(y))

        return run

    if pattern == "conv3x3-small":
        conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(memory_format=CL)
        return amp_step(lambda: conv(x)), amp_step(lambda: fused.fused_conv(x, conv))
    if pattern == "bias-relu":
        stem = nn.Conv2d(1, c, 3, padding=1).to(memory_format=CL)
        stem.weight.requires_grad_(False)
        x1 = torch.randn(batch, 1, size, size).contiguous(memory_format=CL)
        return amp_step(lambda: F.relu(stem(x1))), amp_step(
            lambda: fused.fused_conv_relu(x1, stem, nn.ReLU())
        )
    pool: nn.Module = nn.MaxPool2d(2) if pattern == "pool-bn-relu" else nn.Identity()
    norm, act = nn.BatchNorm2d(c), nn.ReLU()

    def eager() -> None:
        y = act(norm(pool(x)))
        y.backward(torch.ones_like(y))

    def fast() -> None:
        y = fused.fused_norm_act(x, pool, norm, act)
        y.backward(torch.ones_like(y))

    return eager, fast


def layers_table(batch: int, dtype: torch.dtype, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for pattern, c, size in LAYERS:
        eager, fast = _layer_pair(pattern, c, size, batch, dtype)
        e, f = _median_ms(eager, repeat), _median_ms(fast, repeat)
        rows.append(
            {"pattern": pattern, "channels": c, "size": size, "eager_ms": e, "fused_ms": f, "speedup": e / f}
        )
    return rows


def _recipe_model(widths: tuple[int, int, int]) -> nn.Module:
    from cnnkit.models.registry import create_model

    net = create_model("fmnet", num_classes=10, in_chans=1, widths=widths, stem_norm=False, act_layer="relu")
    net.stem[0].weight.requires_grad_(False)  # --whiten's stem: frozen weights, a trained bias
    return net.to(memory_format=CL).train()


def step_compare(
    widths: tuple[int, int, int], batch: int, blocks: int, steps: int, amp: bool
) -> dict[str, Any]:
    """Median step time with the kernels on and off, in alternating blocks of ``steps`` steps."""
    from cnnkit.analysis import summarize

    torch.manual_seed(0)
    net = _recipe_model(widths)
    opt = torch.optim.SGD(
        [p for p in net.parameters() if p.requires_grad], lr=0.05, momentum=0.9, nesterov=True, fused=True
    )
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(net(x).float(), y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times: dict[bool, list[float]] = {True: [], False: []}
    was = fused.is_enabled()
    try:
        for block in range(2 * blocks):
            on = block % 2 == 0
            fused.set_enabled(on)
            for i in range(steps + 3):
                t = time.perf_counter()
                step()
                if i >= 3:  # the first steps after a switch re-pick oneDNN kernels and buffers
                    times[on].append(time.perf_counter() - t)
    finally:
        fused.set_enabled(was)
    flops = 3 * summarize(_recipe_model(widths).eval(), (1, 28, 28)).total_flops  # forward + backward
    fused_ms, eager_ms = statistics.median(times[True]) * 1e3, statistics.median(times[False]) * 1e3
    return {
        "widths": list(widths),
        "batch": batch,
        "precision": "bf16" if amp else "fp32",
        "train_gflop_per_image": flops / 1e9,
        "fused_ms": fused_ms,
        "eager_ms": eager_ms,
        "fused_img_per_s": batch / fused_ms * 1e3,
        "eager_img_per_s": batch / eager_ms * 1e3,
        "speedup": eager_ms / fused_ms,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="small batches, few steps")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    if not fused.available():
        raise SystemExit(
            f"fused_step: the fused kernels are not available here: {fused.unavailable_reason()}"
        )
    from cnnkit.train.precision import native_bf16

    amp = native_bf16() is not None
    dtype = torch.bfloat16 if amp else torch.float32
    batch, repeat, blocks, steps = (16, 3, 1, 2) if args.smoke else (256, 20, 4, 10)
    layers = layers_table(batch, dtype, repeat)
    steps_rows = [step_compare(w, batch, blocks, steps, amp) for w in ((32, 64, 128), (64, 128, 256))]
    peak = training_peak(repeat=3, batch_divisor=8 if args.smoke else 1)
    for r in steps_rows:
        for mode in ("fused", "eager"):
            r[f"{mode}_mfu"] = r["train_gflop_per_image"] * r[f"{mode}_img_per_s"] / peak["P_gflops"]
    info = machine_info()
    report = {
        "batch": batch,
        "precision": str(dtype),
        "layers": layers,
        "steps": steps_rows,
        "peak": peak,
        "machine": info,
    }
    lines = [
        "# Fused CPU kernels against eager PyTorch (cnnkit.layers.fused)",
        "",
        f"Batch {batch}, {str(dtype).replace('torch.', '')}, channels_last, forward + backward, median of {repeat}.",
        "",
        "| pattern | channels | map | eager ms | fused ms | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['pattern']} | {r['channels']} | {r['size']}x{r['size']} | {r['eager_ms']:.2f} | {r['fused_ms']:.2f} "
        f"| {r['speedup']:.2f}x |"
        for r in layers
    ]
    lines += [
        "",
        f"Training step (fmnet as the recipes train it, SGD, label smoothing; {blocks} alternating blocks of "
        f"{steps} steps per mode; MFU against P = {peak['P_gflops']:.0f} GFLOP/s, {peak['dtype']}):",
        "",
        "| fmnet widths | precision | eager ms | fused ms | speed-up | eager img/s | fused img/s | eager MFU | fused MFU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {'/'.join(map(str, r['widths']))} | {r['precision']} | {r['eager_ms']:.1f} | {r['fused_ms']:.1f} "
        f"| {r['speedup']:.2f}x | {r['eager_img_per_s']:.0f} | {r['fused_img_per_s']:.0f} "
        f"| {r['eager_mfu']:.0%} | {r['fused_mfu']:.0%} |"
        for r in steps_rows
    ]
    lines += [
        "",
        f"Machine: {info['cpu']}, {info['threads']} threads, torch {info['torch']}, native bf16: {info['native_bf16']}. "
        "Command: `python benchmarks/fused_step.py`",
        "",
    ]
    write_results(args.output, RESULTS, "fused_step", args.smoke, report, "\n".join(lines))


if __name__ == "__main__":
    main()
