"""Optimisers (lecture: "Learning Rates"): SGD with momentum or Nesterov, Adam, AdamW.

Weight decay skips norm weights and all biases unless asked (Goyal et al. 2017 and
timm's default: decaying them only pulls BN's gamma to zero).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "build_optimizer", "param_groups"]

OPTIMIZERS = ("sgd", "adam", "adamw")


def param_groups(
    model: nn.Module, weight_decay: float, decay_norm_bias: bool = False
) -> list[dict[str, Any]]:
    """Two groups: tensors that decay (conv/linear weights) and those that don't (1-D: biases, norm scales)."""
    if decay_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
    groups = param_groups(model, weight_decay, decay_norm_bias)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
