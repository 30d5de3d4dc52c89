"""The training loop: dataset tensors -> batch augmentation -> model -> loss -> optimizer step
-> metrics and checkpoint (after nanoGPT's train.py), as a few named steps:

1. set up the run (:func:`~cnnkit.train.session.start_session`: processes, device, run folder);
2. restore (:func:`_restore`: the checkpoint's state and RNG streams, when resuming);
3. one epoch (:func:`_train_epoch`), then evaluate (:func:`evaluate`);
4. save (:func:`_save_epoch`: weights, checkpoint, metrics line), and at the end the summary.

Every ingredient of the lecture's "key ingredients of training CNNs" is a config field:
dropout/drop-path, normalisation, init, augmentation (crop, flip, cutout, mixup, cutmix),
label smoothing, optimiser, learning-rate schedule with warmup, activation. The config is
resolved and frozen before the loop (:mod:`cnnkit.train.config`); the loop only reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from cnnkit.data.augment import cutmix, cutout, mixup, random_crop, random_flip, tta_views
from cnnkit.data.sources import DatasetTensors, load_dataset, normalize
from cnnkit.models.registry import get_model_info
from cnnkit.run import (
    CONFIG,
    METRICS,
    STATE,
    WEIGHTS,
    append_metrics,
    config_text,
    load_state,
    save_state,
    save_weights,
    write_config,
    write_final,
    write_history,
    write_metrics,
    write_text,
)
from cnnkit.train.build import (
    Parts,
    build_model,
    build_parts,
    config_record,
    make_optimizer,
    set_whiten_bias,
    weights_metadata,
)
from cnnkit.train.config import RECIPE_TUNED, TrainConfig, validate_config
from cnnkit.train.defaults import ADAPTIVE_RECIPES, Traits, adapt, banner, model_traits
from cnnkit.train.divergence import MAX_RESTARTS, Diverged, DivergenceWatch, TrainingError
from cnnkit.train.lr_find import find_lr, plot_lr_find
from cnnkit.train.precision import machine_amp, timed_amp
from cnnkit.train.session import Session, all_reduce, check_disk_space, gather, start_session

__all__ = ["TrainingError", "evaluate", "resolved_config_text", "train"]


_RANGE_TEST_STEPS = 100  # the length DEFAULT_RULE was measured at (cnnkit.train.lr_find)


def _after_divergence(run: _Run, d: Diverged, restarts: int) -> tuple[TrainConfig, dict[str, str] | None]:
    """A rate cnnkit chose: the config to restart with, at a quarter of it, said in one line.
    A rate the user gave (or the last restart): stop, naming the rate and what to try.
    Either way nothing this run wrote is kept."""
    cfg, sources, out = run.cfg, run.sources, run.session.out
    if run.session.is_main:
        for name in (CONFIG, METRICS, STATE, WEIGHTS):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "tb", ignore_errors=True)
    where = f"the loss diverged in epoch 1, step {d.step + 1} ({d.why})"
    source = sources.get("lr", "flag") if sources is not None else "given"
    if source.split()[0] in ("flag", "file", "run", "given") or restarts == MAX_RESTARTS:
        raise TrainingError(
            f"{where} at lr {cfg.lr:g} ({source}); nothing was kept: "
            f"try --lr {cfg.lr / 4:g}, or a smaller --batch-size"
        )
    lower = cfg.lr / 4
    print(
        f"{where} at lr {cfg.lr:g} ({source}); restarting from the initial weights at lr {lower:g}",
        file=sys.stderr,
        flush=True,
    )
    assert sources is not None
    restart = dataclasses.replace(cfg, lr=lower, lr_find=False)  # the range test is not run again
    return restart, {**sources, "lr": f"{source}; / 4 after a divergence"}


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
    tta_shift: int = 0,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy and mean loss of ``model`` on uint8 ``images``; with ``tta`` the
    logits averaged with the mirrored view's, with ``tta_shift`` also over views shifted by that
    many pixels (:func:`cnnkit.data.augment.tta_views`)."""
    model.eval()
    device = mean.device
    correct1 = correct5 = 0
    loss_sum = 0.0
    for start in range(0, len(labels), batch_size):
        x = normalize(images[start : start + batch_size].to(device), mean, std, channels_last=channels_last)
        y = labels[start : start + batch_size].to(device)
        with _autocast(device, amp):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            logits = sum(
                w * model(v.contiguous(memory_format=fmt)).float()
                for w, v in tta_views(x, flip=tta, shift=tta_shift)
            )
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top5[:, 0] == y).sum().item()
        correct5 += (top5 == y[:, None]).any(dim=1).sum().item()
    n = len(labels)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n}


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


