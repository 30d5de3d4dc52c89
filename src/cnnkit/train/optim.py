"""Optimisers (lecture: "Learning Rates"): SGD with momentum or Nesterov, Adam, AdamW.

Weight decay skips norm weights and all biases unless asked (Goyal et al. 2017 and
timm's default: decaying them only pulls BN's gamma to zero). :func:`ema_update_fn` is
the weight average behind ``--model-ema``.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "build_optimizer", "ema_update_fn", "param_groups"]

OPTIMIZERS = ("sgd", "adam", "adamw")
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm, nn.RMSNorm)


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Ids of the parameters that weight decay skips: every parameter of a normalisation layer
    (whatever its shape: ``nn.LayerNorm([C, H, W])`` has a 3-D scale), every ``bias``, and any
    other tensor of at most one dimension (timm's rule)."""
    skip: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, _NORM_TYPES)
        for pname, p in module.named_parameters(recurse=False):
            if is_norm or pname == "bias" or p.ndim <= 1:
                skip.add(id(p))
    return skip


def param_groups(
    model: nn.Module, weight_decay: float, decay_norm_bias: bool = False
) -> list[dict[str, Any]]:
    """Two groups: tensors that decay (conv/linear weights) and those that don't (biases, norm scales)."""
    if decay_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    skip = _no_decay_ids(model)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if id(p) in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _fusable(model: nn.Module) -> bool | None:
    """Whether torch's fused optimizer kernels take these parameters (floats on CPU or CUDA)."""
    params = [p for p in model.parameters() if p.requires_grad]
    ok = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
        for p in params
    )
    return True if ok else None


def build_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    decay_norm_bias: bool = False,
) -> torch.optim.Optimizer:
    """``torch.optim``'s SGD/Adam/AdamW over :func:`param_groups`."""
    if name not in OPTIMIZERS:
        close = difflib.get_close_matches(name, OPTIMIZERS, n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown optimizer {name!r}{hint}; choose from {', '.join(OPTIMIZERS)}")
    # Checked here because torch does not check a weight decay given per parameter group.
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0; got {lr} (--lr)")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum (Adam's beta1) must be in [0, 1); got {momentum} (--momentum)")
    if not weight_decay >= 0:
        raise ValueError(f"weight decay must be >= 0; got {weight_decay} (--weight-decay)")
    groups = param_groups(model, weight_decay, decay_norm_bias)
    if name == "sgd":
        # fused: one kernel for all parameters (CPU and CUDA), 3x faster than the per-parameter loop
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, fused=_fusable(model)
        )
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def ema_update_fn(decay: float, warmup: bool = True) -> Any:
    """``multi_avg_fn`` for ``torch.optim.swa_utils.AveragedModel``: an EMA of the weights (and buffers).

    ``W_ema <- d_t W_ema + (1 - d_t) W_model`` at the t-th average (t = 1, 2, ...; the first
    call copies), with ``d_t = decay`` or, with ``warmup``, ``min(decay, (1 + t) / (10 + t))``
    (timm's ModelEmaV3 warm-up). torch's ``get_ema_multi_avg_fn`` is the fixed-decay case; it
    is written again here only for the warm-up: at decay 0.999 a fixed EMA still holds
    0.999^1000 = 37% of the initial weights after 1,000 steps, which is most of a short
    CPU run, and evaluates as an untrained net. Integer buffers (BN's batch counter) are
    averaged and rounded as torch does.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1]; got {decay}")

    @torch.no_grad()
    def update(ema: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        t = int(n_averaged.item())  # a host sync per step on CUDA; negligible beside the step itself
        d = min(decay, (1 + t) / (10 + t)) if warmup else decay
        if torch.is_floating_point(ema[0]) or torch.is_complex(ema[0]):
            torch._foreach_lerp_(ema, current, 1 - d)
        else:
            for e, c in zip(ema, current, strict=True):
                e.copy_(e * d + c * (1 - d))

    return update
