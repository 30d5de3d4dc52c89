"""The training loop: dataset tensors -> batch augmentation -> model -> loss -> optimizer step
-> metrics and checkpoint, as one flat function (after nanoGPT's train.py).

Every ingredient of the lecture's "key ingredients of training CNNs" is a config field:
dropout/drop-path, normalisation, init, augmentation (crop, flip, cutout, mixup, cutmix),
label smoothing, optimiser, learning-rate schedule with warmup, activation.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from cnnkit.data.augment import cutmix, cutout, mixup, random_crop, random_flip
from cnnkit.data.sources import DatasetTensors, check_dataset_name, load_dataset
from cnnkit.train.checkpoint import (
    WriteError,
    atomic_write,
    load_model_state,
    load_state,
    remove_stale_temporaries,
    save_state,
    save_weights,
)
from cnnkit.train.config import TrainConfig
from cnnkit.train.optim import OPTIMIZERS, build_optimizer
from cnnkit.train.schedule import SCHEDULES, Schedule, build_scheduler

__all__ = ["TrainingError", "evaluate", "train", "validate_config"]


class TrainingError(RuntimeError):
    """Training stopped (non-finite loss or gradient); the last good checkpoint is kept."""


def validate_config(cfg: TrainConfig) -> None:
    """Check every value that can be checked before any data is read; one clear line per problem."""
    from cnnkit.layers.act import get_act
    from cnnkit.layers.init import INIT_SCHEMES
    from cnnkit.layers.norm import get_norm_layer
    from cnnkit.models.registry import get_model_info

    get_model_info(cfg.model)
    check_dataset_name(cfg.dataset)
    for name, value in (("--epochs", cfg.epochs), ("--batch-size", cfg.batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"--lr must be a positive number; got {cfg.lr}")
    for name, p in (("--drop", cfg.drop), ("--drop-path", cfg.drop_path), ("--smoothing", cfg.smoothing)):
        if not 0 <= p < 1:
            raise ValueError(f"{name} must be in [0, 1); got {p}")
    if not 0 <= cfg.hflip <= 1:
        raise ValueError(f"--hflip is a probability in [0, 1]; got {cfg.hflip}")
    for name, v in (
        ("--mixup", cfg.mixup),
        ("--cutmix", cfg.cutmix),
        ("--crop-pad", cfg.crop_pad),
        ("--cutout", cfg.cutout),
        ("--weight-decay", cfg.weight_decay),
        ("--warmup-epochs", cfg.warmup_epochs),
        ("--min-lr", cfg.min_lr),
    ):
        if v < 0:
            raise ValueError(f"{name} must be >= 0; got {v}")
    for name, n in (
        ("--train-subset", cfg.train_subset),
        ("--test-subset", cfg.test_subset),
        ("--image-size", cfg.image_size),
        ("--threads", cfg.threads),
    ):
        if n is not None and n < 1:
            raise ValueError(f"{name} must be >= 1; got {n}")
    if cfg.checkpoint_every < 0:
        raise ValueError(f"--checkpoint-every must be >= 0 (0: each epoch only); got {cfg.checkpoint_every}")
    if cfg.clip_grad is not None and not cfg.clip_grad > 0:
        raise ValueError(f"--clip-grad must be > 0; got {cfg.clip_grad}")
    if cfg.warmup_epochs >= cfg.epochs and cfg.warmup_epochs > 0:
        raise ValueError(
            f"--warmup-epochs ({cfg.warmup_epochs}) must be shorter than --epochs ({cfg.epochs})"
        )
    if cfg.opt not in OPTIMIZERS:
        raise ValueError(f"unknown --opt {cfg.opt!r}; choose from {', '.join(OPTIMIZERS)}")
    if cfg.sched not in SCHEDULES:
        raise ValueError(f"unknown --sched {cfg.sched!r}; choose from {', '.join(SCHEDULES)}")
    if cfg.amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"--amp must be none, bf16 or fp16; got {cfg.amp!r}")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"--device must be auto, cpu or cuda; got {cfg.device!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available (use --device cpu)")
    if cfg.on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"--on-nonfinite must be stop or skip; got {cfg.on_nonfinite!r}")
    if cfg.init not in INIT_SCHEMES:
        raise ValueError(f"unknown --init {cfg.init!r}; choose from {', '.join(INIT_SCHEMES)}")
    if cfg.norm is not None:
        get_norm_layer(cfg.norm)
    if cfg.act is not None:
        get_act(cfg.act)
    if cfg.log not in (None, "tensorboard"):
        raise ValueError(f"--log must be tensorboard; got {cfg.log!r}")
    if not 0 < cfg.model_ema_decay < 1:
        raise ValueError(f"--model-ema-decay must be in (0, 1); got {cfg.model_ema_decay}")
    _check_model_args(cfg)


def _model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The model's constructor arguments beyond the data-given ones (classes, channels, stem)."""
    kwargs: dict[str, Any] = {}
    if cfg.norm is not None:
        kwargs["norm_layer"] = cfg.norm
    if cfg.act is not None:
        kwargs["act_layer"] = cfg.act
    if cfg.drop:
        kwargs["drop_rate"] = cfg.drop
    if cfg.drop_path:
        kwargs["drop_path_rate"] = cfg.drop_path
    for key, value in cfg.model_kwargs.items():
        if key in kwargs or key in ("num_classes", "in_chans", "small_input", "pretrained"):
            raise ValueError(
                f"--model-kwargs {key}=... duplicates a trainer option; set it with its own flag "
                "(--norm, --act, --drop, --drop-path, --small-input, --pretrained)"
            )
        kwargs[key] = value
    return kwargs