# ---------------------------------------------------------------- the run's state


@dataclass
class _Progress:
    """How far the run is: where to start, the finished epochs, and a resumed epoch's partial state."""

    epoch: int = 0  # the first epoch to train
    step: int = 0  # the first step of that epoch (> 0 after a mid-epoch checkpoint)
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    aug_state: torch.Tensor | None = None  # this rank's augmentation RNG state, mid-epoch
    sums: torch.Tensor | None = None  # the epoch's global [loss * n, correct, samples] so far, mid-epoch


@dataclass
class _Run:
    """One training run's fixed pieces, read by every step."""

    cfg: TrainConfig
    session: Session
    parts: Parts
    batches: _Batches
    data: DatasetTensors  # on the CPU; the training images are copied to the device once
    train_x: torch.Tensor
    train_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    meta: dict[str, Any]  # model.safetensors' metadata
    sources: dict[str, str] | None  # where each config value came from (None: all given)
    watch: DivergenceWatch | None = None  # the first epoch of a fresh run with an adaptive recipe
    writer: Any = None  # a tensorboard SummaryWriter with --log tensorboard


def _restore(resume: dict[str, Any] | None, session: Session) -> _Progress:
    """The progress a checkpoint records, with the process's RNG streams set back to it."""
    if resume is None:
        return _Progress()
    rng = resume["rng"]
    torch.set_rng_state(rng["torch"])
    if session.device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"], session.device)
    p = _Progress(resume["epoch"], resume["step_in_epoch"], resume["train_seconds"], list(resume["history"]))
    aug = rng.get("augment")
    aug_states = [aug] if isinstance(aug, torch.Tensor) else aug
    if p.step > 0 and aug_states and len(aug_states) == session.world:
        p.aug_state = aug_states[session.rank]  # mid-epoch: continue this rank's augmentation stream
    if p.step > 0 and session.is_main and resume.get("epoch_sums") is not None:
        p.sums = resume["epoch_sums"].to(session.device)
    return p


