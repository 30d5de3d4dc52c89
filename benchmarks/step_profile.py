"""Where a training step's time goes (issue "Speed", target 3), measured with ``torch.profiler``.

Trains the default recipe (``cnnkit train`` with no flags but a training subset and one
epoch) under the profiler. The trainer marks its forward pass (with the loss), backward
pass and optimizer step (with the EMA update) with ``record_function`` scopes
(``cnnkit.forward``, ``cnnkit.backward``, ``cnnkit.optimizer``); everything else in the
epoch's training time (``metrics.jsonl``'s ``epoch_seconds``: batch assembly, augmentation,
the loss's bookkeeping, Python) is **outside** the step's work. Reported: each scope's share
of the training time, the outside share (target: at most 10%), the operators with the most
self time, and the run's model-FLOPs utilisation against P (``benchmarks/machine.py``
``training_peak``, measured in this process). The profiler's own overhead inflates every
share a little, the outside one included.

Run: ``python benchmarks/step_profile.py`` (writes ``benchmarks/results/step_profile_<kind>.{json,md}``,
one per machine kind as ``time_to_accuracy.py``);
``--smoke`` is a seconds-long check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, training_peak, write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SCOPES = ("cnnkit.forward", "cnnkit.backward", "cnnkit.optimizer")


def full_run_amp() -> str:
    """The precision a full default run (4 epochs of Fashion-MNIST, 936 steps) chooses here:
    the profiled run is too short for ``--amp auto`` to time it, so it is told the choice."""
    from cnnkit.models.registry import create_model
    from cnnkit.train.precision import machine_amp, timed_amp

    amp, _ = machine_amp("cpu", run_steps=4 * (60_000 // 256))
    if amp == "auto":
        net = create_model("fmnet", num_classes=10, in_chans=1).to(memory_format=torch.channels_last)
        x = torch.randn(256, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        amp, _ = timed_amp(net, x, torch.randint(0, 10, (256,)))
    return amp


def profile_run(extra: dict[str, Any], out: Path) -> dict[str, Any]:
    from cnnkit.analysis import summarize
    from cnnkit.models.registry import create_model
    from cnnkit.train.config import config_from_args
    from cnnkit.train.loop import train

    cfg = config_from_args({"output": str(out), "progress": False, **extra})
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_s = sum(r["epoch_seconds"] for r in rows)
    events = prof.key_averages()
    scope_s = {e.key: e.cpu_time_total / 1e6 for e in events if e.key in SCOPES}
    ops = sorted(
        (e for e in events if not e.key.startswith("cnnkit.") and not e.key.startswith("ProfilerStep")),
        key=lambda e: -e.self_cpu_time_total,
    )[:15]
    with torch.device("meta"):
        net = create_model(cfg.model, num_classes=10, in_chans=1, small_input=True, **cfg.model_kwargs)
    flops = 3 * summarize(net, (1, 28, 28)).total_flops
    images_per_s = rows[-1]["images_per_s"]
    return {
        "model": cfg.model,
        "config": {k: extra[k] for k in extra if k != "threads"},
        "amp": __import__("yaml").safe_load((out / "config.yaml").read_text())["amp"],
        "train_seconds": train_s,
        "scopes_seconds": scope_s,
        "outside_share": 1 - sum(scope_s.values()) / train_s,
        "top_ops": [
            {"op": e.key, "self_seconds": e.self_cpu_time_total / 1e6, "calls": e.count} for e in ops
        ],
        "images_per_s": images_per_s,
        "training_gflop_per_image": flops / 1e9,
    }


def markdown(report: dict[str, Any]) -> str:
    r, m = report["run"], report["machine"]
    t = r["train_seconds"]
    lines = [
        "# Where the default recipe's training time goes (torch.profiler)",
        "",
        f"{r['model']}, {r['config']}, precision {r['amp']}: {t:.1f} s of training "
        f"(under the profiler), {r['images_per_s']:.0f} img/s.",
        "",
        "| part | seconds | share |",
        "|---|---:|---:|",
        *(
            f"| {k.removeprefix('cnnkit.')} | {v:.2f} | {100 * v / t:.1f}% |"
            for k, v in r["scopes_seconds"].items()
        ),
        f"| outside (data, augmentation, Python) | {t * r['outside_share']:.2f} | {100 * r['outside_share']:.1f}% |",
        "",
        "Operators with the most self time (the run's evaluation and batch-norm re-estimation included):",
        "",
        "| operator | self seconds | calls |",
        "|---|---:|---:|",
        *(f"| {o['op']} | {o['self_seconds']:.2f} | {o['calls']} |" for o in r["top_ops"]),
        "",
        f"Model-FLOPs utilisation: {r['training_gflop_per_image']:.3f} GFLOP per training image x "
        f"{r['images_per_s']:.0f} img/s = {r['training_gflop_per_image'] * r['images_per_s']:.0f} GFLOP/s "
        f"= {100 * report['mfu']:.0f}% of P = {report['P_gflops']:.0f} GFLOP/s ({report['P_dtype']}).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, torch {m['torch']}, native bf16: "
        f"{m['native_bf16']}. Command: `{report['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--images", type=int, default=15360, help="training subset (60 steps at batch 256)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--smoke", action="store_true", help="1,024 images and a quick peak (a CI check)")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    images = 1024 if args.smoke else args.images
    extra = {
        "threads": threads,
        "epochs": 1,
        "warmup_epochs": 0.25,
        "train_subset": images,
        "test_subset": 500,
        "amp": full_run_amp(),
    }
    peak = training_peak(**({"repeat": 1, "batch_divisor": 16} if args.smoke else {}))
    with tempfile.TemporaryDirectory() as tmp:
        run = profile_run(extra, Path(tmp) / "run")
    achieved = run["training_gflop_per_image"] * run["images_per_s"]
    report = {
        "command": "python benchmarks/step_profile.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "P_gflops": peak["P_gflops"],
        "P_dtype": peak["dtype"],
        "mfu": achieved / peak["P_gflops"],
        "run": run,
    }
    write_results(args.output, RESULTS, "step_profile", args.smoke, report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
