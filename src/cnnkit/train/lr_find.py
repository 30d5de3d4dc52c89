"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks", sec. 3.3; fastai's ``lr_find``): train a few steps while the rate grows
exponentially, record the loss, and read a peak rate off the curve (lecture: "Learning Rates").

:func:`find_lr` runs the test on the caller's model, batches and optimizer and puts back
everything it touched (weights, buffers, gradients, train/eval mode, the global RNG), so a
run that calls it trains exactly as one that does not. :func:`choose_lr` is the rule that
turns the curve into a rate, a pure function of the recorded numbers;
:func:`plot_lr_find` draws the curve with the choice marked.

The rule (:data:`DEFAULT_RULE`, ``"steep"``) was chosen by measurement:
``benchmarks/lr_find_rule.py`` trains fmnet and resnet20 on 5,000 Fashion-MNIST images for
3 cosine epochs at each candidate's rate and at a sweep of fixed rates
(``benchmarks/results/lr_find_rule.md``). From a 100-step test, the steepest descent
landed within a few tenths of a point of the best swept rate on both models; a tenth of
the minimum was right for fmnet (whose loss still falls at lr 10) but ten points short on
resnet20, and fastai's valley was 5 and 32 points short (its rates 5-25x too low for SGD).
The rule and the test's length go together: the smoothed loss lags the raw one by ~50
steps, so a 200-step test reads the steepest descent about half a decade lower.
"""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.run import atomic_write

__all__ = ["DEFAULT_RULE", "RULES", "LRFind", "choose_lr", "find_lr", "plot_lr_find"]

RULES = ("min/10", "valley", "steep")
DEFAULT_RULE = "steep"  # measured: see the module docstring
SMOOTHING_BETA = 0.98  # fastai's AvgSmoothLoss: ~50 steps of memory
# The curve is read up to its first rise of 10% above its minimum so far: past that the
# run is unstable, and a loss falling back after a spike (measured on resnet20) looks
# like a steep descent at 10x the rate.
FIRST_RISE = 1.1
# Where the chosen rate is clamped. SGD's bounds bracket the peak rates the zoo trains with
# (0.02-0.4 at batch 128-256); Adam's are the usual 1e-5..1e-2 of the Adam family (not
# measured here). A rate outside them means the curve was too noisy to read.
SGD_BOUNDS = (1e-4, 1.0)
ADAM_BOUNDS = (1e-5, 1e-2)


@dataclass(frozen=True)
class LRFind:
    """The outcome of one range test: the curve and the rate read off it."""

    lrs: list[float]  # the rate of each step taken (an exponential ramp)
    losses: list[float]  # the raw training loss of each step, before its update
    smoothed: list[float]  # exponentially smoothed with bias correction (fastai: beta 0.98)
    lr: float  # the chosen peak learning rate
    rule: str  # one line: how lr was chosen, with its numbers (the trainer prints it)
    seconds: float  # wall time of the test

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: a non-finite loss (the step that diverged) becomes None."""
        out = asdict(self)
        for key in ("losses", "smoothed"):
            out[key] = [v if math.isfinite(v) else None for v in out[key]]
        return out


# ---------------------------------------------------------------- the rule


def _valley(lrs: Sequence[float], smoothed: Sequence[float]) -> tuple[int, str]:
    """fastai v2's default ``valley`` (fastai/callback/schedule.py): the longest strictly
    decreasing subsequence of the loss, then the point about halfway along it
    (``start + int(n/3) + int(n/6)`` of its ``n`` steps; fastai's start index, clamped at 0)."""
    n = len(smoothed)
    run = [1] * n  # run[i]: the longest decreasing subsequence that ends at i
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[best_end]:
            best_end = i
    start = best_end - run[best_end]  # fastai's arithmetic (one before the first point)
    third = (best_end - start) / 3
    idx = max(0, start + int(third) + int(third / 2))
    span = f"lr {lrs[max(start, 0)]:.3g}..{lrs[best_end]:.3g} ({run[best_end]} steps)"
    return (
        idx,
        f"valley: the longest descent of the smoothed loss runs over {span}; its middle is lr {lrs[idx]:.3g}",
    )


def _steep(lrs: Sequence[float], smoothed: Sequence[float]) -> tuple[int, str]:
    """fastai's ``steep`` (v1's "min numerical gradient"): where the smoothed loss falls fastest
    per unit of log-rate; the rate at the segment's left end."""
    slopes = [
        (smoothed[i + 1] - smoothed[i]) / math.log(lrs[i + 1] / lrs[i]) for i in range(len(smoothed) - 1)
    ]
    idx = min(range(len(slopes)), key=slopes.__getitem__) if slopes else 0
    slope = slopes[idx] if slopes else 0.0
    return idx, f"steep: the smoothed loss falls fastest ({slope:.3g} per e-fold of lr) at lr {lrs[idx]:.3g}"


