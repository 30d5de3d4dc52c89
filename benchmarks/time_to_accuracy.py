"""Time to accuracy of cnnkit's named recipes on Fashion-MNIST (issue "Speed", targets 1-3).

Each seed trains ``cnnkit train --recipe R --seed S`` through ``cnnkit.train.loop.train``
(the trainer itself: no second loop) and reads the run's ``metrics.jsonl``. Training time
is the sum of the epochs' ``epoch_seconds`` (the whole loop: batch assembly, augmentation,
forward, backward, optimiser; evaluation is timed separately and excluded). The time to
a target accuracy is the training time up to the end of the first epoch whose test top-1
reaches it (the full 10,000-image test set, with the recipe's own evaluation, e.g. EMA
weights and test-time flips); a seed that never reaches it counts as "not reached".
Reported: the median over seeds (and the range) of the final top-1, the training time
and the time to target.

Times are reported raw and **normalised** (issue "Speed"): seconds x P / 1000, where P is
the machine's best 3x3-convolution training throughput in GFLOP/s (forward and both
backward passes, best of fp32 and native bf16, ``benchmarks/machine.py``
``training_peak``), measured in this process before and after the seeds (their mean): the
seconds the run would take on a machine with a 1 TFLOP/s peak. The time limits are in
normalised seconds. Model-FLOPs utilisation (MFU) = training FLOPs per image (3 x the
forward's, ``cnnkit.summarize``) x the run's images/s (median over its epochs) / P.

Run: ``python benchmarks/time_to_accuracy.py --recipe default --seeds 3`` (writes the
recipe's entry of ``benchmarks/results/time_to_accuracy_<kind>.json`` and the table in
``.md``, one file per machine kind: ``avx2``, ``avx512-bf16``, ``amx-bf16``, ``cuda``);
``--smoke`` is the seconds-long check ``.ci/run`` runs (2 epochs on 512 images).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_kind, training_peak

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = {"default": 0.94, "accurate": 0.95}
TIME_LIMITS = {"default": 120.0, "accurate": 900.0}  # normalised seconds (issue "Speed")


def run_seed(recipe: str, seed: int, out: Path, extra: dict[str, Any]) -> dict[str, Any]:
    from cnnkit.train.config import config_from_args
    from cnnkit.train.loop import train

    cfg = config_from_args({"recipe": recipe, "seed": seed, "output": str(out), "progress": False, **extra})
    t0 = time.perf_counter()
    final = train(cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    elapsed, curve = 0.0, []
    for r in rows:
        elapsed += r["epoch_seconds"]
        curve.append({"epoch": r["epoch"], "train_seconds": elapsed, "test_top1": r["test_top1"]})
    return {
        "seed": seed,
        "model": cfg.model,
        "model_kwargs": cfg.model_kwargs,
        "epochs": cfg.epochs,
        "final_top1": final["test_top1"],
        "train_seconds": final["train_seconds"],
        "eval_seconds": final["eval_seconds"],
        "wall_seconds": wall,
        "images_per_s": statistics.median(r["images_per_s"] for r in rows),
        "amp": cfg_written(out).get("amp"),
        "curve": curve,
    }


def cfg_written(out: Path) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load((out / "config.yaml").read_text()))


def training_flops_per_image(model: str, model_kwargs: dict[str, Any]) -> int:
    from cnnkit.analysis import summarize
    from cnnkit.models.registry import create_model

    with torch.device("meta"):
        net = create_model(model, num_classes=10, in_chans=1, small_input=True, **model_kwargs)
    return 3 * summarize(net, (1, 28, 28)).total_flops  # forward + backward (2 x forward)


def time_to(curve: list[dict[str, Any]], target: float) -> float | None:
    return next((c["train_seconds"] for c in curve if c["test_top1"] >= target), None)


def summarise(
    recipe: str, runs: list[dict[str, Any]], target: float, limit: float, p_gflops: float
) -> dict[str, Any]:
    """The seeds' medians; ``limit`` in normalised seconds (x ``p_gflops`` / 1000)."""
    norm = p_gflops / 1000
    finals = [r["final_top1"] for r in runs]
    times = [r["train_seconds"] for r in runs]
    reach = [time_to(r["curve"], target) for r in runs]
    reached = [t for t in reach if t is not None]
    # the best accuracy reached within the time limit, per seed (end of an epoch)
    within = [
        max((c["test_top1"] for c in r["curve"] if c["train_seconds"] * norm <= limit), default=None)
        for r in runs
    ]
    flops = training_flops_per_image(runs[0]["model"], runs[0]["model_kwargs"])
    mfu = statistics.median(r["images_per_s"] for r in runs) * flops / 1e9 / p_gflops
    ttt = statistics.median(reach) if len(reached) == len(runs) else None
    return {
        "P_gflops": p_gflops,
        "median_normalised_train_seconds": statistics.median(times) * norm,
        "median_normalised_time_to_target": None if ttt is None else ttt * norm,
        "training_gflop_per_image": flops / 1e9,
        "mfu": mfu,
        "recipe": recipe,
        "target_top1": target,
        "time_limit_s": limit,
        "seeds": len(runs),
        "median_final_top1": statistics.median(finals),
        "final_top1_range": [min(finals), max(finals)],
        "median_train_seconds": statistics.median(times),
        "train_seconds_range": [min(times), max(times)],
        "median_time_to_target_s": ttt,
        "seeds_reaching_target": len(reached),
        "best_top1_within_limit": [w for w in within],
        "met": ttt is not None and ttt * norm <= limit,
        "runs": runs,
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Time to accuracy on Fashion-MNIST (training time; evaluation excluded)",
        "",
        "Normalised seconds = seconds x P / 1000 (P: the machine's 3x3-convolution training peak, GFLOP/s).",
        "",
        "| recipe | model | epochs | precision | seeds | final top-1, median (range) | train time, median "
        "(range) | normalised | target | time to target (normalised) | best top-1 within the limit | MFU | met |",
        "|---|---|---:|---|---:|---|---|---:|---|---|---|---:|---|",
    ]
    for name, r in results["recipes"].items():
        run0 = r["runs"][0]
        model = run0["model"] + (f" {run0['model_kwargs']}" if run0["model_kwargs"] else "")
        ttt = (
            f"{r['median_time_to_target_s']:.0f} s ({r['median_normalised_time_to_target']:.0f})"
            if r["median_time_to_target_s"] is not None
            else f"not reached ({r['seeds_reaching_target']}/{r['seeds']} seeds)"
        )
        within = ", ".join("-" if w is None else f"{100 * w:.2f}%" for w in r["best_top1_within_limit"])
        lo, hi = r["final_top1_range"]
        tlo, thi = r["train_seconds_range"]
        amp = {"none": "fp32", None: "?"}.get(run0.get("amp"), run0.get("amp"))
        lines.append(
            f"| {name} | {model} | {run0['epochs']} | {amp} | {r['seeds']} | {100 * r['median_final_top1']:.2f}% "
            f"({100 * lo:.2f}-{100 * hi:.2f}) | {r['median_train_seconds']:.0f} s ({tlo:.0f}-{thi:.0f}) | "
            f"{r['median_normalised_train_seconds']:.0f} | {100 * r['target_top1']:.0f}% in {r['time_limit_s']:.0f} "
            f"| {ttt} | {within} | {100 * r['mfu']:.0f}% | {'yes' if r['met'] else 'no'} |"
        )
    m = results["machine"]
    lines += [
        "",
        '"-" in "best top-1 within the limit": no epoch ends within the (normalised) time limit.',
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, torch {m['torch']}, native bf16: "
        f"{m['native_bf16']}, load average at start {m['load_avg_1min_at_start']:.2f}; "
        + ", ".join(f"{k}: P = {r['P_gflops']:.0f} GFLOP/s" for k, r in results["recipes"].items())
        + ".",
        f"Commands: {'; '.join(f'`{c}`' for c in results['commands'].values())}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="default", choices=sorted(TARGETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--target", type=float, default=None, help="test top-1 to reach (default: the issue's)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    ap.add_argument("--smoke", action="store_true", help="2 epochs on 512 images, 1 seed (a CI check)")
    ap.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON (default benchmarks/results/time_to_accuracy_<machine kind>.json)",
    )
    args = ap.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    extra: dict[str, Any] = {"threads": threads}
    if args.smoke:
        args.seeds = 1
        extra.update({"epochs": 2, "warmup_epochs": 0.5, "train_subset": 512, "test_subset": 500})
    out_json = args.output or RESULTS / (
        "time_to_accuracy_smoke.json" if args.smoke else f"time_to_accuracy_{machine_kind()}.json"
    )
    target = args.target if args.target is not None else TARGETS[args.recipe]
    quick = {"repeat": 1, "batch_divisor": 16} if args.smoke else {}
    peaks = [training_peak(**quick)]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            r = run_seed(args.recipe, seed, Path(tmp) / f"seed{seed}", extra)
            runs.append(r)
            print(
                f"{args.recipe} seed {seed}: top-1 {100 * r['final_top1']:.2f}% after {r['train_seconds']:.0f} s "
                f"of training; per epoch: "
                + ", ".join(f"{100 * c['test_top1']:.2f}%@{c['train_seconds']:.0f}s" for c in r["curve"]),
                flush=True,
            )
    peaks.append(training_peak(**quick))
    p_gflops = statistics.mean(p["P_gflops"] for p in peaks)
    print(
        f"P = {p_gflops:.0f} GFLOP/s (" + ", ".join(f"{p['P_gflops']:.0f} {p['dtype']}" for p in peaks) + ")"
    )
    results: dict[str, Any] = {"recipes": {}, "commands": {}}
    if out_json.exists():
        results = json.loads(out_json.read_text())
    results["machine"] = machine_info()
    results["recipes"][args.recipe] = summarise(args.recipe, runs, target, TIME_LIMITS[args.recipe], p_gflops)
    results["recipes"][args.recipe]["peaks"] = peaks
    results["commands"][args.recipe] = "python benchmarks/time_to_accuracy.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    out_json.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {out_json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
