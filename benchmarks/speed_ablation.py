"""Which ingredient of the default recipe buys what (issue "Speed": the ablation table).

As airbench's paper measures each of its tricks, this trains ``cnnkit train`` (the default
recipe, through ``benchmarks/time_to_accuracy.py``'s ``run_seed``: the trainer itself) once
as it is and once with each ingredient switched off (or another changed: the activation, the
stem, the width, the previous default recipe), and records the final test top-1, the training time, the
images per second and the time to a target accuracy, raw and normalised by P (the
machine's 3x3-convolution training peak, ``benchmarks/machine.py``, measured before and
after the runs in this process).

One seed per row: a difference under about 0.3 points is within the seed-to-seed spread of
the default recipe (``time_to_accuracy_<kind>.md``), so the table reads as "which ingredients
matter", not as a precise ranking. Speed rows (precision, memory format) change the time,
not the accuracy.

Run: ``python benchmarks/speed_ablation.py`` (writes ``benchmarks/results/speed_ablation_<kind>.{json,md}``,
one per machine kind as ``time_to_accuracy.py``);
``--smoke`` runs two rows on 512 images (a CI check); ``--rows`` picks rows by name.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, training_peak, write_results
from time_to_accuracy import run_seed, time_to

RESULTS = Path(__file__).resolve().parent / "results"

# name -> (what changes, the config overrides); the first row is the recipe itself
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("the default recipe, as `cnnkit train` runs it", {}),
    "no-whiten": ("frozen patch-whitening stem -> a trained stem", {"whiten": False}),
    "no-ema": ("the EMA of the weights -> the weights themselves", {"model_ema": False}),
    "no-tta": (
        "six test-time views (mirror, +-1 px shifts) -> the image alone",
        {"tta": False, "tta_shift": 0},
    ),
    "gelu": ("ReLU -> GELU", {"act": "gelu"}),
    "stem-norm": ("stem conv -> act  to  conv -> batch norm -> act", {"model_kwargs": {"stem_norm": True}}),
    "+crop": ("+ random 2 px translation", {"crop_pad": 2}),
    "no-smoothing": ("label smoothing 0.1 -> 0", {"smoothing": 0.0}),
    "no-flip": ("random mirror (and the mirrored test views) -> none", {"hflip": 0.0}),
    "no-precise-bn": (
        "batch-norm statistics re-estimated on 512 images -> running averages",
        {"precise_bn": 0},
    ),
    "no-warmup": ("half an epoch of linear warm-up -> none", {"warmup_epochs": 0.0}),
    "no-nesterov": ("Nesterov momentum -> heavy-ball momentum", {"nesterov": False}),
    "fp32": ("bf16 autocast (where native) -> fp32", {"amp": "none"}),
    "nchw": ("channels_last -> NCHW", {"channels_last": False}),
    "8-epochs": ("10 -> 8 epochs", {"epochs": 8}),
    "6-epochs": ("10 -> 6 epochs", {"epochs": 6}),
    "no-fused": ("cnnkit's fused CPU kernels -> eager PyTorch layers (`--no-fused`)", {"fused": False}),
    "bias-all-epochs": (
        "the whitened stem's bias trained 2 epochs -> the whole run",
        {"whiten_bias_epochs": None},
    ),
    "bias-frozen": ("the whitened stem's bias trained 2 epochs -> frozen from the start", {"whiten_bias_epochs": 0}),
    "wide-strided": (
        "fmnet 48/96/192 whose first group downsamples by a stride-2 conv (no full-size max-pool), 6 epochs",
        {"model_kwargs": {"stem_norm": False, "widths": [48, 96, 192], "strided_first": True}, "epochs": 6},
    ),
    "old-default": (
        "the previous default: 4 epochs, + 2 px translation, GELU, stem batch norm; no whitening, EMA or test views",
        {
            "epochs": 4,
            "crop_pad": 2,
            "act": "gelu",
            "model_kwargs": {"stem_norm": True},
            "whiten": False,
            "model_ema": False,
            "tta": False,
            "tta_shift": 0,
        },
    ),
}


def markdown(report: dict[str, Any]) -> str:
    norm = report["P_gflops"] / 1000
    target = report["target"]
    base = report["rows"][0]
    lines = [
        "# The default recipe's ingredients, one at a time (Fashion-MNIST, full test set)",
        "",
        f"Each row: `cnnkit train` with one change, seed 0. Time to {100 * target:.0f}%: training seconds to the "
        "first epoch at or over it; normalised = seconds x P / 1000 (P: the machine's 3x3-convolution "
        f"training peak, {report['P_gflops']:.0f} GFLOP/s here, {report['P_dtype']}).",
        "",
        f"| row | change | final top-1 | vs default | train s (normalised) | img/s | precision | time to {100 * target:.0f}% (normalised) |",
        "|---|---|---:|---:|---|---:|---|---|",
    ]
    for r in report["rows"]:
        ttt = r["time_to_target_s"]
        ttt_text = "not reached" if ttt is None else f"{ttt:.0f} s ({ttt * norm:.0f})"
        amp = {"none": "fp32"}.get(r["amp"], r["amp"])
        lines.append(
            f"| {r['name']} | {r['change']} | {100 * r['final_top1']:.2f}% | "
            f"{100 * (r['final_top1'] - base['final_top1']):+.2f} | {r['train_seconds']:.0f} "
            f"({r['train_seconds'] * norm:.0f}) | {r['images_per_s']:.0f} | {amp} | {ttt_text} |"
        )
    m = report["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, SIMD {', '.join(m['simd'])}, "
        f"torch {m['torch']}, load average at start {m['load_avg_1min_at_start']:.2f}. "
        f"Command: `{report['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW")
    ap.add_argument("--target", type=float, default=0.94, help="test top-1 to time (default 0.94)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    ap.add_argument("--smoke", action="store_true", help="two rows, 2 epochs on 512 images (a CI check)")
    ap.add_argument(
        "--output", type=Path, default=None, help="JSON (default benchmarks/results/speed_ablation.json)"
    )
    args = ap.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    extra: dict[str, Any] = {"threads": threads}
    rows = args.rows
    if args.smoke:
        rows = ["default", "no-whiten"]
        extra.update({"epochs": 2, "warmup_epochs": 0.5, "train_subset": 512, "test_subset": 500})
    quick = {"repeat": 1, "batch_divisor": 16} if args.smoke else {}
    peaks = [training_peak(**quick)]
    done = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in rows:
            change, overrides = ROWS[name]
            r = run_seed("default", 0, Path(tmp) / name, {**extra, **overrides})
            r.update(name=name, change=change, time_to_target_s=time_to(r["curve"], args.target))
            done.append(r)
            print(f"{name}: top-1 {100 * r['final_top1']:.2f}% after {r['train_seconds']:.0f} s", flush=True)
    peaks.append(training_peak(**quick))
    best = max(peaks, key=lambda p: p["P_gflops"])
    report = {
        "command": "python benchmarks/speed_ablation.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "P_gflops": statistics.mean(p["P_gflops"] for p in peaks),
        "P_dtype": best["dtype"],
        "target": args.target,
        "rows": done,
    }
    write_results(args.output, RESULTS, "speed_ablation", args.smoke, report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