def choose_lr(
    lrs: Sequence[float],
    smoothed: Sequence[float],
    *,
    rule: str = DEFAULT_RULE,
    bounds: tuple[float, float] = SGD_BOUNDS,
    skip_start: int | None = None,
) -> tuple[float, str]:
    """The peak rate read off a range test's smoothed loss, and one line saying how.

    Rules (``rule``), as fastai's ``lr_find`` suggests them:

    - ``"min/10"``: a tenth of the rate at the smoothed loss's minimum (fastai v1's "min
      loss divided by 10", v2's ``minimum``). Smith (2017, sec. 3.3) sets a cycle's maximum
      where the accuracy stops improving; at the loss's minimum training is already on the
      edge of diverging, and a decade below leaves the margin a whole run needs;
    - ``"valley"``: the middle of the longest descent (fastai v2's default, ``valley``);
    - ``"steep"``: the steepest descent (fastai v1's suggestion, v2's ``steep``): the
      default, measured to give the best peak rate for a cosine run (module docstring).

    As fastai does, the first tenth of the points is skipped (``skip_start``; default
    ``len(lrs) // 10``): the bias-corrected average is still noisy there. The curve is
    read up to its first rise of 10% above its minimum so far (:data:`FIRST_RISE`; a
    guard of cnnkit's, not fastai's) or its first non-finite value. The result is clamped
    to ``bounds``.
    """
    if rule not in RULES:
        raise ValueError(f"unknown lr-find rule {rule!r}; choose from {', '.join(RULES)}")
    if len(lrs) != len(smoothed):
        raise ValueError(f"lrs and smoothed differ in length ({len(lrs)} vs {len(smoothed)})")
    finite = next((i for i, v in enumerate(smoothed) if not math.isfinite(v)), len(smoothed))
    if finite == 0:
        raise ValueError(
            "the loss was non-finite at the first step of the range test; check the model and data "
            "(or lower the start rate)"
        )
    skip = len(lrs) // 10 if skip_start is None else skip_start
    skip = min(skip, finite - 1)  # keep at least one point
    end = _first_rise(smoothed, skip, finite)
    xs, ys = list(lrs[skip:end]), list(smoothed[skip:end])
    if rule == "min/10":
        idx = min(range(len(ys)), key=ys.__getitem__)
        lr = xs[idx] / 10
        how = f"min/10: the smoothed loss is lowest ({ys[idx]:.3g}) at lr {xs[idx]:.3g}; a tenth is {lr:.3g}"
    else:
        idx, how = (_valley if rule == "valley" else _steep)(xs, ys)
        lr = xs[idx]
    low, high = bounds
    if not low <= lr <= high:
        lr = min(max(lr, low), high)
        how += f", clamped to [{low:g}, {high:g}]: {lr:g}"
    return lr, how


def _first_rise(smoothed: Sequence[float], start: int, stop: int) -> int:
    """The end of the first descent: the first index from ``start`` whose loss is more than
    :data:`FIRST_RISE` times the minimum before it (``stop`` if none)."""
    lowest = math.inf
    for i in range(start, stop):
        if smoothed[i] > FIRST_RISE * lowest:
            return i
        lowest = min(lowest, smoothed[i])
    return stop


# ---------------------------------------------------------------- the test


def _bounds_for(optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    adaptive = isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW | torch.optim.RMSprop)
    return ADAM_BOUNDS if adaptive else SGD_BOUNDS


