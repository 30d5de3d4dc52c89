"""Run folders in, run folders out: load a trained run, decompose it, fine-tune it briefly, report.

A run folder written by ``cnnkit train`` holds ``model.safetensors`` whose metadata
names the zoo model and its data (:mod:`cnnkit.run` owns the format). A decomposed model
is not a zoo model, so :func:`decompose_run` adds ``decomposition`` (the method and the
per-layer ranks) to that metadata, and this package registers how such a model is
rebuilt (:func:`~cnnkit.deploy.decomposition.rebuild_decomposed`); :func:`cnnkit.run.load_run`
then loads the new folder like any run.

The report compares, on the run's test set, the original, the decomposed model before
and after fine-tuning, and each with batch norm folded (:func:`~cnnkit.deploy.fuse.fuse_bn`):
top-1 accuracy, parameters, mult-adds per image (:func:`cnnkit.analysis.summarize`) and
measured CPU latency at batch 1 and 64 (:func:`~cnnkit.deploy.latency.measure_latency`).
Fine-tuning is a short cosine-decayed SGD run of the trainer itself
(:func:`cnnkit.train.loop.train` with ``initial_checkpoint``: the source run's data,
augmentation and machine settings, its mixed precision, channels_last, non-finite guard,
checkpoints and ``--resume``), as Jaderberg et al. 2014 and Denton et al. 2014 fine-tune
after the approximation.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.analysis.summary import summarize
from cnnkit.data.sources import DatasetTensors, load_dataset, normalize
from cnnkit.deploy.decomposition import decompose_with_plan, energy_for_budget
from cnnkit.deploy.fuse import fuse_bn
from cnnkit.deploy.latency import compare_latency
from cnnkit.run import WEIGHTS, load_run, read_config, read_metrics, save_weights
from cnnkit.train.config import TrainConfig
from cnnkit.train.loop import evaluate, train

__all__ = ["decompose_run", "finetune_config", "recalibrate_bn", "render_markdown"]


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
            model(normalize(images[start : start + batch_size], mean, std))
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        model.eval()
    return len(norms)


def finetune_config(
    source: Mapping[str, Any],
    initial_checkpoint: str | Path,
    output: str | Path,
    *,
    epochs: int,
    lr: float = 0.01,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    **overrides: Any,
) -> TrainConfig:
    """The trainer's config for fine-tuning the weights in ``initial_checkpoint``.

    SGD with Nesterov momentum 0.9 and cosine decay from ``lr`` to 0, no warm-up; the
    data, augmentation (crop, flip), model options and machine settings (``amp``,
    ``channels_last``, ``device``) of the ``source`` run's config; ``overrides`` on top
    (``dataset``, ``train_subset``, ``seed``...).
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kept = (
        "model", "model_kwargs", "norm", "act", "drop", "drop_path", "small_input",
        "dataset", "data_dir", "train_subset", "test_subset", "image_size", "seed",
        "crop_pad", "hflip", "amp", "channels_last", "device", "deterministic", "progress",
    )  # fmt: skip
    given = {k: source[k] for k in kept if k in source and k in names}
    return TrainConfig(
        **{
            **given,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "weight_decay": weight_decay,
            "initial_checkpoint": str(initial_checkpoint),
            "output": str(output),
            "threads": torch.get_num_threads(),
            "recipe": None,
            **overrides,
        }
    )


# ---------------------------------------------------------------------------- the report


