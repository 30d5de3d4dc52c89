"""Issue "Accelerate and deploy", done-when measurement: decompose a trained Fashion-MNIST ResNet
to about half its mult-adds, fine-tune briefly, and compare accuracy, cost and CPU latency.

Steps (all through cnnkit's own API, so the numbers are what ``cnnkit train`` and
``cnnkit decompose`` give):

1. train ``resnet20`` (He et al. 2016, sec. 4.2; small-input stem) on a seeded subset of
   Fashion-MNIST with the default trainer (SGD + Nesterov, cosine), unless the run
   folder exists already;
2. :func:`cnnkit.deploy.runs.decompose_run` (what ``cnnkit decompose RUN --method
   spatial_separable --mult-adds 0.5 --finetune-epochs 2`` runs): one retained-energy
   target for all layers, found by bisection so that the network keeps at most
   ``--target`` (default 0.5) of its mult-adds; batch-norm statistics re-estimated on
   2,000 training images; ``--finetune-epochs`` epochs of fine-tuning. The table gives
   top-1 accuracy, parameters, mult-adds and CPU latency (batch 1 and 64, medians) of
   the original, decomposed, re-estimated and fine-tuned models, and of the first and
   last with batch norm folded.

Run: ``python benchmarks/deploy_decompose.py --threads 2`` (about 10-15 minutes on two
shared cores); writes ``benchmarks/results/deploy_decompose.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--run", default=str(ROOT / "runs" / "deploy-resnet20-fmnist"))
    parser.add_argument("--method", default="spatial_separable")
    parser.add_argument("--target", type=float, default=0.5, help="fraction of the mult-adds to keep")
    parser.add_argument("--train-subset", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--control",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fine-tune the original the same way (what the extra epochs alone give)",
    )
    parser.add_argument("--output", default=str(RESULTS / "deploy_decompose.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cnnkit.data.sources import load_dataset
    from cnnkit.deploy.runs import decompose_run, finetune_config, render_markdown
    from cnnkit.run import load_run, read_config
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.loop import evaluate, train

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

    out_dir = run.with_name(f"{run.name}-{args.method}")
    if (out_dir / "model.safetensors").exists():
        (out_dir / "model.safetensors").unlink()  # a rerun replaces the decomposed run
    t2 = time.perf_counter()
    report = decompose_run(
        run,
        args.method,
        mult_adds=args.target,
        finetune_epochs=args.finetune_epochs,
        output=out_dir,
    )
    report["benchmark"] = {
        "command": "python benchmarks/deploy_decompose.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("run", "output")
        ),
        "target_mult_adds_ratio": args.target,
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
    if args.control:
        # control: the original network fine-tuned the same way, so that what the extra
        # epochs alone give is not credited to the decomposition
        t3 = time.perf_counter()
        control = run.with_name(f"{run.name}-control")
        if control.exists():
            shutil.rmtree(control)  # a rerun fine-tunes the control again
        cfg = finetune_config(
            read_config(run), run, control, epochs=args.finetune_epochs, lr=report["finetune_lr"]
        )
        train(cfg)
        model, meta = load_run(control)
        data = load_dataset("fashion-mnist", train_subset=args.train_subset, seed=cfg.seed)
        mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
        res = evaluate(model, data.test_x, data.test_y, mean, std, batch_size=500)
        report["control"] = {
            "variant": f"original + the same fine-tune ({args.finetune_epochs} ep)",
            "test_top1": res["top1"],
            "seconds": time.perf_counter() - t3,
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
        f"\nTrained {train_final['epochs']} epochs on {args.train_subset} images "
        f"({train_final['train_seconds']:.0f} s). Result: {report['summary']['mult_adds_ratio']:.2f}x mult-adds, "
        f"top-1 change {report['summary']['top1_change_points']:+.2f} points after fine-tuning.\n"
    )
    if "control" in report:
        c = report["control"]
        md += f"Control, {c['variant']}: top-1 {100 * c['test_top1']:.2f}%.\n"
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
