"""Defaults across the zoo (issue "Training that works out of the box"): one model of every
family trained with no flag but the model, the data and the epochs, beside the best of a
sweep of four learning rates for the same model, data and epochs.

Data:
1. ``fmnist``: Fashion-MNIST, a fixed 10,000-image training subset (seed 0), the full test set;
2. ``folder``: an image folder of real photographs made here: ten colour photographs of
   scikit-image's sample data (the wheel from PyPI, read with zipfile; nothing installed),
   one class each; every image a random square crop (a fifth to a half of the photo's
   short side) resized to 32x32 or 64x64 (half each), written as PNG in ``train/<class>/``
   (150 per class) and ``val/<class>/`` (50 per class); trained at ``--image-size 32``.

Each run goes through ``cnnkit train`` itself (``cnnkit.cli.main`` in this process); the
default is ``cnnkit train --model M --dataset D --epochs E [--data-dir | --train-subset]``,
the sweep adds ``--lr`` with each of ``--sweep`` (the same fitted batch, warm-up, flips).
A run that diverges (the trainer stops it, or restarts it at a lower rate) is recorded.

Run: ``python benchmarks/zoo_defaults.py --epochs 3`` (writes
``benchmarks/results/zoo_defaults.{json,md}``); ``--models``, ``--data`` and
``--no-sweep`` pick a part of it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
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
                    crop = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)
                    crop.save(folder / f"{i:03d}.png")
    (root / "done").write_text("ok\n")
    return root


def run_one(model: str, data: list[str], epochs: int, out: Path, lr: float | None) -> dict[str, Any]:
    """One ``cnnkit train``; its final top-1, training seconds, chosen lr and batch, and what it printed."""
    from cnnkit import cli

    flags = ["train", "--model", model, *data, "--epochs", str(epochs), "--output", str(out), "--no-progress"]
    flags += ["--lr", str(lr)] if lr is not None else []
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = cli.main(flags)
    lines = err.getvalue().splitlines()
    row: dict[str, Any] = {"model": model, "lr_flag": lr, "exit": code, "wall_seconds": time.perf_counter() - t0}
    row["first_line"] = lines[0] if lines else ""
    row["diverged"] = [x for x in lines if "diverged" in x]
    if code == 0:
        final = json.loads((out / "final.json").read_text())
        cfg = (out / "config.yaml").read_text().splitlines()
        row.update(top1=final["test_top1"], train_seconds=final["train_seconds"])
        row["lr"] = next(x for x in cfg if x.startswith("lr:"))
        row["batch"] = next(x for x in cfg if x.startswith("batch_size:"))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--data", nargs="+", default=["fmnist", "folder"], choices=["fmnist", "folder"])
    parser.add_argument("--sweep", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3])
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "zoo_defaults"))
    parser.add_argument("--output", default=str(RESULTS / "zoo_defaults.json"))
    args = parser.parse_args()
    runs = Path(args.runs)
    data = {
        "fmnist": ["--dataset", "fashion-mnist", "--train-subset", "10000"],
        "folder": ["--dataset", "imagefolder", "--data-dir", str(make_image_folder(runs / "photos")),
                   "--image-size", "32"],
    }  # fmt: skip
    t0, rows = time.perf_counter(), []
    for name in args.data:
        for model in args.models:
            for lr in [None, *([] if args.no_sweep else args.sweep)]:
                out = runs / f"{model}-{name}-{'default' if lr is None else f'lr{lr:g}'}"
                if out.exists():
                    shutil.rmtree(out)
                row = {"data": name, **run_one(model, data[name], args.epochs, out, lr)}
                rows.append(row)
                print(json.dumps({k: row.get(k) for k in ("data", "model", "lr_flag", "top1", "lr", "exit")}))
    report = {"epochs": args.epochs, "sweep": args.sweep, "seconds": time.perf_counter() - t0, "runs": rows}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(table(report))
    print(table(report))


def table(report: dict[str, Any]) -> str:
    """Per data and model: the default's top-1 and lr, the sweep's best, the gap, divergences."""
    lines = [
        f"{report['epochs']} epochs per run; sweep lr {', '.join(f'{v:g}' for v in report['sweep'])}; "
        f"{report['seconds'] / 60:.0f} min in all",
        "",
        "| data | model | default top-1 (%) | default lr (source) | best of sweep (%) | at lr | gap (points) | diverged |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in report["runs"]:
        by.setdefault((r["data"], r["model"]), []).append(r)
    for (data, model), rs in by.items():
        default = next(r for r in rs if r["lr_flag"] is None)
        sweep = [r for r in rs if r["lr_flag"] is not None and r.get("top1") is not None]
        best = max(sweep, key=lambda r: r["top1"], default=None)
        d1 = default.get("top1")
        gap = f"{100 * (best['top1'] - d1):+.2f}" if best and d1 is not None else "-"
        lr = default.get("lr", "lr: -").split("lr: ")[1]
        top1 = "-" if d1 is None else f"{100 * d1:.2f}"
        best_top1, best_lr = ("-", "-") if not best else (f"{100 * best['top1']:.2f}", best["lr_flag"])
        lines.append(
            f"| {data} | {model} | {top1} | {lr} | {best_top1} | {best_lr} | {gap} | "
            f"{'; '.join(default['diverged']) or 'no'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
