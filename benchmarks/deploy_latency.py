"""CPU latency (batch 1) and throughput (batch 64) of the zoo's mobile models and a decomposed ResNet.

Issue "Accelerate and deploy": for ``mobilenet_v1`` and ``shufflenet_v1_g3`` (Howard et
al. 2017; Zhang et al. 2018) at 1x28x28 (small-input stem, 10 classes) and 3x224x224
(ImageNet, 1000 classes), and for the Fashion-MNIST ``resnet20`` trained and decomposed by
``benchmarks/deploy_decompose.py`` (read from its run folders when they exist): the
median milliseconds per forward pass at batch 1 and the images per second at batch 64,
fp32, in NCHW and channels_last memory format, each with batch norm as is and folded
into the convolutions (:func:`cnnkit.deploy.fuse_bn`). The variants of one model are
timed in interleaved rounds (:func:`cnnkit.deploy.compare_latency`), so the machine's
changing load does not favour whichever ran at a quiet moment. bf16 autocast is measured once,
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUN = ROOT / "runs" / "deploy-resnet20-fmnist"  # written by benchmarks/deploy_decompose.py
RUNS = {
    "resnet20 F-MNIST (trained)": RUN,
    "resnet20 F-MNIST (spatial separable, fine-tuned)": RUN.with_name(RUN.name + "-spatial_separable"),
}


def _models() -> list[tuple[str, torch.nn.Module, tuple[int, int, int]]]:
    from cnnkit.deploy.runs import load_run
    from cnnkit.models.registry import create_model

    out = []
    for name in ("mobilenet_v1", "shufflenet_v1_g3"):
        out.append(
            (f"{name} 28x28", create_model(name, num_classes=10, in_chans=1, small_input=True), (1, 28, 28))
        )
        out.append((f"{name} 224x224", create_model(name), (3, 224, 224)))
    for label, run in RUNS.items():
        if (run / "model.safetensors").exists():
            model, meta = load_run(run)
            size = int(meta["image_size"])
            out.append((label, model, (int(meta["in_chans"]), size, size)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS / "deploy_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cnnkit.analysis.summary import summarize
    from cnnkit.deploy.fuse import fuse_bn
    from cnnkit.deploy.latency import compare_latency, measure_latency

    rows: list[dict[str, Any]] = []
    for label, model, size in _models():
        model.eval()
        mult_adds = summarize(model, size).total_mult_adds
        big = size[1] >= 224
        # four variants of one model, timed in interleaved rounds (cnnkit.deploy.compare_latency)
        variants = {}
        for bn, m in (("bn", model), ("bn folded", fuse_bn(model))):
            variants[(bn, "nchw")] = m
            variants[(bn, "channels_last")] = copy.deepcopy(m).to(memory_format=torch.channels_last)
        timings = {}
        for fmt in ("nchw", "channels_last"):
            chosen = {f"{bn}|{f}": m for (bn, f), m in variants.items() if f == fmt}
            b1 = compare_latency(chosen, size, 1, rounds=10 if big else 30, channels_last=fmt != "nchw")
            b64 = compare_latency(
                chosen, size, 64, rounds=3 if big else 8, warmup=1, channels_last=fmt != "nchw"
            )
            timings.update({k: (b1[k], b64[k]) for k in chosen})
        for key, (b1, b64) in timings.items():
            bn, fmt = key.split("|")
            row = {
                "model": label,
                "input": "x".join(map(str, size)),
                "mult_adds": mult_adds,
                "bn": bn,
                "memory_format": fmt,
                "dtype": "fp32",
                "batch1_ms": b1.median_ms,
                "batch64_ms": b64.median_ms,
                "batch64_images_per_s": b64.images_per_s,
            }
            rows.append(row)
            print(
                f"{label:50s} {bn:9s} {fmt:13s} b1 {b1.median_ms:8.2f} ms   b64 {b64.images_per_s:8.0f} img/s",
                flush=True,
            )
    # bf16 once, small: MobileNet at 28x28, batch 64, NCHW, beside its fp32 row
    from cnnkit.models.registry import create_model

    small = create_model("mobilenet_v1", num_classes=10, in_chans=1, small_input=True).eval()
    fp32 = measure_latency(small, (1, 28, 28), 64, budget_s=2.0, min_repeats=3, max_repeats=10)
    bf16 = measure_latency(small, (1, 28, 28), 64, min_repeats=2, max_repeats=2, dtype=torch.bfloat16)
    bf16_row = {
        "model": "mobilenet_v1 28x28",
        "batch": 64,
        "fp32_ms": fp32.median_ms,
        "bf16_autocast_ms": bf16.median_ms,
        "bf16_slowdown": bf16.median_ms / fp32.median_ms,
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
