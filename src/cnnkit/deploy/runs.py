"""Run folders in, run folders out: load a trained run, decompose it, fine-tune it briefly, report.

A run folder written by ``cnnkit train`` holds ``model.safetensors`` whose metadata
names the zoo model and its data (``model``, ``model_kwargs``, ``num_classes``,
``in_chans``, ``small_input``, ``mean``, ``std``, ``image_size``). A decomposed model is
not a zoo model, so :func:`decompose_run` adds ``decomposition`` (the method and the
per-layer ranks) to that metadata; :func:`load_run` rebuilds the zoo model on the
``meta`` device, gives it the decomposed structure (:func:`~cnnkit.deploy.decompose.build_decomposed`),
and loads the weights, so the new folder loads like any run.

The report compares, on the run's test set, the original, the decomposed model before
and after fine-tuning, and each with batch norm folded (:func:`~cnnkit.deploy.fuse.fuse_bn`):
top-1 accuracy, parameters, mult-adds per image (:func:`cnnkit.analysis.summarize`) and
measured CPU latency at batch 1 and 64 (:func:`~cnnkit.deploy.latency.measure_latency`).
Fine-tuning is a short cosine-decayed SGD run over the training set (Jaderberg et al.
2014 and Denton et al. 2014 fine-tune after the approximation the same way).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from cnnkit.data.sources import DatasetTensors

__all__ = ["decompose_run", "finetune", "load_run", "recalibrate_bn", "render_markdown"]


# ---------------------------------------------------------------------------- loading


def load_run(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained or decomposed model from a run folder or its ``model.safetensors``; eval mode.

    :func:`cnnkit.train.checkpoint.load_run`, plus the ``decomposition`` metadata that
    :func:`decompose_run` writes: the zoo model is built on ``meta``, given the
    decomposed structure, then filled with the file's weights.
    """
    from cnnkit.deploy.decompose import build_decomposed
    from cnnkit.models.registry import create_model
    from cnnkit.train.checkpoint import CheckpointError, load_model_state, load_weights

    path = Path(run_dir)
    weights = path / "model.safetensors" if path.is_dir() else path
    state, meta = load_weights(weights)
    for key in ("model", "num_classes", "in_chans", "mean", "std"):
        if key not in meta:
            raise CheckpointError(f"{weights}: no {key!r} in its metadata; not written by `cnnkit train`")
    with torch.device("meta"):  # no weight is allocated until the file's are loaded
        model = create_model(
            meta["model"],
            num_classes=meta["num_classes"],
            in_chans=meta["in_chans"],
            small_input=meta.get("small_input", False),
            **meta.get("model_kwargs", {}),
        )
        spec = meta.get("decomposition")
        if spec:
            build_decomposed(model, spec["method"], spec["ranks"])
    model.to_empty(device="cpu")
    load_model_state(model, state, weights)
    return model.eval(), meta


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The source run's ``config.yaml`` (plain data), or {} when there is none."""
    path = run_dir / "config.yaml" if run_dir.is_dir() else run_dir.parent / "config.yaml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------- fine-tuning


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    batch_size: int = 250,
) -> int:
    """Re-estimate every batch-norm layer's running statistics on uint8 ``images``; no weight changes.

    An approximated conv shifts the statistics of what follows it, so the norm layers'
    running means and variances no longer fit: recomputing them (a cumulative average
    over the batches, ``momentum=None``) is the cheapest repair, and a fair first step
    before fine-tuning. Returns the number of norm layers re-estimated; the model is
    left in eval mode.
    """
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for start in range(0, len(images), batch_size):
            model(
                (images[start : start + batch_size].float() / 255 - mean[:, None, None]) / std[:, None, None]
            )
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        model.eval()
    return len(norms)


