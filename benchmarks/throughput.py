"""Training throughput: cnnkit's trainer beside torchvision's models driven the usual way.

Issue "Speed", target 4. For each model (small_input, 28x28 Fashion-MNIST, batch 128,
SGD with Nesterov momentum, label smoothing 0.1, random crop with 2 px padding and
horizontal flip):

* **cnnkit**: ``cnnkit.train.loop.train`` under the default recipe (fp32, channels_last,
  the whole dataset as one uint8 tensor, augmentation of whole batches);
* **torchvision way**: torchvision's own implementation (``resnet18``, ``densenet121``
  with the CIFAR-style 3x3/1 stem and no max-pool that ``small_input`` gives cnnkit's,
  parameter counts checked equal), or cnnkit's module where torchvision has none
  (``mobilenet_v1``, ``fmnet``), trained the way torchvision's reference scripts do:
  fp32, NCHW, ``torchvision.datasets.FashionMNIST`` with per-sample PIL transforms
  (``RandomCrop``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``) in a
  ``DataLoader``. Both ``num_workers=0`` and ``2`` are timed and the faster is the
  reference.

Each side trains ``--epochs`` (default 2) passes over the same ``--images`` training
images; images/s is that of the passes after the first (warm-up: oneDNN primitive
creation), evaluation excluded. The script also measures the machine's fp32 and bf16
3x3-convolution peak (``benchmarks/machine.py``) and the model-FLOPs utilisation of the
default recipe: training FLOPs per image (3 x forward, 2 FLOPs per mult-add, from
``cnnkit.summarize``) x images/s / peak.

Run: ``python benchmarks/throughput.py`` (writes ``benchmarks/results/throughput.json``
and ``.md``); ``--smoke`` is the seconds-long check ``.ci/run`` runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import conv_peak, machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("resnet18", "mobilenet_v1", "densenet121", "fmnet")
BATCH = 128
LR = 0.02


def torchvision_model(name: str) -> tuple[nn.Module, str]:
    """torchvision's implementation with the small-input stem, else cnnkit's module."""
    import torchvision

    from cnnkit.models.registry import create_model

    if name == "resnet18":
        m = torchvision.models.resnet18(num_classes=10)
        m.conv1 = nn.Conv2d(1, 64, 3, padding=1, bias=False)
        m.maxpool = nn.Identity()
        return m, "torchvision.models.resnet18 (3x3/1 stem, no max-pool)"
    if name == "densenet121":
        m = torchvision.models.densenet121(num_classes=10)
        m.features.conv0 = nn.Conv2d(1, 64, 3, padding=1, bias=False)
        m.features.pool0 = nn.Identity()
        return m, "torchvision.models.densenet121 (3x3/1 stem, no max-pool)"
    return create_model(
        name, num_classes=10, in_chans=1, small_input=True
    ), f"cnnkit {name} (torchvision has none)"


def fashion_root(tmp: Path) -> Path:
    """torchvision's FashionMNIST folder layout (raw, uncompressed IDX) from the system copy."""
    from cnnkit.data.sources import _find_idx

    found = _find_idx("fashion-mnist", None)
    if found is None:
        raise SystemExit(
            "Fashion-MNIST not found: apt-get install dataset-fashion-mnist (or set CNNKIT_DATA)"
        )
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, path in found[1].items():
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fin, open(raw / stem, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return tmp


def run_torchvision_way(name: str, images: int, epochs: int, workers: int, root: Path) -> dict[str, Any]:
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import FashionMNIST

    torch.manual_seed(0)
    tf = T.Compose(
        [
            T.RandomCrop(28, padding=2),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.2860,), (0.3530,)),
        ]
    )
    ds = Subset(FashionMNIST(str(root), train=True, transform=tf), range(images))
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True)
    model, impl = torchvision_model(name)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    secs = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        seen = 0
        for x, y in loader:
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
        secs.append((seen, time.perf_counter() - t0))
    warm = secs[1:] or secs
    params = sum(p.numel() for p in model.parameters())
    return {
        "impl": impl,
        "workers": workers,
        "params": params,
        "images_per_s": sum(n for n, _ in warm) / sum(s for _, s in warm),
        "epoch_seconds": [s for _, s in secs],
    }


def run_cnnkit(name: str, images: int, epochs: int, threads: int, out: Path) -> dict[str, Any]:
    from cnnkit.train.config import config_from_args
    from cnnkit.train.loop import train

    # the torchvision way below does the previous default recipe's work per image: the model as
    # built (GELU, fmnet's batch-norm stem), 2 px translation and flips, no EMA or test views
    same_work: dict[str, Any] = {"crop_pad": 2, "whiten": False, "act": None, "model_ema": False}
    same_work |= {"tta": False, "tta_shift": 0} | (
        {"model_kwargs": {"stem_norm": True}} if name == "fmnet" else {}
    )
    cfg = config_from_args(
        {
            **same_work,
            "model": name,
            "small_input": True,
            "epochs": epochs,
            "train_subset": images,
            "test_subset": 500,
            "batch_size": BATCH,
            "lr": LR,
            "threads": threads,
            "progress": False,
            "output": str(out),
        }
    )
    final = train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    warm = rows[1:] or rows
    return {
        "recipe": cfg.recipe,
        "channels_last": cfg.channels_last,
        "params": final["params"],
        "images_per_s": statistics.median(r["images_per_s"] for r in warm),
        "epoch_seconds": [r["epoch_seconds"] for r in rows],
    }


