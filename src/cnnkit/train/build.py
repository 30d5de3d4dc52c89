"""What a training run is made of: the model, once, and the optimizer, schedule, EMA and scaler.

:func:`build_model` builds the zoo model for the data (or takes a run's weights with
``--initial-checkpoint``); :func:`build_parts` wraps it with everything that steps;
:meth:`Parts.state_dict` and :meth:`Parts.load_state_dict` are the training state that
``checkpoint.pt`` holds (:mod:`cnnkit.run` writes and reads it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.data.sources import DatasetTensors, normalize
from cnnkit.layers.init import WHITEN_PATCHES, first_conv, init_weights, whiten_conv_
from cnnkit.models.registry import create_model
from cnnkit.run import load_model_state, load_run
from cnnkit.train.config import TrainConfig, model_kwargs
from cnnkit.train.optim import build_optimizer, ema_update_fn
from cnnkit.train.schedule import Schedule, build_scheduler

__all__ = ["Parts", "build_model", "build_parts", "config_record", "make_optimizer", "weights_metadata"]


def build_model(cfg: TrainConfig, data: DatasetTensors) -> tuple[nn.Module, dict[str, Any]]:
    """The model to train, and what its weights file must carry beyond the trainer's own metadata.

    A zoo model built for the data's classes, channels and size (seeded by the caller),
    with the config's ingredients and init scheme; or, with ``--initial-checkpoint``, the
    model of that run, its weights and structure (a decomposed model stays decomposed).
    """
    c, h, w = data.image_shape
    if cfg.initial_checkpoint is not None:
        model, meta = load_run(cfg.initial_checkpoint)
        if (meta["num_classes"], meta["in_chans"]) != (data.num_classes, c):
            raise ValueError(
                f"--initial-checkpoint {cfg.initial_checkpoint} predicts {meta['num_classes']} classes from "
                f"{meta['in_chans']}-channel images; {cfg.dataset} has {data.num_classes} classes of {c} "
                "channel(s) (fine-tune on data like its training set)"
            )
        return model.train(), {k: v for k, v in meta.items() if k not in _TRAINER_KEYS}
    small = cfg.small_input if cfg.small_input is not None else min(h, w) < 64
    kwargs = model_kwargs(cfg)
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
    if cfg.whiten:
        _whiten(model, data)
    return model, {}


def _whiten(model: nn.Module, data: DatasetTensors) -> None:
    """``--whiten``: the first convolution whitens patches of a fixed, seeded sample of the
    training images (normalised as the trainer feeds them): the same filters on every rank
    and on a resume (whose checkpoint then restores them anyway)."""
    _, h, w = data.image_shape
    keep = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))
    keep = keep[: max(WHITEN_PATCHES // (h * w), 1)]
    mean, std = data.mean_std()
    whiten_conv_(first_conv(model), normalize(data.train_x[keep], mean, std))


# the metadata the trainer writes itself; anything else in an initial checkpoint's is carried over
_TRAINER_KEYS = (
    "model", "model_kwargs", "num_classes", "in_chans", "small_input", "classes", "mean", "std", "image_size"
)  # fmt: skip


def weights_metadata(
    cfg: TrainConfig, data: DatasetTensors, model: nn.Module, mean: torch.Tensor, std: torch.Tensor
) -> dict[str, Any]:
    """The metadata ``model.safetensors`` carries so that :func:`cnnkit.run.load_run` rebuilds the model."""
    return {
        "model": cfg.model,
        "model_kwargs": model_kwargs(cfg),
        "num_classes": data.num_classes,
        "in_chans": data.image_shape[0],
        "small_input": bool(getattr(model, "small_input", False)),
        "classes": data.classes,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "image_size": data.image_shape[1],
    }


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel, over the parameters that train now."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def set_whiten_bias(parts: Parts, cfg: TrainConfig, epoch: int, device: torch.device, world: int) -> None:
    """``--whiten-bias-epochs``: the whitened stem's bias trains in the first epochs only
    (airbench's ``whiten_bias_train_steps``); frozen, the step skips the stem's backward and
    the first group's input gradient. Several processes get a fresh DDP wrapper, whose
    gradient buckets follow the parameters that train."""
    if not cfg.whiten or cfg.whiten_bias_epochs is None:
        return
    bias = first_conv(parts.model).bias
    train = epoch < cfg.whiten_bias_epochs
    if bias is None or bias.requires_grad == train:
        return
    bias.requires_grad_(train)
    if world > 1:
        parts.ddp_model = wrap_ddp(parts.model, device)


@dataclass
class Parts:
    """The model and everything that steps with it."""

    model: nn.Module
    ddp_model: nn.Module  # the model, wrapped in DistributedDataParallel for several processes
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: torch.optim.swa_utils.AveragedModel | None
    lr: float

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and saved: the EMA of the weights when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        sched_state = self.scheduler.state_dict()
        # the schedule is rebuilt from the config on resume (where --epochs may have grown)
        sched_state["lr_lambdas"] = [None] * len(sched_state["lr_lambdas"])
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": sched_state,
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Everything but the model's weights, which are loaded before it moves to its device."""
        self.optimizer.load_state_dict(state["optimizer"])
        _restore_scheduler(self.scheduler, state["scheduler"], self.schedule, self.lr)
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])


def build_parts(
    cfg: TrainConfig,
    model: nn.Module,
    steps_per_epoch: int,
    device: torch.device,
    world: int,
    resume_state: dict[str, Any] | None,
    checkpoint: Path,
) -> Parts:
    """Move ``model`` to ``device`` (its resumed weights loaded first) and build what trains it."""
    if resume_state is not None:
        load_model_state(model, resume_state["model"], checkpoint)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model, cfg.lr)
    schedule = Schedule.from_config(cfg, steps_per_epoch)
    ema = None
    if cfg.model_ema:
        from torch.optim.swa_utils import AveragedModel

        ema = AveragedModel(
            model,
            multi_avg_fn=ema_update_fn(cfg.model_ema_decay, warmup=cfg.model_ema_warmup),
            use_buffers=True,
        )
    ddp_model = wrap_ddp(model, device) if world > 1 else model
    parts = Parts(
        model=model,
        ddp_model=ddp_model,
        optimizer=optimizer,
        schedule=schedule,
        scheduler=build_scheduler(optimizer, schedule),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"),
        ema=ema,
        lr=cfg.lr,
    )
    if resume_state is not None:
        parts.load_state_dict(resume_state)
    return parts


def make_optimizer(cfg: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The run's optimizer (``--opt``, momentum, Nesterov, weight decay) over ``model`` at ``lr``."""
    return build_optimizer(
        model,
        cfg.opt,
        lr=lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        decay_norm_bias=cfg.decay_norm_bias,
    )


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


def config_record(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """The config as written to ``config.yaml`` and ``checkpoint.pt``: plain data, with the run folder."""
    return {**asdict(cfg), "output": str(out)}