def finetune(
    model: nn.Module,
    data: DatasetTensors,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    epochs: int,
    lr: float = 0.01,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    crop_pad: int = 0,
    hflip: float = 0.0,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, float]]:
    """Fine-tune ``model`` in place: SGD with Nesterov momentum 0.9, cosine decay from ``lr`` to 0.

    The training images go through the trainer's batch augmentation (``crop_pad``,
    ``hflip``, as in the source run). Returns per-epoch ``{"epoch", "train_loss",
    "seconds"}``. The model is left in eval mode.
    """
    from cnnkit.data.augment import random_crop, random_flip
    from cnnkit.train.optim import build_optimizer
    from cnnkit.train.schedule import Schedule, build_scheduler

    n = len(data.train_y)
    if epochs < 1:
        raise ValueError(f"fine-tuning epochs must be >= 1; got {epochs}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"fine-tuning batch size must be in 1..{n} (the training images); got {batch_size}")
    steps = n // batch_size
    optimizer = build_optimizer(model, "sgd", lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    scheduler = build_scheduler(optimizer, Schedule("cosine", steps * epochs, steps))
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for step in range(steps):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            x = (data.train_x[idx].float() / 255 - mean[:, None, None]) / std[:, None, None]
            if crop_pad:
                x = random_crop(x, crop_pad, gen)
            if hflip:
                x = random_flip(x, gen, hflip)
            loss = F.cross_entropy(model(x), data.train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item()
        row = {"epoch": epoch + 1, "train_loss": loss_sum / steps, "seconds": time.perf_counter() - t0}
        history.append(row)
        if log is not None:
            log(f"fine-tune epoch {epoch + 1}/{epochs}: loss {row['train_loss']:.4f}, {row['seconds']:.1f}s")
    model.eval()
    return history


# ---------------------------------------------------------------------------- the report


def _measure(
    label: str,
    model: nn.Module,
    data: DatasetTensors,
    mean: torch.Tensor,
    std: torch.Tensor,
    eval_batch_size: int,
) -> dict[str, Any]:
    from cnnkit.analysis.summary import summarize
    from cnnkit.train.loop import evaluate

    size = tuple(int(v) for v in data.test_x.shape[1:])
    s = summarize(model, size)
    t0 = time.perf_counter()
    res = evaluate(model, data.test_x, data.test_y, mean, std, batch_size=eval_batch_size)
    return {
        "variant": label,
        "test_top1": res["top1"],
        "test_loss": res["loss"],
        "params": s.total_params,
        "mult_adds": s.total_mult_adds,
        "eval_seconds": time.perf_counter() - t0,
    }


def _add_latencies(rows: list[dict[str, Any]], models: dict[str, nn.Module], size: tuple[int, ...]) -> None:
    """CPU latency of every variant at batch 1 and 64, interleaved (see :func:`compare_latency`)."""
    from cnnkit.deploy.latency import compare_latency

    b1 = compare_latency(models, size, 1, rounds=30)
    b64 = compare_latency(models, size, 64, rounds=8, warmup=1)
    for row in rows:
        name = row["variant"]
        row.update(
            latency_b1_ms=b1[name].median_ms,
            latency_b64_ms=b64[name].median_ms,
            throughput_b64=b64[name].images_per_s,
        )


def render_markdown(report: dict[str, Any]) -> str:
    """The report's table as markdown (accuracy, cost and latency per variant)."""
    base = report["rows"][0]
    lines = [
        f"# {report['model']} on {report['dataset']}: {report['method']} decomposition",
        "",
        f"Target: {report['target']}; {len(report['plan']['layers'])} convs decomposed, "
        f"{len(report['plan']['skipped'])} left alone; fine-tune {report['finetune_epochs']} epoch(s) "
        f"on {report['finetune_images']} images. Test set: {report['test_images']} images. "
        f"CPU latency: median ms per call (variants timed in interleaved rounds), {report['threads']} "
        "thread(s), fp32.",
        "",
        "| variant | top-1 (%) | params | mult-adds (M) | vs original | batch 1 (ms) | batch 64 (ms) | img/s at 64 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lat = (
            f"{r['latency_b1_ms']:.2f} | {r['latency_b64_ms']:.1f} | {r['throughput_b64']:.0f}"
            if "latency_b1_ms" in r
            else "- | - | -"
        )
        lines.append(
            f"| {r['variant']} | {100 * r['test_top1']:.2f} | {r['params']:,} | {r['mult_adds'] / 1e6:.2f} | "
            f"{r['mult_adds'] / base['mult_adds']:.2f}x | {lat} |"
        )
    lines += ["", "Per-layer ranks (rank / max rank, retained energy of ||W||^2):", ""]
    for name, d in report["plan"]["layers"].items():
        energy = "" if d["energy"] != d["energy"] else f", {100 * d['energy']:.1f}%"  # NaN: unknown
        lines.append(f"- `{name}`: {d['rank']}/{d['max_rank']}{energy}")
    for name, why in report["plan"]["skipped"].items():
        lines.append(f"- `{name}`: left alone ({why})")
    return "\n".join(lines) + "\n"


def decompose_run(
    run_dir: str | Path,
    method: str,
    *,
    rank: int | None = None,
    energy: float | None = None,
    mult_adds: float | None = None,
    finetune_epochs: int = 0,
    output: str | Path | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    lr: float = 0.01,
    batch_size: int = 128,
    recalibrate: int = 2000,
    latency: bool = True,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Decompose the model of ``run_dir``, fine-tune it, and write a new run folder with a report.

    After decomposing, the norm layers' statistics are re-estimated on ``recalibrate``
    training images (:func:`recalibrate_bn`; 0: not), and fine-tuning starts from there.
    Give one of ``rank``, ``energy`` or ``mult_adds`` (the fraction of the mult-adds to
    keep: the energy target is then found by :func:`~cnnkit.deploy.decompose.energy_for_budget`).
    The new folder (default ``<run_dir>-<method>``) holds ``model.safetensors`` (the
    fine-tuned weights if ``finetune_epochs`` > 0; its metadata carries the
    decomposition spec, so :func:`load_run` and therefore ``cnnkit eval`` rebuild it),
    ``decompose.json`` (the full report) and ``decompose.md`` (its table). The dataset
    (and ``train_subset``, augmentation) default to the source run's ``config.yaml``.
    Returns the report.
    """
    from cnnkit.data.sources import load_dataset
    from cnnkit.deploy.decompose import decompose_with_plan, energy_for_budget
    from cnnkit.deploy.fuse import fuse_bn
    from cnnkit.train.checkpoint import save_weights

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    src = Path(run_dir)
    model, meta = load_run(src)
    cfg = _run_config(src)
    dataset = dataset or cfg.get("dataset", "fashion-mnist")
    out = Path(output) if output else src.with_name(f"{src.name}-{method}")
    if (out / "model.safetensors").exists():
        raise ValueError(f"{out} already holds a model; choose another --output")
    if mult_adds is not None:
        if rank is not None or energy is not None:
            raise ValueError("give one of rank, energy or mult_adds")
        size = (int(meta["in_chans"]), int(meta.get("image_size", 28)), int(meta.get("image_size", 28)))
        energy = energy_for_budget(model, method, size, mult_adds)
        say(f"energy {energy:.4f} keeps at most {mult_adds} of the mult-adds")
    # checks the method and target before any data is read
    decomposed, plan = decompose_with_plan(model, method, rank=rank, energy=energy)
    target = f"rank {rank}" if rank is not None else f"energy {energy:.4g}"
    if mult_adds is not None:
        target += f" (for <= {mult_adds} of the mult-adds)"
    if not plan.layers:
        raise ValueError(
            f"no conv of {meta['model']} was decomposed with {method} at {target} "
            f"(left alone: {'; '.join(f'{k}: {v}' for k, v in plan.skipped.items()) or 'no k x k convs'})"
        )
    train_subset = train_subset if train_subset is not None else cfg.get("train_subset")
    data = load_dataset(
        dataset,
        data_dir=data_dir or cfg.get("data_dir"),
        train_subset=train_subset,
        seed=int(cfg.get("seed", 0)),
        image_size=meta.get("image_size") if dataset in ("imagefolder", "synthetic") else None,
    )
    test_subset = test_subset if test_subset is not None else cfg.get("test_subset")
    if test_subset is not None:
        if not 0 < test_subset <= len(data.test_y):
            raise ValueError(f"--test-subset must be in 1..{len(data.test_y)}; got {test_subset}")
        keep = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(0))[:test_subset]
        data.test_x, data.test_y = data.test_x[keep], data.test_y[keep]
    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    eval_bs = 500

    variants: dict[str, nn.Module] = {}

    def measure(label: str, m: nn.Module) -> dict[str, Any]:
        row = _measure(label, m, data, mean, std, eval_bs)
        variants[label] = m
        say(f"{label}: top-1 {100 * row['test_top1']:.2f}%, {row['mult_adds'] / 1e6:.2f}M mult-adds")
        return row

    rows = [
        measure("original", model),
        measure("original, BN folded", fuse_bn(model)),
        measure("decomposed", decomposed),
    ]
    final = decomposed
    if recalibrate and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in decomposed.modules()):
        final = copy.deepcopy(decomposed)
        recalibrate_bn(final, data.train_x[:recalibrate], mean, std)
        rows.append(
            measure(f"decomposed, BN re-estimated ({min(recalibrate, len(data.train_y))} images)", final)
        )
    history: list[dict[str, float]] = []
    if finetune_epochs > 0:
        final = copy.deepcopy(final)
        torch.manual_seed(seed)
        history = finetune(
            final,
            data,
            mean,
            std,
            epochs=finetune_epochs,
            lr=lr,
            batch_size=batch_size,
            crop_pad=int(cfg.get("crop_pad", 0)),
            hflip=float(cfg.get("hflip", 0.0)),
            seed=seed,
            log=say,
        )
        rows.append(measure(f"decomposed + fine-tune ({finetune_epochs} ep)", final))
    rows.append(measure(rows[-1]["variant"] + ", BN folded", fuse_bn(final)))

    if latency:
        _add_latencies(rows, variants, tuple(int(v) for v in data.test_x.shape[1:]))
    out.mkdir(parents=True, exist_ok=True)
    new_meta = {
        **meta,
        "decomposition": plan.spec(),
        "source_run": str(src),
        "finetune_epochs": finetune_epochs,
    }
    save_weights(out / "model.safetensors", final, new_meta)
    report = {
        "model": meta["model"],
        "dataset": dataset,
        "source_run": str(src),
        "output": str(out),
        "method": method,
        "target": target,
        "finetune_epochs": finetune_epochs,
        "finetune_lr": lr,
        "finetune_images": len(data.train_y) if finetune_epochs else 0,
        "finetune_history": history,
        "recalibrate_images": min(recalibrate, len(data.train_y)),
        "test_images": len(data.test_y),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "plan": plan.to_dict(),
        "rows": rows,
    }
    (out / "decompose.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "decompose.md").write_text(render_markdown(report))
    return report
