"""CPU latency (batch 1) and throughput (batch 64) of the zoo's mobile models and a decomposed ResNet.

Issue "Accelerate and deploy": for ``mobilenet_v1`` and ``shufflenet_v1_g3`` (Howard et
al. 2017; Zhang et al. 2018) at 1x28x28 (small-input stem, 10 classes) and 3x224x224
(ImageNet, 1000 classes), and for the Fashion-MNIST ``resnet20`` trained and decomposed by
``benchmarks/deploy_decompose.py`` (read from its run folders when they exist): the
median milliseconds per forward pass at batch 1 and the images per second at batch 64,
fp32, in NCHW and channels_last memory format, each with batch norm as is and folded
into the convolutions (:func:`cnnkit.deploy.fuse_bn`). The four variants of one model
are timed together in interleaved rounds (:func:`cnnkit.deploy.compare_latency`), so the
machine's changing load does not favour whichever ran at a quiet moment; the
channels_last variants convert the NCHW input batch themselves. The trained and the
decomposed resnet20 form one group (eight variants interleaved); other rows of
different models were timed at different moments, so compare within a model. bf16 autocast is measured once,
on one small configuration only: this CPU (AVX2, no AVX512-BF16) runs it about 10x
slower than fp32, so sweeping it would only burn time.

Run: ``python benchmarks/deploy_latency.py --threads 2`` (a few minutes); writes
``benchmarks/results/deploy_latency.{json,md}``. The machine's 2 cores are shared, so
the numbers are medians of noisy timings: compare rows of one file, not across files.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUN = ROOT / "runs" / "deploy-resnet20-fmnist"  # written by benchmarks/deploy_decompose.py
RUNS = {
    "resnet20 F-MNIST (trained)": RUN,
    "resnet20 F-MNIST (spatial separable, fine-tuned)": RUN.with_name(RUN.name + "-spatial_separable"),
}


class _ChannelsLast(nn.Module):
    """The model with channels_last weights, fed an NCHW batch it converts first (as a deployment would)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


class _Bf16Autocast(nn.Module):
    """The model under CPU bf16 autocast."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(x)


def _groups() -> list[list[tuple[str, nn.Module, tuple[int, int, int]]]]:
    """Models to time together: each mobile model alone, the trained and decomposed resnet20 as one group."""
    from cnnkit.models.registry import create_model
    from cnnkit.run import load_run

    groups = []
    for name in ("mobilenet_v1", "shufflenet_v1_g3"):
        small = create_model(name, num_classes=10, in_chans=1, small_input=True)
        groups.append([(f"{name} 28x28", small, (1, 28, 28))])
        groups.append([(f"{name} 224x224", create_model(name), (3, 224, 224))])
    resnets = []
    for label, run in RUNS.items():
        if (run / "model.safetensors").exists():
            model, meta = load_run(run)
            size = int(meta["image_size"])
            resnets.append((label, model, (int(meta["in_chans"]), size, size)))
    if resnets:
        groups.append(resnets)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS / "deploy_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cnnkit.analysis.summary import summarize
    from cnnkit.deploy.fuse import fuse_bn
    from cnnkit.deploy.latency import compare_latency

    rows: list[dict[str, Any]] = []
    for group in _groups():
        # every variant of the group's models timed together in interleaved rounds
        variants: dict[str, nn.Module] = {}
        info = {}
        for label, model, size in group:
            model.eval()
            info[label] = (size, summarize(model, size).total_mult_adds)
            for bn, m in (("bn", model), ("bn folded", fuse_bn(model))):
                variants[f"{label}|{bn}|nchw"] = m
                variants[f"{label}|{bn}|channels_last"] = _ChannelsLast(m)
        size = group[0][2]
        big = size[1] >= 224
        b1 = compare_latency(variants, size, 1, rounds=10 if big else 30)
        b64 = compare_latency(variants, size, 64, rounds=3 if big else 8, warmup=1)
        for key in variants:
            label, bn, fmt = key.split("|")
            row = {
                "model": label,
                "input": "x".join(map(str, info[label][0])),
                "mult_adds": info[label][1],
                "bn": bn,
                "memory_format": fmt,
                "dtype": "fp32",
                "batch1_ms": b1[key].median_ms,
                "batch64_ms": b64[key].median_ms,
                "batch64_images_per_s": b64[key].images_per_s,
            }
            rows.append(row)
            print(
                f"{label:50s} {bn:9s} {fmt:13s} b1 {row['batch1_ms']:8.2f} ms   "
                f"b64 {row['batch64_images_per_s']:8.0f} img/s",
                flush=True,
            )
    # bf16 once, small: MobileNet at 28x28, batch 64, NCHW, interleaved with fp32
    from cnnkit.models.registry import create_model

    small = create_model("mobilenet_v1", num_classes=10, in_chans=1, small_input=True).eval()
    pair = compare_latency({"fp32": small, "bf16": _Bf16Autocast(small)}, (1, 28, 28), 64, rounds=2, warmup=1)
    bf16_row = {
        "model": "mobilenet_v1 28x28",
        "batch": 64,
        "fp32_ms": pair["fp32"].median_ms,
        "bf16_autocast_ms": pair["bf16"].median_ms,
        "bf16_slowdown": pair["bf16"].median_ms / pair["fp32"].median_ms,
    }
    print(f"bf16 autocast: {bf16_row['bf16_slowdown']:.1f}x slower than fp32 (mobilenet_v1 28x28, batch 64)")

    result = {
        "threads": args.threads,
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "note": "2 shared CPU cores: medians of noisy timings",
        "rows": rows,
        "bf16": bf16_row,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# CPU inference latency ({args.threads} threads, torch {torch.__version__}, fp32)",
        "",
        "| model | input | mult-adds (M) | BN | memory format | batch 1 (ms) | batch 64 (img/s) |",
        "|---|---|---:|---|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['input']} | {r['mult_adds'] / 1e6:.1f} | {r['bn']} | {r['memory_format']} | "
            f"{r['batch1_ms']:.2f} | {r['batch64_images_per_s']:.0f} |"
        )
    lines += [
        "",
        f"bf16 autocast, mobilenet_v1 28x28 batch 64: {bf16_row['bf16_autocast_ms']:.0f} ms vs fp32 "
        f"{bf16_row['fp32_ms']:.0f} ms ({bf16_row['bf16_slowdown']:.1f}x slower; no AVX512-BF16 on this CPU).",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
