"""Which range-test rule gives a good peak rate for a cosine run (``cnnkit.train.lr_find``).

For each model (fmnet, resnet20) on 5,000 Fashion-MNIST training images, the range test
(Smith 2017, sec. 3.3) runs with the trainer's own optimizer (SGD, Nesterov momentum 0.9,
weight decay 5e-4, batch 128) on the model the trainer would build (seed 0), at 50, 100 and
200 steps and several batch orders. Each candidate rule (``min/10``, ``valley``, ``steep``)
reads a rate off the 100-step curve of the first batch order; the trainer itself
(``cnnkit.train.loop.train``: no second loop) then trains 3 epochs (cosine, half an epoch of
warmup, no augmentation) at each rule's rate and at a sweep of fixed rates, and reports
test top-1 on a fixed 2,000-image test subset. The rule chosen is the one whose accuracy is
closest to the best swept rate's, in the worse of the two models. The spread of each rule's
rate over batch orders and test lengths says how many steps the test needs; its cost is
given in seconds and in epochs of training.

Run: ``python benchmarks/lr_find_rule.py`` (19 minutes on 2 cores shared with another job,
one thread; ``--orders 2`` saves about 3; writes ``benchmarks/results/lr_find_rule.json``
and ``.md``); ``--smoke`` is a seconds-long check (fmnet, 512 images, 1 epoch; writes
nothing unless ``--output`` is given).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info

from cnnkit.data.sources import DatasetTensors, load_dataset, normalize
from cnnkit.models.registry import create_model
from cnnkit.train.config import TrainConfig
from cnnkit.train.loop import train
from cnnkit.train.lr_find import RULES, choose_lr, find_lr
from cnnkit.train.optim import build_optimizer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# the trainer's settings for these runs (TrainConfig fields); recipe=None: no augmentation
RUN = {"dataset": "fashion-mnist", "batch_size": 128, "warmup_epochs": 0.5, "channels_last": True, "seed": 0}
RULE_STEPS = 100  # the test length whose curve (batch order 0) sets each rule's rate for training


def range_test(model_name: str, data: DatasetTensors, steps: int, order_seed: int) -> dict[str, Any]:
    """One range test on the trainer's initial model; each rule's rate read off the same curve."""
    torch.manual_seed(RUN["seed"])  # the trainer seeds, then builds: the very model it would train
    model = create_model(model_name, num_classes=data.num_classes, in_chans=1, small_input=True)
    model = model.to(memory_format=torch.channels_last)
    mean, std = data.mean_std()
    batch, n = int(RUN["batch_size"]), len(data.train_y)
    per_epoch = n // batch
    g = torch.Generator().manual_seed(order_seed)
    orders = [torch.randperm(n, generator=g) for _ in range(steps // per_epoch + 1)]

    def step_loss(i: int) -> torch.Tensor:
        order, k = orders[i // per_epoch], i % per_epoch
        idx = order[k * batch : (k + 1) * batch]
        x = normalize(data.train_x[idx], mean, std, channels_last=True)
        return F.cross_entropy(model(x), data.train_y[idx])

    def make_optimizer(lr: float) -> torch.optim.Optimizer:
        return build_optimizer(model, "sgd", lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)

    result = find_lr(model, step_loss, make_optimizer, steps=steps)
    rules = {rule: choose_lr(result.lrs, result.smoothed, rule=rule) for rule in RULES}
    return {
        "steps": steps,
        "order_seed": order_seed,
        "steps_taken": len(result.lrs),
        "seconds": result.seconds,
        "lr": {rule: lr for rule, (lr, _) in rules.items()},
        "how": {rule: how for rule, (_, how) in rules.items()},
        # lr of step i: 1e-5 * (10 / 1e-5) ** (i / (steps - 1)); losses to 4 significant digits
        "curve": {k: [_round(v) for v in result.to_dict()[k]] for k in ("losses", "smoothed")},
    }


def _round(v: float | None) -> float | None:
    return None if v is None else float(f"{v:.4g}")


def to_json(results: dict[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line (the curves would take a line per number)."""
    text = json.dumps(results, indent=2)
    numbers = re.compile(r"\[\s+((?:-?[0-9.e+-]+|null)(?:,\s+(?:-?[0-9.e+-]+|null))*)\s+\]")
    return numbers.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def train_at(model_name: str, lr: float, out: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """``cnnkit train`` at peak rate ``lr``: test top-1 after the last epoch, seconds per epoch."""
    cfg = TrainConfig(
        **{
            **RUN,
            "recipe": None,
            "model": model_name,
            "lr": lr,
            "output": str(out),
            "progress": False,
            **extra,
        }
    )
    final = train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "lr": lr,
        "test_top1": final["test_top1"],
        "epoch_seconds": statistics.mean(r["epoch_seconds"] for r in rows),
        "curve": [r["test_top1"] for r in rows],
    }


