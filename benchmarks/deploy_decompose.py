"""Issue "Accelerate and deploy", done-when measurement: decompose a trained Fashion-MNIST ResNet
to about half its mult-adds, fine-tune briefly, and compare accuracy, cost and CPU latency.

Steps (all through cnnkit's own API, so the numbers are what ``cnnkit train`` and
``cnnkit decompose`` give):

1. train ``resnet20`` (He et al. 2016, sec. 4.2; small-input stem) on a seeded subset of
   Fashion-MNIST with the default trainer (SGD + Nesterov, cosine), unless the run
   folder exists already;
2. find, by bisection, the retained-energy target whose per-layer ranks bring the whole
   network to at most ``--target`` (default 0.5) of its mult-adds
   (:func:`cnnkit.analysis.summarize` counts them);
3. :func:`cnnkit.deploy.runs.decompose_run` at that energy with ``--finetune-epochs``
   epochs of fine-tuning: the table of top-1 accuracy, parameters, mult-adds and CPU
   latency (batch 1 and 64, medians) of the original, decomposed and fine-tuned models,
   each also with batch norm folded.

Run: ``python benchmarks/deploy_decompose.py --threads 2`` (about 10-15 minutes on two
shared cores); writes ``benchmarks/results/deploy_decompose.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def energy_for_target(
    model: torch.nn.Module, method: str, target: float, input_size: tuple[int, ...]
) -> float:
    """The largest energy (within 1e-4) whose decomposition has at most ``target`` of the mult-adds."""
    from cnnkit.analysis.summary import summarize
    from cnnkit.deploy.decompose import decompose

    base = summarize(model, input_size).total_mult_adds

    def ratio(e: float) -> float:
        return summarize(decompose(model, method, energy=e), input_size).total_mult_adds / base

    lo, hi = 0.0, 1.0  # ratio(lo) <= target < ratio(hi), as ratio grows with the energy
    if ratio(1e-6) > target:
        raise ValueError(f"{method} cannot reach {target} of the mult-adds even at rank 1")
    lo = 1e-6
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ratio(mid) <= target else (lo, mid)
    return lo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--run", default=str(ROOT / "runs" / "deploy-resnet20-fmnist"))
    parser.add_argument("--method", default="spatial_separable")
    parser.add_argument("--target", type=float, default=0.5, help="fraction of the mult-adds to keep")
    parser.add_argument("--train-subset", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS / "deploy_decompose.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cnnkit.deploy.runs import decompose_run, load_run, render_markdown
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.loop import train

    run = Path(args.run)
    t0 = time.perf_counter()
    if not (run / "final.json").exists():
        cfg = TrainConfig(
            model="resnet20",
            dataset="fashion-mnist",
            train_subset=args.train_subset,
            epochs=args.epochs,
            batch_size=128,
            lr=0.1,
            threads=args.threads,
            output=str(run),
            progress=False,
        )
        train(cfg)
    train_final: dict[str, Any] = json.loads((run / "final.json").read_text())
    train_wall = time.perf_counter() - t0

    model, meta = load_run(run)
    size = (int(meta["in_chans"]), int(meta["image_size"]), int(meta["image_size"]))
    t1 = time.perf_counter()
    energy = energy_for_target(model, args.method, args.target, size)
    search_s = time.perf_counter() - t1
    out_dir = run.with_name(f"{run.name}-{args.method}")
    if (out_dir / "model.safetensors").exists():
        (out_dir / "model.safetensors").unlink()
    t2 = time.perf_counter()
    report = decompose_run(
        run,
        args.method,
        energy=energy,
        finetune_epochs=args.finetune_epochs,
        output=out_dir,
    )
    report["benchmark"] = {
        "command": "python benchmarks/deploy_decompose.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("run", "output")
        ),
        "target_mult_adds_ratio": args.target,
        "energy_found": energy,
        "energy_search_seconds": search_s,
        "train": {
            "train_subset": args.train_subset,
            "epochs": train_final["epochs"],
            "test_top1": train_final["test_top1"],
            "train_seconds": train_final["train_seconds"],
            "wall_seconds_this_call": train_wall,
        },
        "decompose_run_seconds": time.perf_counter() - t2,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": args.threads,
            "note": "2 CPU cores shared with other processes: latencies are noisy medians",
        },
    }
    rows = report["rows"]
    base = rows[0]
    last = next(
        r for r in rows if r["variant"].startswith("decomposed + fine-tune") and "folded" not in r["variant"]
    )
    report["summary"] = {
        "mult_adds_ratio": last["mult_adds"] / base["mult_adds"],
        "top1_change_points": 100 * (last["test_top1"] - base["test_top1"]),
        "within_1_point": abs(last["test_top1"] - base["test_top1"]) <= 0.01,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = render_markdown(report) + (
        f"\nEnergy target {energy:.4f} found by bisection for <= {args.target} of the mult-adds. "
        f"Trained {train_final['epochs']} epochs on {args.train_subset} images "
        f"({train_final['train_seconds']:.0f} s). Result: {report['summary']['mult_adds_ratio']:.2f}x mult-adds, "
        f"top-1 change {report['summary']['top1_change_points']:+.2f} points after fine-tuning.\n"
    )
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
