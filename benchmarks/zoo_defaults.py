"""Defaults across the zoo (issue "Training that works out of the box"): one model of every
family trained with no flag but the model, the data and the epochs, beside the best of a
sweep of four learning rates for the same model, data and epochs.

Data:
1. ``fmnist``: Fashion-MNIST, a fixed seeded subset (``--subset TRAIN TEST``, default 1,000
   training and 1,000 test images: the budget below);
2. ``folder``: an image folder of real photographs made here: ten colour photographs of
   scikit-image's sample data (the wheel from PyPI, read with zipfile; nothing installed),
   one class each; every image a random square crop (a fifth to a half of the photo's
   short side) resized to 32x32 or 64x64 (half each), written as PNG in ``train/<class>/``
   (150 per class) and ``val/<class>/`` (50 per class); loaded at the folder default, 64x64.

Each run is ``cnnkit train`` in its own process; the default is ``cnnkit train --model M
--dataset D --epochs E`` plus the data's path or subset (and ``--threads 1 --no-progress``,
which change no training setting); the sweep adds ``--lr`` with each of ``--sweep`` (the
same fitted batch, warm-up and flips). A run that diverges (the trainer stops it, or
restarts it at a lower rate) is recorded. Two runs go at a time, one thread each: on 2
cores that trains about 1.5-2x more images an hour than one run on two threads (measured
here on ResNet-18, GoogLeNet, MobileNet and DenseNet steps).

Budget: one training step of each of the 14 models sums to about 560 ms per 28x28
Fashion-MNIST image (small-input stems: ResNeXt-50 125, GoogLeNet 121, ZFNet 68, DenseNet 60)
and 380 ms per 64x64 photo (WRN-16-4, a CIFAR net at full resolution, 133) on one thread of
this Xeon, forward and backward, measured apart. 5 runs x 2 datasets of 2 epochs of 1,000 and
1,500 images are then about 12,000 process-seconds of training, evaluation and start-up
about 3,000 more: two hours two runs at a time. The issue's 45 minutes would leave about
one epoch of 400 images a run: too few steps for any rate to show.

Run: ``python benchmarks/zoo_defaults.py`` (writes ``benchmarks/results/zoo_defaults.{json,md}``);
``--models``, ``--data`` and ``--no-sweep`` pick a part of it; ``--only-defaults`` re-runs
the defaults beside the recorded sweep; ``--resume`` continues an interrupted call (each run
records ``benchmark_row.json`` in its folder); ``--report-only`` prints the table of what is
recorded; ``--seeds N`` also runs seeds 1..N-1 (the seed changes the initial weights, the data
order and the Fashion-MNIST subset), and a row with seeds shows each rate's median and range.
The defaults run first, then each model's sweep, cheapest model first. The table is always
the whole benchmark as its runs' folders record it, whatever part a call ran.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = [
    "fmnet", "resnet20", "resnet18", "preresnet18", "wrn_16_4", "resnext50_32x4d", "seresnet18",
    "densenet_bc_100_12", "googlenet", "vgg11_bn", "alexnet", "zfnet", "mobilenet_v1", "shufflenet_v1_g3",
]  # fmt: skip
PHOTOS = [
    "astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
    "motorcycle_left.png", "retina.jpg", "rocket.jpg", "grass.png", "brick.png",
]  # fmt: skip
SKIMAGE = "scikit-image==0.26.0"
ROW = "benchmark_row.json"  # each run's result, in its folder: --resume reuses it


def make_image_folder(root: Path, per_class: tuple[int, int] = (150, 50), seed: int = 0) -> Path:
    """The real-image folder (see the module docstring); returns ``root``, reused when complete."""
    from PIL import Image

    if (root / "done").exists():
        return root
    wheels = Path(tempfile.mkdtemp(prefix="skimage-"))
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", SKIMAGE, "-d", str(wheels)], check=True
    )
    wheel = next(wheels.glob("scikit_image-*.whl"))
    rng = random.Random(seed)
    with zipfile.ZipFile(wheel) as z:
        for name in PHOTOS:
            photo = Image.open(io.BytesIO(z.read(f"skimage/data/{name}"))).convert("RGB")
            w, h = photo.size
            for split, n in zip(("train", "val"), per_class, strict=True):
                folder = root / split / Path(name).stem
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    side = int(min(w, h) * rng.uniform(0.2, 0.5))
                    x, y = rng.randrange(w - side + 1), rng.randrange(h - side + 1)
                    size = 32 if i % 2 else 64
                    crop = photo.crop((x, y, x + side, y + side)).resize(
                        (size, size), Image.Resampling.BILINEAR
                    )
                    crop.save(folder / f"{i:03d}.png")
    (root / "done").write_text("ok\n")
    return root


# Relative training cost per image (ms, one thread, measured here): heaviest first, so that
# the two workers finish together.
_COST = {
    "resnext50_32x4d": 70, "googlenet": 45, "zfnet": 40, "densenet_bc_100_12": 35, "wrn_16_4": 35,
    "vgg11_bn": 35, "seresnet18": 25, "alexnet": 25, "resnet18": 22, "preresnet18": 20,
    "shufflenet_v1_g3": 8, "mobilenet_v1": 6, "resnet20": 5, "fmnet": 2,
}  # fmt: skip


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One ``cnnkit train`` in its own process (one thread); its final top-1, seconds, chosen lr and batch."""
    out, lr = Path(job["out"]), job["lr_flag"]
    if job["resume"] and (out / ROW).exists():  # recorded by an earlier, interrupted call
        return dict(json.loads((out / ROW).read_text()))
    flags = ["train", "--model", job["model"], *job["flags"], "--epochs", str(job["epochs"])]
    flags += ["--output", str(out), "--no-progress", "--threads", "1"]
    flags += ["--lr", f"{lr:g}"] if lr is not None else []
    flags += ["--seed", str(job["seed"])] if job["seed"] else []
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cnnkit", *flags], capture_output=True, text=True)
    lines = proc.stderr.splitlines()
    row: dict[str, Any] = {k: job[k] for k in ("data", "model", "lr_flag", "seed")}
    row.update(exit=proc.returncode, wall_seconds=time.perf_counter() - t0)
    row["first_line"] = lines[0] if lines else ""
    row["diverged"] = [x for x in lines if "diverg" in x]
    if proc.returncode == 0:
        final = json.loads((out / "final.json").read_text())
        cfg = (out / "config.yaml").read_text().splitlines()
        row.update(top1=final["test_top1"], train_seconds=final["train_seconds"])
        row["lr"] = next(x for x in cfg if x.startswith("lr:"))
        row["batch"] = next(x for x in cfg if x.startswith("batch_size:"))
    else:
        row["error"] = lines[-1] if lines else ""
    out.mkdir(parents=True, exist_ok=True)
    (out / ROW).write_text(json.dumps(row) + "\n")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--data", nargs="+", default=["fmnist", "folder"], choices=["fmnist", "folder"])
    parser.add_argument("--subset", type=int, nargs=2, default=[1000, 1000], metavar=("TRAIN", "TEST"))
    parser.add_argument("--sweep", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3])
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument(
        "--only-defaults",
        action="store_true",
        help="re-run the defaults of --models on --data; keep every other recorded run",
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="run each of seeds 0..N-1 (seed 0 is the table's first run)"
    )
    parser.add_argument("--resume", action="store_true", help="reuse the runs an earlier call recorded")
    parser.add_argument(
        "--report-only", action="store_true", help="the table of the recorded runs; run nothing"
    )
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "zoo_defaults"))
    parser.add_argument("--output", default=str(RESULTS / "zoo_defaults.json"))
    args = parser.parse_args()
    runs, out = Path(args.runs), Path(args.output)
    data = {
        "fmnist": ["--dataset", "fashion-mnist", "--train-subset", str(args.subset[0]),
                   "--test-subset", str(args.subset[1])],
        "folder": ["--dataset", "imagefolder", "--data-dir", str(make_image_folder(runs / "photos"))],
    }  # fmt: skip
    lrs = [None] + ([] if args.no_sweep or args.only_defaults else args.sweep)
    jobs = [
        {"data": name, "model": model, "lr_flag": lr, "flags": data[name], "epochs": args.epochs,
         "resume": args.resume, "seed": seed, "out": str(runs / run_name(model, name, lr, seed))}
        for name in args.data for model in args.models for lr in lrs for seed in range(args.seeds)
    ]  # fmt: skip
    # the defaults first (an interrupted call has the column that matters), heaviest first; then
    # each model's sweep, cheapest model first (an interrupted call has the most complete rows)
    jobs.sort(key=lambda j: (j["seed"], j["lr_flag"] is not None,
                             (1 if j["lr_flag"] else -1) * _COST.get(j["model"], 30)))  # fmt: skip
    t0 = time.perf_counter()
    if args.report_only:
        jobs = []
    with ThreadPoolExecutor(args.workers) as pool:
        for row in pool.map(run_one, jobs):
            print(
                json.dumps({k: row.get(k) for k in ("data", "model", "lr_flag", "top1", "lr", "exit")}),
                flush=True,
            )
    # the report is the whole benchmark as recorded in the runs' folders, whatever this call ran
    rows = [json.loads(f.read_text()) for f in sorted(runs.glob(f"*/{ROW}"))]
    order = {(d, m): i for i, (d, m) in enumerate((d, m) for d in ("fmnist", "folder") for m in MODELS)}
    rows.sort(
        key=lambda r: (
            order.get((r["data"], r["model"]), 1 << 30),
            r["lr_flag"] is not None,
            r["lr_flag"] or 0,
            r.get("seed", 0),
        )
    )
    report = {
        "epochs": args.epochs, "subset": args.subset, "sweep": args.sweep, "workers": args.workers,
        "seeds": max((r.get("seed", 0) + 1 for r in rows), default=1),
        # the whole benchmark's time at `workers` runs at a time (a partial re-run keeps the rest's)
        "seconds": sum(r["wall_seconds"] for r in rows) / args.workers, "this_call_seconds": time.perf_counter() - t0,
        "machine": machine(), "command": " ".join(["python", *sys.argv]), "runs": rows,
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(table(report))
    print(table(report))


def run_name(model: str, data: str, lr: float | None, seed: int) -> str:
    """A run's folder: ``resnet18-fmnist-default``, ``resnet18-fmnist-lr0.1``, ``...-lr0.1-s2``."""
    return f"{model}-{data}-{'default' if lr is None else f'lr{lr:g}'}" + (f"-s{seed}" if seed else "")


def machine() -> str:
    """The CPU, its cores and the torch build, for the record."""
    import platform

    import torch

    cpu = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")), platform.processor())  # fmt: skip
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def _diverged(defaults: list[dict[str, Any]]) -> str:
    """The default runs' divergence, in a table cell: no, or each restart or stop."""
    said = []
    for d in defaults:
        if d.get("exit", 0) != 0:
            said.append(f"stopped: {d.get('error', 'diverged')[:60]}")
        elif d["diverged"] and d.get("top1") is None:
            said.append("; ".join(d["diverged"]))
        elif d["diverged"]:
            said.append(f"restarted at a quarter ({d['lr'].split('#')[0].split(':')[1].strip()[:6]})")
    return "; ".join(said) or "no"


def _cell(values: list[float]) -> str:
    """Top-1 in %: one run's, or the median of the seeds' with their range."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.median(values):.1f} ({100 * min(values):.1f}-{100 * max(values):.1f}, {len(values)} seeds)"


def table(report: dict[str, Any]) -> str:
    """Per data and model: the default's top-1, lr and its rule, the sweep's best, the gap
    (best of sweep minus default: the target is at most 2 points), and what diverged. Where a
    row has several seeds, each learning rate's top-1 is the median of its seeds and the gap
    compares the medians (seeds change the initial weights, the data order and the subset)."""
    lines = [
        f"{report['epochs']} epochs per run; Fashion-MNIST subset {report['subset'][0]:,} train / "
        f"{report['subset'][1]:,} test images; sweep lr {', '.join(f'{v:g}' for v in report['sweep'])}; "
        f"{report['workers']} runs at a time, one thread each: {report['seconds'] / 60:.0f} min in all "
        f"({report['machine']})",
        "",
        "| data | model | default top-1 (%) | default lr (rule) | best of sweep (%) | at lr | gap (points) "
        "| default diverged | sweep stopped (diverged) at |",
        "|---|---|---:|---|---:|---:|---:|---|---|",
    ]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in report["runs"]:
        by.setdefault((r["data"], r["model"]), []).append(r)
    for (data, model), rs in by.items():
        defaults = [r for r in rs if r["lr_flag"] is None]
        d1 = [r["top1"] for r in defaults if r.get("top1") is not None]
        sweep: dict[float, list[float]] = {}
        for r in rs:
            if r["lr_flag"] is not None and r.get("top1") is not None:
                sweep.setdefault(r["lr_flag"], []).append(r["top1"])
        stopped = sorted(
            {f"{r['lr_flag']:g}" for r in rs if r["lr_flag"] is not None and r.get("top1") is None}
        )
        best_lr = max(sweep, key=lambda lr: statistics.median(sweep[lr]), default=None)
        gap = (
            f"{100 * (statistics.median(sweep[best_lr]) - statistics.median(d1)):+.1f}"
            if best_lr is not None and d1
            else "-"
        )
        first = next((r for r in defaults if r.get("top1") is not None), None)
        lr = "-"
        if first:
            value, _, why = first["lr"].partition("#")
            lr = f"{float(value.split(':')[1]):.3g} ({why.split('(')[0].split(',')[0].strip()})"
        best = ("-", "-") if best_lr is None else (_cell(sweep[best_lr]), f"{best_lr:g}")
        lines.append(
            f"| {data} | {model} | {_cell(d1) if defaults else '(not run yet)'} | {lr} | {best[0]} | {best[1]} "
            f"| {gap} | {_diverged(defaults)} | {', '.join(stopped) or '-'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