def _measure(
    label: str,
    model: nn.Module,
    data: DatasetTensors,
    mean: torch.Tensor,
    std: torch.Tensor,
    eval_batch_size: int,
) -> dict[str, Any]:
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
    seed: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Decompose the model of ``run_dir``, fine-tune it, and write a new run folder with a report.

    After decomposing, the norm layers' statistics are re-estimated on ``recalibrate``
    training images (:func:`recalibrate_bn`; 0: not), and fine-tuning starts from there.
    Give one of ``rank``, ``energy`` or ``mult_adds`` (the fraction of the mult-adds to
    keep: the energy target is then found by :func:`~cnnkit.deploy.decomposition.energy_for_budget`).
    The new folder (default ``<run_dir>-<method>``) holds ``model.safetensors`` (the
    fine-tuned weights if ``finetune_epochs`` > 0; its metadata carries the
    decomposition spec, so :func:`cnnkit.run.load_run` and therefore ``cnnkit eval`` rebuild
    it), ``decompose.json`` (the full report) and ``decompose.md`` (its table); with
    fine-tuning, also ``decomposed.safetensors`` (where it started) and the trainer's files.
    The dataset (and ``train_subset``, ``seed``, augmentation) default to the source run's
    ``config.yaml``. Returns the report.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    src = Path(run_dir)
    model, meta = load_run(src)
    given = {"dataset": dataset, "data_dir": data_dir, "train_subset": train_subset, "test_subset": test_subset}
    data_cfg = _source_config(src, meta, seed=seed, **{k: v for k, v in given.items() if v is not None})
    out = Path(output) if output else src.with_name(f"{src.name}-{method}")
    if (out / WEIGHTS).exists():
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
    data = _load_data(data_cfg, meta)
    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    variants: dict[str, nn.Module] = {}

    def measure(label: str, m: nn.Module) -> dict[str, Any]:
        row = _measure(label, m, data, mean, std, eval_batch_size=500)
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
    out.mkdir(parents=True, exist_ok=True)
    new_meta = {**meta, "decomposition": plan.spec(), "source_run": str(src), "finetune_epochs": finetune_epochs}
    history: list[dict[str, float]] = []
    if finetune_epochs > 0:
        start = out / "decomposed.safetensors"
        save_weights(start, final, new_meta)
        ft = finetune_config(data_cfg, start, out, epochs=finetune_epochs, lr=lr, batch_size=batch_size)
        final, history = _finetune(ft)
        rows.append(measure(f"decomposed + fine-tune ({finetune_epochs} ep)", final))
    else:
        save_weights(out / WEIGHTS, final, new_meta)
    rows.append(measure(rows[-1]["variant"] + ", BN folded", fuse_bn(final)))
    if latency:
        _add_latencies(rows, variants, tuple(int(v) for v in data.test_x.shape[1:]))
    report = {
        "model": meta["model"],
        "dataset": data_cfg["dataset"],
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


def _source_config(src: Path, meta: dict[str, Any], seed: int | None, **given: Any) -> dict[str, Any]:
    """The source run's config (what it trained on: data, seed, augmentation), ``given`` on top.

    Without its ``config.yaml``, the model and options its weights' metadata names.
    """
    cfg = {"dataset": "fashion-mnist", "model": meta["model"], "model_kwargs": meta.get("model_kwargs", {})}
    cfg.update(read_config(src, required=False))
    return {**cfg, **given, "seed": int(cfg.get("seed", 0)) if seed is None else seed}


def _load_data(cfg: dict[str, Any], meta: dict[str, Any]) -> DatasetTensors:
    data = load_dataset(
        cfg["dataset"],
        data_dir=cfg.get("data_dir"),
        train_subset=cfg.get("train_subset"),
        seed=cfg["seed"],
        image_size=meta.get("image_size"),  # the size it trained at (every source resizes)
    )
    data.keep_test_subset(cfg.get("test_subset"))
    return data


def _finetune(cfg: TrainConfig) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train ``cfg`` (a :func:`finetune_config`); the fine-tuned model and its per-epoch loss and seconds."""
    train(cfg)
    model, _ = load_run(cfg.output or "")
    history = [
        {"epoch": r["epoch"], "train_loss": r["train_loss"], "seconds": r["epoch_seconds"]}
        for r in read_metrics(cfg.output or "")
    ]
    return model, history
