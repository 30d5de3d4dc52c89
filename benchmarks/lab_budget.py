"""The lab's time per experiment at a budget, estimated before anything trains (issue "The
lab's verdicts at a budget that can decide them": the standard budget in about 100 minutes on
2 cores, with the time per experiment said).

For every arm of every training experiment: its :class:`TrainConfig` exactly as ``cnnkit lab
run`` builds it (:func:`cnnkit.lab.runner.arm_config`), its model as the trainer builds it
(:func:`cnnkit.train.build.build_model`, on an empty stand-in of the data's shape), then
``--steps`` timed SGD steps (forward, backward, optimizer; after one warm-up step) on a random
batch of the budget's size, and one timed evaluation forward pass. The estimate of a run is
the training steps the budget takes (epochs x images / batch) times the step's median time,
plus each epoch's evaluation of the test images; an experiment's is the sum over its arms and
seeds. Data loading, augmentation, PreciseBN, checkpoints and process start are not in it
(a few percent for these narrow nets; compare with a real run's ``train_seconds``).

Run: ``python benchmarks/lab_budget.py --budget standard --threads 2`` (writes
``benchmarks/results/lab_budget_standard.md``); ``--experiments`` picks some.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# the data the lab trains on: (channels, side, classes, training images, test images)
_DATA = {"fashion-mnist": (1, 28, 10, 60_000, 10_000), "synthetic": (1, 28, 10, 256, 128)}


def _timed(fn: Any, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks its kernels on the first call
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def arm_seconds(cfg: Any, steps: int) -> dict[str, float]:
    """One arm's run at ``cfg``: seconds of a training step and of evaluating one test image."""
    from cnnkit.train.build import build_model, make_optimizer

    channels, side, classes, n_train, n_test = _DATA[cfg.dataset]
    side = cfg.image_size or side
    data = SimpleNamespace(image_shape=(channels, side, side), num_classes=classes)
    model, _ = build_model(cfg, data)  # type: ignore[arg-type]
    model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, model, cfg.lr)
    x = torch.randn(cfg.batch_size, channels, side, side).to(memory_format=torch.channels_last)
    y = torch.randint(classes, (cfg.batch_size,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    model.train()
    train_step = _timed(step, steps)
    model.eval()
    eval_image = _timed(forward, steps) / cfg.batch_size
    n = cfg.train_subset or n_train
    run = cfg.epochs * (n // cfg.batch_size * train_step + (cfg.test_subset or n_test) * eval_image)
    return {"step": train_step, "run": run}


def estimate(names: list[str], budget: str, steps: int) -> list[dict[str, Any]]:
    from cnnkit.lab.experiments import EXPERIMENTS
    from cnnkit.lab.runner import _seeds, arm_config

    rows = []
    for name in names:
        exp = EXPERIMENTS[name]
        if not exp.trains or budget not in exp.budgets:
            continue
        b, seconds, runs = exp.budgets[budget], 0.0, 0
        for arm in exp.arms:
            seeds = len(_seeds(arm, b))
            cfg = arm_config(exp, arm, 0, budget, output="/nonexistent", device="cpu")
            t = arm_seconds(cfg, steps)
            seconds, runs = seconds + seeds * t["run"], runs + seeds
            print(f"  {name}/{arm.name}: {seeds} x {t['run']:.0f} s", file=sys.stderr, flush=True)
        rows.append({"experiment": name, "budget": b, "runs": runs, "seconds": seconds})
    return rows


def table(rows: list[dict[str, Any]], budget: str, threads: int) -> str:
    total = sum(r["seconds"] for r in rows)
    lines = [
        f"`cnnkit lab run all --budget {budget}`, estimated (benchmarks/lab_budget.py; {threads} threads, "
        f"{torch.__version__}): {total / 60:.0f} min of training and evaluation",
        "",
        "| experiment | runs | epochs | train images | test images | batch | est. min |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b = r["budget"]
        lines.append(
            f"| {r['experiment']} | {r['runs']} | {b.epochs} | {b.train_subset or 'all'} | "
            f"{b.test_subset or 'all'} | {b.batch_size} | {r['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--budget", default="standard")
    parser.add_argument("--experiments", nargs="+", default=None, help="default: every training experiment")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per arm (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None, help="default: benchmarks/results/lab_budget_<budget>.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from cnnkit.lab.experiments import EXPERIMENTS

    rows = estimate(args.experiments or list(EXPERIMENTS), args.budget, args.steps)
    text = table(rows, args.budget, args.threads)
    out = Path(args.output or RESULTS / f"lab_budget_{args.budget}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