def study(model_name: str, args: argparse.Namespace, extra: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """One model: the range tests, then training at each rule's rate and at the sweep."""
    data = load_dataset("fashion-mnist", train_subset=extra["train_subset"], seed=0)
    tests = []
    for steps in args.steps:
        for order in range(args.orders):
            t = range_test(model_name, data, steps, order)
            tests.append(t)
            rates = ", ".join(f"{r} {v:.3g}" for r, v in t["lr"].items())
            head = f"{model_name} range test {steps} steps, order {order}"
            print(f"{head}: {t['steps_taken']} taken, {t['seconds']:.1f} s, {rates}", flush=True)
    key = next(t for t in tests if t["steps"] == args.rule_steps and t["order_seed"] == 0)
    trained: dict[float, dict[str, Any]] = {}
    for lr in [*key["lr"].values(), *args.sweep]:
        if round(lr, 6) not in trained:
            trained[round(lr, 6)] = r = train_at(model_name, lr, tmp / f"{model_name}-{lr:.6g}", extra)
            top1, epoch_s = 100 * r["test_top1"], r["epoch_seconds"]
            print(f"{model_name} lr {lr:.4g}: top-1 {top1:.2f}% ({epoch_s:.1f} s/epoch)", flush=True)
    sweep = [trained[round(lr, 6)] for lr in args.sweep]
    best = max(sweep, key=lambda r: r["test_top1"])
    rules = {}
    for rule, lr in key["lr"].items():
        r = trained[round(lr, 6)]
        rules[rule] = {**r, "gap_to_best_swept": r["test_top1"] - best["test_top1"]}
    epoch_s = statistics.median(r["epoch_seconds"] for r in trained.values())
    return {
        "rules": rules,
        "sweep": sweep,
        "best_swept": best,
        "epoch_seconds": epoch_s,
        "steps_per_epoch": len(data.train_y) // int(RUN["batch_size"]),
        "range_tests": tests,
        "stability": stability(tests, epoch_s),
    }


def stability(tests: list[dict[str, Any]], epoch_seconds: float) -> dict[str, Any]:
    """Per test length: each rule's rate over batch orders (median, min, max, max/min), and its cost."""
    out: dict[str, Any] = {}
    for steps in sorted({t["steps"] for t in tests}):
        same = [t for t in tests if t["steps"] == steps]
        seconds = statistics.median(t["seconds"] for t in same)
        row: dict[str, Any] = {"seconds": seconds, "epochs_of_training": seconds / epoch_seconds}
        for rule in RULES:
            lrs = [t["lr"][rule] for t in same]
            low, high = min(lrs), max(lrs)
            row[rule] = {"median": statistics.median(lrs), "min": low, "max": high, "spread": high / low}
        out[str(steps)] = row
    return out


def verdict(models: dict[str, Any]) -> dict[str, Any]:
    """The rule whose worst gap to the best swept rate (over the models) is smallest; ties: the mean gap."""
    gaps = {rule: [m["rules"][rule]["gap_to_best_swept"] for m in models.values()] for rule in RULES}
    chosen = max(RULES, key=lambda r: (min(gaps[r]), statistics.mean(gaps[r])))
    return {"chosen": chosen, "gaps": gaps}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Range-test rule for the peak rate of a cosine run (Fashion-MNIST, 5,000 images)",
        "",
        f"3 epochs, cosine with {RUN['warmup_epochs']} epoch of warmup, SGD Nesterov 0.9, weight decay 5e-4, "
        f"batch {RUN['batch_size']}, no augmentation; test top-1 on 2,000 test images; one training seed "
        "(differences under ~1 point are within the noise of one run).",
        "",
        "| model | peak rate from | lr | test top-1 | vs best swept |",
        "|---|---|---:|---:|---:|",
    ]
    for name, m in results["models"].items():
        best = m["best_swept"]["test_top1"]
        for rule, r in m["rules"].items():
            what = f"rule {rule} ({results['rule_steps']} steps)"
            top1, gap = 100 * r["test_top1"], 100 * r["gap_to_best_swept"]
            lines.append(f"| {name} | {what} | {r['lr']:.3g} | {top1:.2f}% | {gap:+.2f} |")
        for r in m["sweep"]:
            mark = " (best)" if r["lr"] == m["best_swept"]["lr"] else ""
            top1, gap = 100 * r["test_top1"], 100 * (r["test_top1"] - best)
            lines.append(f"| {name} | sweep{mark} | {r['lr']:.3g} | {top1:.2f}% | {gap:+.2f} |")
    v = results["verdict"]
    worst = ", ".join(f"{r} {100 * min(g):+.2f}" for r, g in v["gaps"].items())
    lines += ["", f"**Chosen rule: {v['chosen']}** (worst gap to the best swept rate, points: {worst}).", ""]
    lines += stability_table(results)
    m = results["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, torch {m['torch']}, "
        f"load average at start {m['load_avg_1min_at_start']:.2f}. "
        f"Whole script: {results['total_seconds']:.0f} s.",
        f"Command: `{results['command']}`",
        "",
    ]
    return "\n".join(lines)