class _Saved:
    """Everything a range test changes, taken before and put back after: every parameter and
    buffer (the state_dict and non-persistent buffers alike), gradients, train/eval mode."""

    def __init__(self, model: nn.Module) -> None:
        self.tensors = [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
        self.modes = [(m, m.training) for m in model.modules()]

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        # copied in place: the caller's optimizer holds these very parameter objects
        for t, saved in zip([*model.parameters(), *model.buffers()], self.tensors, strict=True):
            t.copy_(saved)
        for p, g in zip(model.parameters(), self.grads, strict=True):
            p.grad = g
        for m, training in self.modes:
            m.training = training


def _cuda_devices(model: nn.Module) -> list[int]:
    return sorted(
        {t.device.index or 0 for t in [*model.parameters(), *model.buffers()] if t.device.type == "cuda"}
    )


def find_lr(
    model: nn.Module,
    step_loss: Callable[[int], torch.Tensor],
    make_optimizer: Callable[[float], torch.optim.Optimizer],
    *,
    steps: int = 100,
    start_lr: float = 1e-5,
    end_lr: float = 10.0,
    diverge_factor: float = 4.0,
    rule: str = DEFAULT_RULE,
    bounds: tuple[float, float] | None = None,
) -> LRFind:
    """Smith's learning-rate range test (2017, sec. 3.3), as fastai's ``lr_find`` runs it.

    Step ``i`` of ``steps`` trains at ``start_lr * (end_lr / start_lr) ** (i / (steps - 1))``
    (every param group's rate is set), with ``step_loss(i)`` giving the loss of the i-th
    batch (forward only: this function calls backward and steps) and ``make_optimizer(lr)``
    a *new* optimizer over the model's parameters, of the run's own kind (its momentum and
    weight decay shape the curve). The model trains in train mode. The test stops early when
    the smoothed loss exceeds ``diverge_factor`` times its minimum so far or is not finite.
    The peak rate is :func:`choose_lr`'s ``rule`` on the smoothed curve, clamped to
    ``bounds`` (default by the optimizer: SGD 1e-4..1, Adam-family 1e-5..1e-2). The
    defaults (100 steps from 1e-5 to 10) are what the rule was measured with: the smoothed
    loss lags the raw one by ~50 steps, so another length moves the rate it reads.

    Afterwards the model is as it was, bitwise: parameters, buffers (BN statistics),
    gradients, each module's train/eval flag, and the global torch RNG (CPU, and CUDA on
    the model's devices); ``requires_grad`` is never touched. Generators the caller owns
    (augmentation) are the caller's. Under DistributedDataParallel, ``step_loss`` must return
    the same (all-reduced) loss on every process, since the loss decides when to stop.
    """
    if steps < 2:
        raise ValueError(f"the range test needs at least 2 steps; got {steps}")
    if not 0 < start_lr < end_lr < math.inf:
        raise ValueError(f"the range test needs 0 < start_lr < end_lr; got {start_lr} and {end_lr}")
    if not diverge_factor > 1:
        raise ValueError(f"diverge_factor must be > 1; got {diverge_factor}")
    if rule not in RULES:  # before the test, not after it
        raise ValueError(f"unknown lr-find rule {rule!r}; choose from {', '.join(RULES)}")
    t0 = time.perf_counter()
    saved = _Saved(model)
    try:
        with torch.random.fork_rng(devices=_cuda_devices(model)):
            model.train()
            optimizer = make_optimizer(start_lr)
            lrs, losses, smoothed, stop = _ramp(step_loss, optimizer, steps, start_lr, end_lr, diverge_factor)
            optimizer.zero_grad(set_to_none=True)
    finally:
        saved.restore(model)
    lr, how = choose_lr(lrs, smoothed, rule=rule, bounds=bounds or _bounds_for(optimizer))
    where = f"{len(lrs)} of {steps} steps, lr {lrs[0]:.3g}..{lrs[-1]:.3g}{stop}"
    return LRFind(lrs, losses, smoothed, lr, f"lr {lr:.3g} by {how} ({where})", time.perf_counter() - t0)


def _ramp(
    step_loss: Callable[[int], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    steps: int,
    start_lr: float,
    end_lr: float,
    diverge_factor: float,
) -> tuple[list[float], list[float], list[float], str]:
    """The test's steps: rates, raw and smoothed losses, and why it stopped ("" at the end of the ramp)."""
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best = 0.0, math.inf
    for i in range(steps):
        lr = start_lr * (end_lr / start_lr) ** (i / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = step_loss(i)
        value = float(loss.detach())
        # fastai's AvgSmoothLoss: an exponential average, divided by 1 - beta^n to undo its start at 0
        average = SMOOTHING_BETA * average + (1 - SMOOTHING_BETA) * value
        smooth = average / (1 - SMOOTHING_BETA ** (i + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(smooth)
        if not math.isfinite(smooth):
            return lrs, losses, smoothed, "; stopped: the loss is not finite"
        best = min(best, smooth)
        if smooth > diverge_factor * best:
            why = f"; stopped: the smoothed loss passed {diverge_factor:g}x its minimum"
            return lrs, losses, smoothed, why
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return lrs, losses, smoothed, ""


# ---------------------------------------------------------------- the figure


def plot_lr_find(result: LRFind, path: Path) -> None:
    """The range test's curve: raw and smoothed loss against the rate (log axis), the chosen
    rate marked; a PNG written atomically (:func:`cnnkit.run.atomic_write`)."""
    # here, not at the top: matplotlib takes a second to import, and only a run that plots needs it
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    points = zip(result.lrs, result.losses, result.smoothed, strict=True)
    finite = [(x, r, s) for x, r, s in points if math.isfinite(r) and math.isfinite(s)]
    if finite:
        xs, raw, smooth = zip(*finite, strict=True)
        ax.plot(xs, raw, color="0.7", lw=0.8, label="loss of the step")
        ax.plot(xs, smooth, color="C0", lw=1.8, label=f"smoothed (beta {SMOOTHING_BETA})")
        # the divergence at the end would squash the part that matters: show up to 4x the minimum
        bottom, top = min(min(raw), min(smooth)), min(max(raw), 4 * min(smooth))
        if 0 < bottom < top:
            ax.set_ylim(bottom * 0.95, top * 1.05)
    ax.axvline(result.lr, color="C3", ls="--", label=f"chosen lr {result.lr:.3g}")
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="training loss")
    ax.set_title("\n".join(textwrap.wrap(result.rule, 100)), fontsize=7, loc="left")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