def training_flops_per_image(name: str) -> int:
    from cnnkit.analysis import summarize
    from cnnkit.models.registry import create_model

    with torch.device("meta"):
        model = create_model(name, num_classes=10, in_chans=1, small_input=True)
    return 3 * summarize(model, (1, 28, 28)).total_flops  # forward + backward (2 x forward)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Training throughput (images/s, 28x28 Fashion-MNIST, batch 128, fp32)",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads, torch {m['torch']}; "
        f"native bf16: {m['native_bf16']}; load average at start {m['load_avg_1min_at_start']:.2f}.",
        f"Command: `{report['command']}`",
        "",
        "| model | params | cnnkit img/s | torchvision way img/s (workers) | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report["models"]:
        tv = r["torchvision_way"]
        lines.append(
            f"| {r['model']} | {r['cnnkit']['params']:,} | {r['cnnkit']['images_per_s']:.1f} | "
            f"{tv['images_per_s']:.1f} ({tv['workers']}) | {r['ratio']:.2f}x |"
        )
    p = report["peak"]
    u = report["mfu"]
    lines += [
        "",
        f"3x3 conv peak: fp32 {p['fp32']['peak_gflops']:.0f} GFLOP/s, bf16 {p['bf16']['peak_gflops']:.0f} GFLOP/s.",
        f"Default recipe ({u['model']}, {u['training_gflop_per_image']:.3f} GFLOP per training image): "
        f"{u['images_per_s']:.0f} img/s = {u['achieved_gflops']:.1f} GFLOP/s = "
        f"{100 * u['mfu_vs_fp32_peak']:.0f}% of the fp32 peak, {100 * u['mfu_vs_bf16_peak']:.0f}% of the bf16 peak.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--images", type=int, default=512, help="training images per epoch (zoo models)")
    ap.add_argument("--fmnet-images", type=int, default=4096, help="training images per epoch for fmnet")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    ap.add_argument(
        "--smoke", action="store_true", help="seconds-long check: fmnet, 256 images, 1 worker setting"
    )
    ap.add_argument(
        "--output", type=Path, default=None, help="JSON path (default benchmarks/results/throughput.json)"
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.models, args.fmnet_images, args.images, args.workers = ["fmnet"], 256, 256, [0]
    threads = args.threads or len(__import__("os").sched_getaffinity(0))
    torch.set_num_threads(threads)
    out_json = args.output or (RESULTS / ("throughput_smoke.json" if args.smoke else "throughput.json"))
    report: dict[str, Any] = {
        "command": "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "models": [],
    }
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        root = fashion_root(tmp / "tv")
        for name in args.models:
            n = args.fmnet_images if name == "fmnet" else args.images
            ours = run_cnnkit(name, n, args.epochs, threads, tmp / f"run-{name}")
            torch.set_num_threads(threads)
            theirs = [run_torchvision_way(name, n, args.epochs, w, root) for w in args.workers]
            best = max(theirs, key=lambda r: r["images_per_s"])
            if best["params"] != ours["params"]:
                raise SystemExit(
                    f"{name}: torchvision's model has {best['params']} parameters, cnnkit's {ours['params']}"
                )
            row = {
                "model": name,
                "images": n,
                "cnnkit": ours,
                "torchvision_way": best,
                "torchvision_way_all": theirs,
                "ratio": ours["images_per_s"] / best["images_per_s"],
            }
            report["models"].append(row)
            print(
                f"{name:14s} cnnkit {ours['images_per_s']:8.1f} img/s   torchvision way {best['images_per_s']:8.1f} "
                f"img/s (workers={best['workers']})   {row['ratio']:.2f}x",
                flush=True,
            )
    quick = {"repeat": 1, "batch_divisor": 16} if args.smoke else {}
    report["peak"] = {"fp32": conv_peak(torch.float32, **quick), "bf16": conv_peak(torch.bfloat16, **quick)}
    fm = next((r for r in report["models"] if r["model"] == "fmnet"), None)
    if fm is not None:
        flops = training_flops_per_image("fmnet")
        achieved = fm["cnnkit"]["images_per_s"] * flops / 1e9
        report["mfu"] = {
            "model": "fmnet",
            "training_gflop_per_image": flops / 1e9,
            "images_per_s": fm["cnnkit"]["images_per_s"],
            "achieved_gflops": achieved,
            "mfu_vs_fp32_peak": achieved / report["peak"]["fp32"]["peak_gflops"],
            "mfu_vs_bf16_peak": achieved / report["peak"]["bf16"]["peak_gflops"],
        }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report) if "mfu" in report else ""
    if md:
        out_json.with_suffix(".md").write_text(md)
        print(md)
    print(f"wrote {out_json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