def _checkpoint(
    run: _Run, progress: _Progress, epoch: int, step: int, aug: list[torch.Tensor] | None, sums: Any
) -> dict[str, Any]:
    """``checkpoint.pt``'s contents: the parts' state, RNG streams, position and history."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "augment": aug}
    if run.session.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(run.session.device)
    return {
        **run.parts.state_dict(),
        "rng": rng,
        "epoch": epoch,
        "step_in_epoch": step,
        "epoch_sums": sums.cpu() if sums is not None else None,
        "train_seconds": progress.train_seconds,
        "history": progress.history,
        "config": config_record(run.cfg, run.session.out),
    }


def _check_finite_weights(model: nn.Module, where: str) -> None:
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise TrainingError(
                f"{name} became non-finite {where}; the last checkpoint is kept; lower --lr or add --clip-grad"
            )


# ---------------------------------------------------------------- the loop


def train(cfg: TrainConfig, sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset``; returns the contents of ``final.json``.

    ``sources`` says where each value came from (:func:`~cnnkit.train.config.resolve_config`):
    the values cnnkit chose (``default``, ``recipe``) are fitted to the model and data
    (:func:`~cnnkit.train.defaults.adapt`), and a loss that diverges in the first epoch
    restarts the run at a quarter of a learning rate cnnkit chose; a rate the user gave
    stops it instead (:class:`DivergenceWatch`). Without ``sources`` every value is taken
    as given. The process-wide settings it changes (intra-op threads, deterministic mode,
    a process group it created) are restored when it returns or raises.
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
        validate_config(cfg)
        session = start_session(cfg, cleanup)
        for restarts in range(MAX_RESTARTS + 1):
            run, progress = _set_up(cfg, sources, session, cleanup)
            try:
                for epoch in range(progress.epoch, cfg.epochs):
                    row = _train_epoch(run, progress, epoch)
                    progress.history.append(row)
                    if session.is_main:
                        _save_epoch(run, progress, row)
                return _finish(run, progress)
            except Diverged as d:
                cfg, sources = _after_divergence(run, d, restarts)
    raise AssertionError(
        "unreachable"
    )  # pragma: no cover (the last restart raises, ExitStack does not swallow)


def _set_up(
    cfg: TrainConfig, sources: dict[str, str] | None, session: Session, cleanup: contextlib.ExitStack
) -> tuple[_Run, _Progress]:
    """Read the data, fit the defaults to it, build the model once (from the checkpoint when
    resuming), restore the state, and write the run's config and its metrics so far."""
    out = session.out
    resume_state = load_state(out / STATE) if cfg.resume and (out / STATE).exists() else None
    if session.is_main and cfg.resume and resume_state is None:  # stopped before its first checkpoint
        print(f"{out}: no checkpoint yet; training from the start", file=sys.stderr)
    data = _load_data(cfg)
    cfg, sources = _fit(cfg, sources, data)
    torch.manual_seed(cfg.seed)
    model, inherited = build_model(cfg, data)
    if session.is_main:
        check_disk_space(cfg, model, out)
    mean, std = data.mean_std()
    meta = {**weights_metadata(cfg, data, model, mean, std), **inherited}
    batches = _Batches(len(data.train_y), cfg.batch_size, cfg.seed, session.rank, session.world)
    if cfg.amp == "auto":
        amp, why = machine_amp(session.device.type, batches.steps * cfg.epochs)
        cfg, sources = dataclasses.replace(cfg, amp=amp), {**(sources or {}), "amp": why}
    if cfg.amp == "auto":

        def run_batch() -> tuple[torch.Tensor, torch.Tensor]:
            idx, dev = batches.epoch(-1)[0], session.device
            x = normalize(
                data.train_x[idx].to(dev), mean.to(dev), std.to(dev), channels_last=cfg.channels_last
            )
            return x, data.train_y[idx].to(dev)

        cfg, sources = _timed_amp(cfg, sources, session, model, run_batch)
    said = ""
    if cfg.lr_find and resume_state is None:
        cfg, sources, said = _range_test(cfg, sources, session, model, data, batches, mean, std)
    parts = build_parts(cfg, model, batches.steps, session.device, session.world, resume_state, out / STATE)
    progress = _restore(resume_state, session)
    run = _Run(
        cfg,
        session,
        parts,
        batches,
        data,
        data.train_x.to(session.device),
        data.train_y.to(session.device),
        mean.to(session.device),
        std.to(session.device),
        meta,
        sources,
    )
    if resume_state is None and cfg.recipe in ADAPTIVE_RECIPES and session.world == 1:
        run.watch = DivergenceWatch(data.num_classes)
    _open_logger(run, cleanup)
    if session.is_main:
        if resume_state is None:
            print(banner(cfg, sources, data, out) + said, file=sys.stderr, flush=True)
        write_config(out, config_record(cfg, out), sources)
        # the checkpoint's history is the record: a kill between a checkpoint and the
        # metrics line (or a half-written line) is repaired here
        write_metrics(out, progress.history)
    return run, progress