def stability_table(results: dict[str, Any]) -> list[str]:
    lines = [
        f"## Stability and cost of the test ({results['orders']} batch orders per length)",
        "",
        "Each rule's rate: median over batch orders (max/min ratio). Cost: median seconds of one test, "
        "and in epochs of training (an epoch = the measured seconds of a training epoch).",
        "",
        "| model | steps | " + " | ".join(RULES) + " | seconds | epochs |",
        "|---|---:|" + "---|" * len(RULES) + "---:|---:|",
    ]
    for name, m in results["models"].items():
        for steps, row in m["stability"].items():
            cells = " | ".join(f"{row[r]['median']:.3g} ({row[r]['spread']:.2f}x)" for r in RULES)
            lines.append(
                f"| {name} | {steps} | {cells} | {row['seconds']:.1f} | {row['epochs_of_training']:.2f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["fmnet", "resnet20"])
    ap.add_argument("--sweep", nargs="+", type=float, default=[0.02, 0.05, 0.1, 0.2, 0.4])
    ap.add_argument("--steps", nargs="+", type=int, default=[50, 100, 200], help="range-test lengths")
    ap.add_argument("--rule-steps", type=int, default=RULE_STEPS)
    ap.add_argument("--orders", type=int, default=3, help="batch orders per range-test length")
    ap.add_argument("--epochs", type=int, default=3)
    # one thread: with another process on the 2 cores, 2 OpenMP threads ran 8x slower per step (measured)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="fmnet, 512 images, 1 epoch: seconds")
    ap.add_argument(
        "--output", type=Path, default=None, help="JSON (default benchmarks/results/lr_find_rule.json)"
    )
    args = ap.parse_args(argv)
    extra: dict[str, Any] = {
        "epochs": args.epochs,
        "threads": args.threads,
        "train_subset": 5000,
        "test_subset": 2000,
    }
    if args.smoke:
        args.models, args.sweep, args.steps, args.rule_steps, args.orders = ["fmnet"], [0.1], [20], 20, 1
        extra.update({"epochs": 1, "train_subset": 512, "test_subset": 256, "warmup_epochs": 0.0})
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine_info(),
        "rule_steps": args.rule_steps,
        "orders": args.orders,
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["models"] = {name: study(name, args, extra, Path(tmp)) for name in args.models}
    results["verdict"] = verdict(results["models"])
    results["total_seconds"] = time.perf_counter() - t0
    results["command"] = "python benchmarks/lr_find_rule.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    md = markdown(results)
    print(md)
    out_json = args.output or (None if args.smoke else RESULTS / "lr_find_rule.json")
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(to_json(results))
        out_json.with_suffix(".md").write_text(md)
        print(f"wrote {out_json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