def _check_model_args(cfg: TrainConfig) -> None:
    """Build the model on the meta device (no memory, no data) so that an option the
    architecture does not take fails now rather than after the dataset is loaded."""
    from cnnkit.models.registry import create_model

    kwargs = _model_kwargs(cfg)
    if not kwargs:
        return
    try:
        with torch.device("meta"):
            create_model(cfg.model, small_input=bool(cfg.small_input), **kwargs)
    except TypeError as e:
        raise ValueError(f"{cfg.model} does not take {', '.join(kwargs)} ({e})") from e
    except (RuntimeError, NotImplementedError):
        return  # the model's init needs real tensors; the real build reports any problem


# ---------------------------------------------------------------- machine and run folder


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def _default_output(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.model}-{cfg.dataset}-{datetime.now():%Y%m%d-%H%M%S}"


def _prepare_run_dir(cfg: TrainConfig, is_main: bool, resuming: bool) -> tuple[Path, list[Path]]:
    """The run folder, created and checked for writing and free space before any data is read.

    Returns it and the folders this call created (deepest first), which the caller removes
    again if the run fails before writing anything, so a bad option leaves no empty folder.
    """
    out = Path(cfg.output) if cfg.output else _default_output(cfg)
    if not is_main:
        return out, []
    if not resuming and (out / "checkpoint.pt").exists():
        raise ValueError(
            f"{out} already holds a run (checkpoint.pt); continue it with --resume {out} or choose another --output"
        )
    created = [d for d in (out, *out.parents) if not d.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as e:
        _remove_empty(created)
        raise ValueError(
            f"cannot write to output folder {out} ({e.strerror}); choose another --output"
        ) from e
    free = shutil.disk_usage(out).free
    if free < 50 * 2**20:
        _remove_empty(created)
        raise ValueError(
            f"only {free // 2**20} MB free on the disk of {out}; free space or choose another --output"
        )
    if resuming:
        # temporary files of a process killed while writing (the files they were to replace are intact)
        for p in remove_stale_temporaries(out):
            print(f"{out}: removed {p.name}, left by an interrupted write", file=sys.stderr)
    return out, created


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; stop at the first that is not."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            return


def _check_disk_space(cfg: TrainConfig, model: nn.Module, out: Path) -> None:
    """Fail before the first step when the disk cannot hold this run's checkpoints.

    The peak is reached while checkpoint.pt is replaced: model.safetensors, the old
    checkpoint.pt and the new one's temporary file side by side. checkpoint.pt holds the
    model state, the optimizer's per-parameter state (SGD momentum: one copy of the
    parameters; Adam: two) and the EMA copy.
    """
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    copies = 2 if cfg.opt in ("adam", "adamw") else int(cfg.momentum > 0)
    checkpoint = state + copies * params + (state if cfg.model_ema else 0)
    existing = sum(f.stat().st_size for f in (out / "checkpoint.pt", out / "model.safetensors") if f.exists())
    need = int(1.05 * (state + 2 * checkpoint)) + 2**20 - existing
    free = shutil.disk_usage(out).free
    if need > free:
        mb = 2**20
        raise ValueError(
            f"the checkpoints of this run need about {need // mb + 1} MB more on the disk of {out} "
            f"(checkpoint.pt ~{checkpoint // mb + 1} MB, twice while it is replaced, model.safetensors "
            f"~{state // mb + 1} MB); only {free // mb} MB free: free space or choose another --output"
        )


# ---------------------------------------------------------------- data


class _Batches:
    """Batches of the in-memory training set: a seeded permutation per epoch, sharded across ranks.

    Each rank takes its slice of every global batch, so N processes see exactly the
    samples one process would (DistributedSampler's contract, without the per-sample
    Python of a DataLoader).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int) -> None:
        if batch_size % world:
            raise ValueError(
                f"--batch-size {batch_size} must be divisible by the number of processes ({world})"
            )
        if batch_size > n:
            raise ValueError(
                f"--batch-size {batch_size} is larger than the training set ({n} images); lower --batch-size"
            )
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.steps = n // batch_size  # drop the last partial batch (fixed batch statistics)

    def epoch(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g)[: self.steps * self.batch_size]
        per_rank = self.batch_size // self.world
        return perm.view(self.steps, self.world, per_rank)[:, self.rank]


def _augment(
    x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, num_classes: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch augmentation; returns images and soft targets (N, K)."""
    if cfg.crop_pad:
        x = random_crop(x, cfg.crop_pad, g)
    if cfg.hflip:
        x = random_flip(x, g, cfg.hflip)
    if cfg.cutout:
        x = cutout(x, cfg.cutout, g)
    target = F.one_hot(y, num_classes).to(x.dtype)
    use_mix, use_cut = cfg.mixup > 0, cfg.cutmix > 0
    if use_mix and use_cut:  # timm's switch: half the batches each
        if torch.rand((), generator=g).item() < 0.5:
            use_mix = False
        else:
            use_cut = False
    if use_mix:
        x, target, _ = mixup(x, target, cfg.mixup, g)
    elif use_cut:
        x, target, _ = cutmix(x, target, cfg.cutmix, g)
    return x, target


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    batch_size: int = 1000,
    amp: str = "none",
    channels_last: bool = False,
    tta: bool = False,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy and mean loss of ``model`` on uint8 ``images``."""
    model.eval()
    device = mean.device
    correct1 = correct5 = 0
    loss_sum = 0.0
    for start in range(0, len(labels), batch_size):
        x = _standardise(images[start : start + batch_size].to(device), mean, std, channels_last)
        y = labels[start : start + batch_size].to(device)
        with _autocast(device, amp):
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(3)).float()) / 2
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top5[:, 0] == y).sum().item()
        correct5 += (top5 == y[:, None]).any(dim=1).sum().item()
    n = len(labels)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n}


def _standardise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = (x.float().div_(255) - mean[:, None, None]) / std[:, None, None]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


# ---------------------------------------------------------------- outputs


def _plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    axes[0].plot(ep, [r["test_loss"] for r in rows], "o-", label="test")
    axes[0].set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    axes[1].plot(ep, [100 * (1 - r["train_acc"]) for r in rows], "o-", label="train (augmented)")
    axes[1].plot(ep, [100 * r["test_top1_err"] for r in rows], "o-", label="test top-1")
    axes[1].plot(ep, [100 * r["test_top5_err"] for r in rows], "o-", label="test top-5")
    axes[1].set(title="error", xlabel="epoch", ylabel="error (%)")
    axes[2].plot(ep, [r["lr"] for r in rows], "o-")
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    for ax in axes[:2]:
        ax.legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)


def _write_summary_csv(rows: list[dict[str, Any]], path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            # rows of runs resumed across versions may differ in keys: the union, in first-seen order
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


# ---------------------------------------------------------------- the loop


def _build_model(cfg: TrainConfig, data: DatasetTensors) -> nn.Module:
    from cnnkit.layers.init import init_weights
    from cnnkit.models.registry import create_model

    c, h, w = data.image_shape
    small = cfg.small_input if cfg.small_input is not None else min(h, w) < 64
    kwargs = _model_kwargs(cfg)
    try:
        model = create_model(
            cfg.model,
            num_classes=data.num_classes,
            in_chans=c,
            small_input=small,
            pretrained=cfg.pretrained,
            **kwargs,
        )
    except TypeError as e:  # the architecture has no such ingredient
        raise ValueError(f"{cfg.model} does not take {', '.join(kwargs) or 'these options'} ({e})") from e
    min_size = int(getattr(model, "min_input_size", 1))
    if min(h, w) < min_size:
        hint = "" if small else "; add --small-input"
        raise ValueError(
            f"{cfg.model} needs inputs of at least {min_size}x{min_size}; {cfg.dataset} has {h}x{w}{hint}"
        )
    if cfg.init != "default":
        init_weights(model, cfg.init)
    return model


def _iterate(steps: int, start: int, show: bool, desc: str) -> Iterator[int]:
    if not show:
        yield from range(start, steps)
        return
    from tqdm import tqdm

    yield from tqdm(
        range(start, steps),
        initial=start,
        total=steps,
        desc=desc,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset``; returns the contents of ``final.json``.

    The process-wide settings it changes (intra-op threads, deterministic mode, a process
    group it created) are restored when it returns or raises.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()

    def restore_determinism() -> None:
        # only when changed: torch.use_deterministic_algorithms imports torch._inductor (~2.5 s of
        # CPU), which a run that stops at a bad option would otherwise pay on its way out
        if torch.are_deterministic_algorithms_enabled() != deterministic:
            torch.use_deterministic_algorithms(deterministic)

    with contextlib.ExitStack() as cleanup:
        cleanup.callback(torch.set_num_threads, threads)
        cleanup.callback(restore_determinism)
        return _train(cfg, cleanup)
    raise AssertionError("unreachable")  # pragma: no cover (ExitStack does not swallow exceptions)


def _train(cfg: TrainConfig, cleanup: contextlib.ExitStack) -> dict[str, Any]:
    resume_state: dict[str, Any] | None = None
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restarts and not cfg.resume and cfg.output and (Path(cfg.output) / "checkpoint.pt").exists():
        # torchrun --max-restarts restarted the workers with the same command: continue the run
        cfg.resume = cfg.output
    if cfg.resume:
        # the config is the run's own (cnnkit.train.config.resume_config); here only its state is read
        cfg.output = cfg.resume
        ckpt = Path(cfg.resume) / "checkpoint.pt"
        if ckpt.exists():
            resume_state = load_state(ckpt)
        # else the run was stopped before its first checkpoint: it starts over from its config
    validate_config(cfg)

    rank, world, local_rank = _dist_env()
    is_main = rank == 0
    device = _resolve_device(cfg.device)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            cleanup.callback(dist.destroy_process_group)
        if not cfg.output:  # rank 0's timestamped name for all (the ranks' clocks may tick apart)
            name = [str(_default_output(cfg))]
            dist.broadcast_object_list(name, src=0)
            cfg.output = name[0]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu":
        torch.set_num_threads(max(len(os.sched_getaffinity(0)) // world, 1))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    out, created = _prepare_run_dir(cfg, is_main, resuming=bool(cfg.resume))
    # a run that fails before writing anything (bad data, a model too big for the input) leaves no folder
    cleanup.callback(_remove_empty, created)
    cfg.output = str(out)
    if is_main and cfg.resume and resume_state is None:
        print(f"{out}: no checkpoint yet; training from the start", file=sys.stderr)

    data = load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        train_subset=cfg.train_subset,
        seed=cfg.seed,
        image_size=cfg.image_size,
    )
    if cfg.test_subset is not None:
        if cfg.test_subset > len(data.test_y):
            raise ValueError(
                f"--test-subset must be in 1..{len(data.test_y)} for {cfg.dataset}; got {cfg.test_subset}"
            )
        # one fixed subset whatever --seed is, so runs with different seeds are compared on the same images
        keep = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(0))[: cfg.test_subset]
        data.test_x, data.test_y = data.test_x[keep], data.test_y[keep]
    torch.manual_seed(cfg.seed)
    model = _build_model(cfg, data)
    if is_main:
        _check_disk_space(cfg, model, out)
    mean, std = (t.to(device) for t in data.mean_std())
    if resume_state is not None:
        load_model_state(model, resume_state["model"], Path(cfg.resume or "") / "checkpoint.pt")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    n_params = sum(p.numel() for p in model.parameters())

    batches = _Batches(len(train_y), cfg.batch_size, cfg.seed, rank, world)
    steps_per_epoch = batches.steps
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = build_optimizer(
        model,
        cfg.opt,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        decay_norm_bias=cfg.decay_norm_bias,
    )
    schedule = Schedule(
        cfg.sched,
        total_steps,
        steps_per_epoch,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        min_lr_ratio=cfg.min_lr / cfg.lr,
        decay_epochs=cfg.decay_epochs,
        milestones=tuple(cfg.decay_milestones),
        decay_rate=cfg.decay_rate,
    )
    scheduler = build_scheduler(optimizer, schedule)
    ema = None
    if cfg.model_ema:
        from torch.optim.swa_utils import AveragedModel

        from cnnkit.train.optim import ema_update_fn

        ema = AveragedModel(
            model,
            multi_avg_fn=ema_update_fn(cfg.model_ema_decay, warmup=cfg.model_ema_warmup),
            use_buffers=True,
        )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    ddp_model: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    start_epoch, start_step, train_seconds = 0, 0, 0.0
    history: list[dict[str, Any]] = []
    aug_gen_state: torch.Tensor | None = None
    resumed_sums: torch.Tensor | None = None
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        _restore_scheduler(scheduler, resume_state["scheduler"], schedule, cfg.lr)
        scaler.load_state_dict(resume_state["scaler"])
        if ema is not None and resume_state.get("ema") is not None:
            ema.load_state_dict(resume_state["ema"])
        rng = resume_state["rng"]
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)
        start_epoch, start_step = resume_state["epoch"], resume_state["step_in_epoch"]
        train_seconds = resume_state["train_seconds"]
        history = list(resume_state["history"])
        aug = rng.get("augment")
        aug_states = [aug] if isinstance(aug, torch.Tensor) else aug
        if start_step > 0 and aug_states and len(aug_states) == world:
            aug_gen_state = aug_states[rank]  # mid-epoch: continue this rank's augmentation stream
        if start_step > 0 and is_main and resume_state.get("epoch_sums") is not None:
            resumed_sums = resume_state["epoch_sums"].to(device)

    writer = None
    if cfg.log == "tensorboard" and is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ValueError(
                "--log tensorboard needs the tensorboard package: pip install 'cnnkit[tensorboard]'"
            ) from e
        writer = SummaryWriter(str(out / "tb"))
        cleanup.callback(writer.close)

    if is_main:
        _write_text(out / "config.yaml", yaml.safe_dump(asdict(cfg), sort_keys=False))
        # the checkpoint's history is the record: a kill between a checkpoint and the
        # metrics line (or a half-written line) is repaired here
        _write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))

    def aug_states_of_all_ranks(gen: torch.Generator) -> list[torch.Tensor]:
        """Each rank's augmentation RNG state (ranks are seeded apart), gathered for rank 0 to save."""
        if world == 1:
            return [gen.get_state()]
        import torch.distributed as dist

        states: list[Any] = [None] * world
        dist.all_gather_object(states, gen.get_state())
        return states

    def check_finite_weights(where: str) -> None:
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise TrainingError(
                    f"{name} became non-finite {where}; the last checkpoint is kept; "
                    "lower --lr or add --clip-grad"
                )

    def state_dict(
        epoch: int, step_in_epoch: int, aug_states: list[torch.Tensor] | None, sums: torch.Tensor | None
    ) -> dict[str, Any]:
        sched_state = scheduler.state_dict()
        # the schedule is rebuilt from the config on resume (where --epochs may have grown)
        sched_state["lr_lambdas"] = [None] * len(sched_state["lr_lambdas"])
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "augment": aug_states}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": sched_state,
            "scaler": scaler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "rng": rng,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "epoch_sums": sums.cpu() if sums is not None else None,
            "train_seconds": train_seconds,
            "history": history,
            "config": asdict(cfg),
        }

    meta = {
        "model": cfg.model,
        "model_kwargs": _model_kwargs(cfg),
        "num_classes": data.num_classes,
        "in_chans": data.image_shape[0],
        "small_input": bool(getattr(model, "small_input", False)),
        "classes": data.classes,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "image_size": data.image_shape[1],
    }
    show = is_main and (cfg.progress if cfg.progress is not None else sys.stderr.isatty())
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = batches.epoch(epoch)
        gen = torch.Generator(device=device if device.type == "cuda" else "cpu")
        first = start_step if epoch == start_epoch else 0
        if aug_gen_state is not None and epoch == start_epoch:
            gen.set_state(aug_gen_state)
        else:
            gen.manual_seed(cfg.seed * 7919 + epoch * 104729 + rank)
        # this rank's [sum of loss * n, correct, samples]; a mid-epoch resume starts from the saved (global) sums
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        if resumed_sums is not None and epoch == start_epoch:
            sums += resumed_sums
        seen_here, skipped = 0, 0
        t_epoch = t_mark = time.perf_counter()
        for step in _iterate(steps_per_epoch, first, show, f"epoch {epoch + 1}/{cfg.epochs}"):
            idx = order[step].to(device)
            x = _standardise(train_x[idx], mean, std, cfg.channels_last)
            x, target = _augment(x, train_y[idx], cfg, data.num_classes, gen)
            # a skipped step must not leave its trace in the norm layers' running statistics
            buffers = [b.clone() for b in model.buffers()] if cfg.on_nonfinite == "skip" else []
            with _autocast(device, cfg.amp):
                logits = ddp_model(x)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), cfg.clip_grad if cfg.clip_grad else math.inf
            )
            global_step = epoch * steps_per_epoch + step
            finite_loss, finite_grad = bool(torch.isfinite(loss)), bool(torch.isfinite(grad_norm))
            # with fp16 an overflowing gradient is the scaler's business: it skips the step and lowers its scale
            if finite_loss and (finite_grad or scaler.is_enabled()):
                scaler.step(optimizer)
                if ema is not None:
                    ema.update_parameters(model)
                sums[0] += loss.detach() * len(idx)
                sums[1] += (logits.argmax(1) == target.argmax(1)).sum()
                sums[2] += len(idx)
            else:
                what = "loss" if not finite_loss else "gradient"
                if cfg.on_nonfinite == "stop":
                    raise TrainingError(
                        f"non-finite {what} at epoch {epoch + 1}, step {step + 1} (global step {global_step + 1}); "
                        "the last checkpoint is kept; lower --lr, add --clip-grad, or use --on-nonfinite skip"
                    )
                skipped += 1
                with torch.no_grad():
                    for b, saved in zip(model.buffers(), buffers, strict=True):
                        b.copy_(saved)
            scaler.update()
            scheduler.step()
            seen_here += len(idx)
            if (
                cfg.checkpoint_every
                and (global_step + 1) % cfg.checkpoint_every == 0
                and step + 1 < steps_per_epoch
            ):
                check_finite_weights(f"after global step {global_step + 1}")
                now = time.perf_counter()
                train_seconds += now - t_mark
                t_mark = now
                aug_states = aug_states_of_all_ranks(gen)
                global_sums = _all_reduce(sums.clone(), world)
                if is_main:
                    save_state(out / "checkpoint.pt", state_dict(epoch, step + 1, aug_states, global_sums))
        now = time.perf_counter()
        train_seconds += now - t_mark
        epoch_seconds = now - t_epoch
        sums = _all_reduce(sums, world)
        check_finite_weights(f"in epoch {epoch + 1}")
        t1 = time.perf_counter()
        eval_model = ema.module if ema is not None else model
        metrics = evaluate(
            eval_model,
            data.test_x,
            data.test_y,
            mean,
            std,
            batch_size=256,
            amp=cfg.amp,
            channels_last=cfg.channels_last,
            tta=cfg.tta,
        )
        seen = max(float(sums[2]), 1.0)
        row = {
            "epoch": epoch + 1,
            "train_loss": float(sums[0]) / seen,
            "train_acc": float(sums[1]) / seen,
            "test_loss": metrics["loss"],
            "test_top1": metrics["top1"],
            "test_top5": metrics["top5"],
            "test_top1_err": 1 - metrics["top1"],
            "test_top5_err": 1 - metrics["top5"],
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": seen_here * world / max(epoch_seconds, 1e-9),
            "epoch_seconds": epoch_seconds,
            "eval_seconds": time.perf_counter() - t1,
            "nonfinite_skipped": skipped,
        }
        history.append(row)
        if is_main:
            # Weights, then checkpoint, then the metrics line. A kill between the first two
            # leaves a checkpoint of the previous epoch, from which --resume repeats this epoch
            # and rewrites the same weights; the other order would leave the final epoch's
            # weights unwritten when a run is killed just after its last checkpoint. The
            # metrics line is rewritten from the checkpoint's history on resume.
            save_weights(out / "model.safetensors", eval_model, meta)
            save_state(out / "checkpoint.pt", state_dict(epoch + 1, 0, None, None))
            try:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
            except OSError as e:
                raise WriteError(
                    e.errno or errno.EIO,
                    f"cannot append to {out / 'metrics.jsonl'} ({e.strerror}); the checkpoint of epoch "
                    f"{epoch + 1} is saved: free space, then continue with --resume {out}",
                ) from e
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch":
                        writer.add_scalar(k, v, epoch + 1)
            print(
                f"epoch {epoch + 1:>3}/{cfg.epochs}  loss {row['train_loss']:.4f}  train acc {100 * row['train_acc']:.2f}%  "
                f"test top-1 {100 * row['test_top1']:.2f}%  top-5 {100 * row['test_top5']:.2f}%  lr {row['lr']:.4g}  "
                f"{row['images_per_s']:.0f} img/s  {epoch_seconds:.1f}s",
                file=sys.stderr,
                flush=True,
            )
    final = {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "params": n_params,
        "epochs": cfg.epochs,
        "test_top1": history[-1]["test_top1"] if history else None,
        "test_top5": history[-1]["test_top5"] if history else None,
        "train_seconds": train_seconds,
        "eval_seconds": sum(r["eval_seconds"] for r in history),
        "run_dir": str(out),
    }
    if is_main and history:
        _write_summary_csv(history, out / "summary.csv")
        _plot_curves(history, out / "curves.png")
        _write_text(out / "final.json", json.dumps(final, indent=2) + "\n")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # no rank leaves (and tears the group down) before rank 0 has written
    return final


def _restore_scheduler(
    scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict[str, Any], schedule: Schedule, lr: float
) -> None:
    """Load the step count from ``state`` but keep this run's schedule and peak rate.

    ``LambdaLR.load_state_dict`` would copy the saved schedule's fields (its total steps)
    over the new one, so a run resumed with a larger ``--epochs`` would keep the old
    cosine and sit at its floor. The rate of the next step is recomputed with the
    scheduler's own formula, ``base_lr * lambda(last_epoch)``: the same float when nothing
    changed, so resuming stays bitwise exact.
    """
    n = len(scheduler.optimizer.param_groups)
    scheduler.load_state_dict({**state, "lr_lambdas": [None] * n})
    scheduler.lr_lambdas = [schedule] * n
    scheduler.base_lrs = [lr] * n
    for group in scheduler.optimizer.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * schedule(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def _all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def _write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text)

    atomic_write(path, write)