def _prepare(model: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
    """The model on the run's device and memory format, before a measurement on it."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)


def _rank0_choice(session: Session, choose: Callable[[], list[Any]], default: list[Any]) -> list[Any]:
    """What rank 0 chooses, for every rank: ranks that measure apart would choose apart and drift."""
    choice = choose() if session.is_main else default
    if session.world > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(choice, src=0)
    return choice


def _timed_amp(
    cfg: TrainConfig, sources: dict[str, str] | None, session: Session, model: nn.Module, run_batch: Any
) -> tuple[TrainConfig, dict[str, str] | None]:
    """``--amp auto`` where the machine alone cannot decide: :func:`~cnnkit.train.precision.timed_amp`
    on the model and one of the run's batches ``run_batch() -> (x, y)``."""
    _prepare(model, cfg, session.device)
    choice = _rank0_choice(session, lambda: list(timed_amp(model, *run_batch())), ["none", ""])
    return dataclasses.replace(cfg, amp=choice[0]), {**(sources or {}), "amp": choice[1]}


def _range_test(
    cfg: TrainConfig,
    sources: dict[str, str] | None,
    session: Session,
    model: nn.Module,
    data: DatasetTensors,
    batches: _Batches,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> tuple[TrainConfig, dict[str, str] | None, str]:
    """``--lr auto``: the config at the peak rate a range test reads off the model's own loss
    (:func:`~cnnkit.train.lr_find.find_lr`, 100 steps of the run's batches, optimizer and
    augmentation, from the initial weights, which it puts back); ``lr_find.png`` and
    ``lr_find.json`` go to the run folder; the line that says so follows the run's first."""
    device = session.device
    _prepare(model, cfg, device)
    order = batches.epoch(-1)  # a batch order of its own, not epoch 0's
    mean, std = mean.to(device), std.to(device)
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(cfg.seed - 1)

    def step_loss(i: int) -> torch.Tensor:
        idx = order[i % len(order)].to(device)
        x = normalize(data.train_x[idx].to(device), mean, std, channels_last=cfg.channels_last)
        x, target = _augment(x, data.train_y[idx].to(device), cfg, data.num_classes, gen)
        with _autocast(device, cfg.amp):
            logits = model(x)
        return F.cross_entropy(logits.float(), target, label_smoothing=cfg.smoothing)

    def test() -> list[Any]:  # one test, on rank 0 (its shard of the batches), whose rate every rank takes
        found = find_lr(model, step_loss, lambda lr: make_optimizer(cfg, model, lr), steps=_RANGE_TEST_STEPS)
        plot_lr_find(found, session.out / "lr_find.png")
        write_text(session.out / "lr_find.json", json.dumps(found.to_dict()) + "\n")
        return [found.lr, found.rule]

    choice = _rank0_choice(session, test, [None, ""])
    share = _RANGE_TEST_STEPS / max(batches.steps * cfg.epochs, 1)
    said = f"\n--lr auto: {choice[1]}; the test took {100 * share:.0f}% of the run's steps"
    return dataclasses.replace(cfg, lr=choice[0]), {**(sources or {}), "lr": f"auto: {choice[1]}"}, said


def _load_data(cfg: TrainConfig) -> DatasetTensors:
    data = load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        train_subset=cfg.train_subset,
        seed=cfg.seed,
        image_size=cfg.image_size,
    )
    data.keep_test_subset(cfg.test_subset)
    return data


def _fit(
    cfg: TrainConfig, sources: dict[str, str] | None, data: DatasetTensors
) -> tuple[TrainConfig, dict[str, str] | None]:
    """The values cnnkit chose, fitted to the model's family and the data (:func:`adapt`)."""
    if sources is None:
        return cfg, None
    tuned_for = RECIPE_TUNED.get(cfg.recipe or "", (None, ()))[0]
    family = get_model_info(cfg.model).family
    traits = model_traits(cfg.model) if cfg.recipe in ADAPTIVE_RECIPES else Traits(0, True)
    n = len(data.train_y)
    cfg, sources = adapt(cfg, sources, n_train=n, family=family, tuned_for=tuned_for, traits=traits)
    # what the machine decides alone; a timed pass at the start of the run decides the rest
    if cfg.amp == "auto":
        cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        amp, why = machine_amp("cuda" if cuda else "cpu", max(n // cfg.batch_size, 1) * cfg.epochs)
        cfg, sources = dataclasses.replace(cfg, amp=amp), {**sources, "amp": why}
    return cfg, sources


def resolved_config_text(cfg: TrainConfig, sources: dict[str, str]) -> str:
    """``cnnkit train --print-config``: the ``config.yaml`` this run would write, each value
    with where it came from (the data is read, to fit the values that depend on it)."""
    validate_config(cfg)
    cfg, fitted = _fit(cfg, sources, _load_data(cfg))
    out = cfg.resume or cfg.output
    return config_text(config_record(cfg, Path(out)) if out else dataclasses.asdict(cfg), fitted)


def _train_epoch(run: _Run, progress: _Progress, epoch: int) -> dict[str, Any]:
    """One epoch of optimizer steps (mid-epoch checkpoints included), then the test evaluation."""
    cfg, session, parts = run.cfg, run.session, run.parts
    model, device, steps = parts.model, session.device, run.batches.steps
    model.train()
    set_whiten_bias(parts, cfg, epoch, device, session.world)
    order = run.batches.epoch(epoch)
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu")
    resumed = epoch == progress.epoch
    if resumed and progress.aug_state is not None:
        gen.set_state(progress.aug_state)
    else:
        gen.manual_seed(cfg.seed * 7919 + epoch * 104729 + session.rank)
    # this rank's [sum of loss * n, correct, samples]; a mid-epoch resume starts from the saved (global) sums
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    if resumed and progress.sums is not None:
        sums += progress.sums
    seen_here, skipped = 0, 0
    t_epoch = t_mark = time.perf_counter()
    for step in _iterate(steps, progress.step if resumed else 0, session.show_progress, epoch, cfg.epochs):
        idx = order[step].to(device)
        x = normalize(run.train_x[idx], run.mean, run.std, channels_last=cfg.channels_last)
        x, target = _augment(x, run.train_y[idx], cfg, run.data.num_classes, gen)
        # a skipped step must not leave its trace in the norm layers' running statistics
        buffers = [b.clone() for b in model.buffers()] if cfg.on_nonfinite == "skip" else []
        with record_function("cnnkit.forward"), _autocast(device, cfg.amp):
            logits = parts.ddp_model(x)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.smoothing)
        if run.watch is not None and epoch == 0:
            run.watch.update(step, float(loss.detach()))
        parts.optimizer.zero_grad(set_to_none=True)
        with record_function("cnnkit.backward"):
            parts.scaler.scale(loss).backward()
        parts.scaler.unscale_(parts.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad or math.inf)
        global_step = epoch * steps + step
        finite_loss, finite_grad = bool(torch.isfinite(loss)), bool(torch.isfinite(grad_norm))
        # with fp16 an overflowing gradient is the scaler's business: it skips the step and lowers its scale
        if finite_loss and (finite_grad or parts.scaler.is_enabled()):
            with record_function("cnnkit.optimizer"):
                parts.scaler.step(parts.optimizer)
                if parts.ema is not None:
                    parts.ema.update_parameters(model)
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
        parts.scaler.update()
        parts.scheduler.step()
        seen_here += len(idx)
        if cfg.checkpoint_every and (global_step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
            _check_finite_weights(model, f"after global step {global_step + 1}")
            now = time.perf_counter()
            progress.train_seconds += now - t_mark
            t_mark = now
            aug_states = gather(gen.get_state(), session.world)
            global_sums = all_reduce(sums.clone(), session.world)
            if session.is_main:
                save_state(
                    session.out / STATE, _checkpoint(run, progress, epoch, step + 1, aug_states, global_sums)
                )
    now = time.perf_counter()
    progress.train_seconds += now - t_mark
    epoch_seconds = now - t_epoch
    sums = all_reduce(sums, session.world)
    _check_finite_weights(model, f"in epoch {epoch + 1}")
    return _evaluate_epoch(run, epoch, sums, seen_here * session.world, epoch_seconds, skipped)


def _precise_bn(run: _Run) -> None:
    """Re-estimate the evaluated model's batch-norm statistics on ``cfg.precise_bn`` training
    images (PreciseBN: Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", sec. 3; fvcore's
    ``update_bn_stats``), with ``torch.optim.swa_utils.update_bn``: the same fixed, seeded images
    every time, unaugmented, in batches of the training batch size.

    The running averages (momentum 0.1) remember the first steps' statistics, and when those
    were extreme (a loss spike early in a short run) the evaluation is wrong long after the
    weights recovered: MobileNet-v1 after 62 steps on 1,000 Fashion-MNIST images scored 9.6%
    (chance) in eval mode and 46% with the batches' own statistics (benchmarks/zoo_defaults.py).
    """
    cfg, model = run.cfg, run.parts.eval_model
    if not cfg.precise_bn or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    from torch.optim.swa_utils import update_bn

    n = len(run.train_y)
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: min(cfg.precise_bn, n)]
    keep = keep.to(run.train_x.device)
    batches = (
        normalize(
            run.train_x[keep[i : i + cfg.batch_size]], run.mean, run.std, channels_last=cfg.channels_last
        )
        for i in range(0, len(keep), cfg.batch_size)
    )
    with _autocast(run.session.device, cfg.amp):
        update_bn(batches, model)
    model.eval()


def _evaluate_epoch(
    run: _Run, epoch: int, sums: torch.Tensor, seen: int, epoch_seconds: float, skipped: int
) -> dict[str, Any]:
    """The epoch's metrics line: training loss and accuracy (all ranks), test top-1/top-5 and loss."""
    cfg = run.cfg
    t1 = time.perf_counter()
    _precise_bn(run)
    metrics = evaluate(
        run.parts.eval_model,
        run.data.test_x,
        run.data.test_y,
        run.mean,
        run.std,
        batch_size=256,
        amp=cfg.amp,
        channels_last=cfg.channels_last,
        tta=cfg.tta and cfg.hflip > 0,  # a mirrored view only for a model that saw mirrors
        tta_shift=cfg.tta_shift,
    )
    samples = max(float(sums[2]), 1.0)
    return {
        "epoch": epoch + 1,
        "train_loss": float(sums[0]) / samples,
        "train_acc": float(sums[1]) / samples,
        "test_loss": metrics["loss"],
        "test_top1": metrics["top1"],
        "test_top5": metrics["top5"],
        "test_top1_err": 1 - metrics["top1"],
        "test_top5_err": 1 - metrics["top5"],
        "lr": run.parts.optimizer.param_groups[0]["lr"],
        "images_per_s": seen / max(epoch_seconds, 1e-9),
        "epoch_seconds": epoch_seconds,
        "eval_seconds": time.perf_counter() - t1,
        "nonfinite_skipped": skipped,
    }


def _save_epoch(run: _Run, progress: _Progress, row: dict[str, Any]) -> None:
    """Rank 0 writes the epoch: weights, then checkpoint, then the metrics line.

    A kill between the first two leaves a checkpoint of the previous epoch, from which
    --resume repeats this epoch and rewrites the same weights; the other order would leave
    the final epoch's weights unwritten when a run is killed just after its last
    checkpoint. The metrics line is rewritten from the checkpoint's history on resume.
    """
    out, epoch = run.session.out, row["epoch"]
    save_weights(out / WEIGHTS, run.parts.eval_model, run.meta)
    save_state(out / STATE, _checkpoint(run, progress, epoch, 0, None, None))
    append_metrics(out, row, epoch)
    if run.writer is not None:
        for k, v in row.items():
            if k != "epoch":
                run.writer.add_scalar(k, v, epoch)
    print(
        f"epoch {epoch:>3}/{run.cfg.epochs}  loss {row['train_loss']:.4f}  train acc {100 * row['train_acc']:.2f}%  "
        f"test top-1 {100 * row['test_top1']:.2f}%  top-5 {100 * row['test_top5']:.2f}%  lr {row['lr']:.4g}  "
        f"{row['images_per_s']:.0f} img/s  {row['epoch_seconds']:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    classes = int(run.meta["num_classes"])
    if epoch == 1 and row["test_top1"] < 1.5 / classes and row["test_loss"] > 0.95 * math.log(classes):
        print(
            f"cnnkit: warning: after epoch 1 {run.cfg.model} is still at chance (test top-1 "
            f"{100 * row['test_top1']:.1f}%, loss {row['test_loss']:.2f} ~ ln {classes}): lr {run.cfg.lr:g} may be too "
            "low or too high for it; --lr auto measures one",
            file=sys.stderr,
            flush=True,
        )


def _finish(run: _Run, progress: _Progress) -> dict[str, Any]:
    """``final.json`` (returned), ``summary.csv`` and ``curves.png``; every rank waits for rank 0."""
    history, cfg = progress.history, run.cfg
    final = {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "params": sum(p.numel() for p in run.parts.model.parameters()),
        "epochs": cfg.epochs,
        "test_top1": history[-1]["test_top1"] if history else None,
        "test_top5": history[-1]["test_top5"] if history else None,
        "train_seconds": progress.train_seconds,
        "eval_seconds": sum(r["eval_seconds"] for r in history),
        "run_dir": str(run.session.out),
    }
    if run.session.is_main and history:
        write_history(run.session.out, history)
        write_final(run.session.out, final)
    if run.session.world > 1:
        import torch.distributed as dist

        dist.barrier()  # no rank leaves (and tears the group down) before rank 0 has written
    return final


def _open_logger(run: _Run, cleanup: contextlib.ExitStack) -> None:
    """``--log tensorboard``: a SummaryWriter in the run folder's ``tb/``, closed with the run."""
    if run.cfg.log != "tensorboard" or not run.session.is_main:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ValueError(
            "--log tensorboard needs the tensorboard package: pip install 'cnnkit[tensorboard]'"
        ) from e
    run.writer = SummaryWriter(str(run.session.out / "tb"))
    cleanup.callback(run.writer.close)


def _iterate(steps: int, start: int, show: bool, epoch: int, epochs: int) -> Iterator[int]:
    if not show:
        yield from range(start, steps)
        return
    from tqdm import tqdm

    yield from tqdm(
        range(start, steps),
        initial=start,
        total=steps,
        desc=f"epoch {epoch + 1}/{epochs}",
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )
