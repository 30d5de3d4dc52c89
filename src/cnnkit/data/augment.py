"""Batch augmentation on the training device (lecture: "Data Augmentation": crop, cutout, mixup).

Every function takes a whole float batch (N, C, H, W) and a ``torch.Generator`` and
draws its randomness per sample (airbench's masked flip and translate), so a batch is
augmented by a few tensor ops rather than N Python calls, and a seed fixes the result.

- ``random_crop``: zero-pad by ``padding`` and crop back, i.e. a per-sample translation
  by (dy, dx) in [-padding, padding]^2 (the CIFAR recipe of He et al. 2016).
- ``random_flip``: horizontal flip with probability p, per sample.
- ``cutout``: zero a ``size`` x ``size`` square at a uniform random centre, clipped at the
  border (DeVries & Taylor 2017).
- ``mixup``: x^ = lam x_i + (1 - lam) x_j, y^ = lam y_i + (1 - lam) y_j with one-hot
  labels, lam ~ Beta(alpha, alpha) (Zhang et al. 2018; the lecture's formula).
- ``cutmix``: paste a box of x_j into x_i, labels mixed by the box's area (Yun et al. 2019).

At test time, ``translate`` and ``tta_views`` give the views that test-time augmentation
averages (airbench's multi-view evaluation: the image and its mirror, each also shifted one
way and the other along the diagonal).
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

__all__ = ["cutmix", "cutout", "mixup", "random_crop", "random_flip", "translate", "tta_views"]


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"augmentations take a batch (N, C, H, W); got shape {tuple(x.shape)}")


def _check_targets(x: torch.Tensor, y: torch.Tensor) -> None:
    # Mixing integer class labels would silently produce garbage; the formula needs one-hot rows.
    if y.dim() != 2 or y.shape[0] != x.shape[0] or not y.is_floating_point():
        raise ValueError(
            f"mixup/cutmix need float one-hot (or soft) targets of shape (N, K) with N = {x.shape[0]}; "
            f"got {y.dtype} {tuple(y.shape)} (use F.one_hot(y, num_classes).float())"
        )


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crop from the zero-padded batch: a translation by up to ``padding`` pixels."""
    _check_batch(x)
    if padding < 0:
        raise ValueError(f"crop padding must be >= 0; got {padding}")
    if padding == 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    off = torch.randint(
        0, 2 * padding + 1, (2, n), generator=generator, device=generator.device if generator else x.device
    ).to(x.device)
    rows = off[0, :, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = off[1, :, None] + torch.arange(w, device=x.device)  # (n, w)
    return xp[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Flip each sample left-right with probability ``p``."""
    _check_batch(x)
    if not 0 <= p <= 1:
        raise ValueError(f"flip probability must be in [0, 1]; got {p}")
    mask = (
        torch.rand(x.shape[0], generator=generator, device=generator.device if generator else x.device).to(
            x.device
        )
        < p
    )
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The batch shifted by ``dy`` rows down and ``dx`` columns right; the uncovered border
    repeats the edge pixels (replicate padding), so a shifted image shows no new frame."""
    _check_batch(x)
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    h, w = x.shape[-2:]
    xp = F.pad(x, (p, p, p, p), mode="replicate")
    return xp[..., p - dy : p - dy + h, p - dx : p - dx + w]


def tta_views(x: torch.Tensor, *, flip: bool, shift: int = 0) -> list[tuple[float, torch.Tensor]]:
    """``(weight, view)`` pairs whose weighted logits test-time augmentation sums (weights sum to 1).

    The image, and with ``flip`` its mirror; with ``shift`` each of them also translated by
    (+shift, +shift) and (-shift, -shift). As airbench (Jordan 2024) weighs them, the unshifted
    views carry half the weight and the shifted ones the other half.
    """
    _check_batch(x)
    if shift < 0:
        raise ValueError(f"test-time shift must be >= 0; got {shift}")
    base = [x, x.flip(3)] if flip else [x]
    if not shift:
        return [(1 / len(base), v) for v in base]
    shifted = [translate(v, d, d) for v in base for d in (shift, -shift)]
    return [(0.5 / len(base), v) for v in base] + [(0.5 / len(shifted), v) for v in shifted]


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square per sample, centred uniformly in the image and clipped at its border."""
    _check_batch(x)
    if size < 0:
        raise ValueError(f"cutout size must be >= 0; got {size}")
    if size == 0:
        return x
    n, _, h, w = x.shape
    dev = generator.device if generator else x.device
    cy = torch.randint(0, h, (n,), generator=generator, device=dev).to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator, device=dev).to(x.device)
    top, left = cy - size // 2, cx - size // 2
    r = torch.arange(h, device=x.device)[None, :]
    c = torch.arange(w, device=x.device)[None, :]
    in_r = (r >= top[:, None]) & (r < top[:, None] + size)  # (n, h)
    in_c = (c >= left[:, None]) & (c < left[:, None] + size)  # (n, w)
    hole = in_r[:, :, None] & in_c[:, None, :]
    return x.masked_fill(hole[:, None], 0.0)


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    # torch's Beta sampler takes no generator; a Python RNG seeded from it keeps runs reproducible.
    seed = int(
        torch.randint(
            0, 2**62, (1,), generator=generator, device=generator.device if generator else "cpu"
        ).item()
    )
    return random.Random(seed).betavariate(alpha, alpha)


def _pairing(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator, device=generator.device if generator else device).to(device)


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup of a batch with a shuffled copy of itself; ``y`` is one-hot (or soft) (N, K). Returns (x, y, lam)."""
    _check_batch(x)
    _check_targets(x, y)
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0; got {alpha}")
    lam = _beta(alpha, generator)
    j = _pairing(x.shape[0], generator, x.device)
    return lam * x + (1 - lam) * x[j], lam * y + (1 - lam) * y[j], lam


def cutmix(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix: one box per batch, of area (1 - lam) H W, from a shuffled copy; labels mixed by the
    box's actual (clipped) area. Returns (x, y, lam_actual)."""
    _check_batch(x)
    _check_targets(x, y)
    if alpha <= 0:
        raise ValueError(f"cutmix alpha must be > 0; got {alpha}")
    n, _, h, w = x.shape
    lam = _beta(alpha, generator)
    j = _pairing(n, generator, x.device)
    cut = math.sqrt(1 - lam)
    bh, bw = round(h * cut), round(w * cut)
    dev = generator.device if generator else "cpu"
    cy = int(torch.randint(0, h, (1,), generator=generator, device=dev).item())
    cx = int(torch.randint(0, w, (1,), generator=generator, device=dev).item())
    y0, y1 = max(cy - bh // 2, 0), min(cy - bh // 2 + bh, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx - bw // 2 + bw, w)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[j][:, :, y0:y1, x0:x1]
    lam_actual = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return out, lam_actual * y + (1 - lam_actual) * y[j], lam_actual
