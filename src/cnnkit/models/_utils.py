"""Helpers shared by the model families."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["check_input", "set_input_constraints"]


def check_input(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook: reject inputs too small for the model or with the wrong channel count.

    Runs before any convolution, so the user sees what to change rather than a
    shape error from deep inside the network.
    """
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a batch of images (N, C, H, W); got {shape}")
    name = getattr(module, "model_name", type(module).__name__)
    in_chans: int = module.in_chans  # type: ignore[assignment]
    if x.shape[1] != in_chans:
        raise ValueError(
            f"{name} was built for {in_chans}-channel inputs; got {x.shape[1]} channels "
            f"(build it with in_chans={x.shape[1]}, or give it {in_chans}-channel images)"
        )
    m: int = module.min_input_size  # type: ignore[assignment]
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h < m or w < m:
        hint = (
            "resize the inputs"
            if getattr(module, "small_input", False)
            else "use small_input=True (--small-input) or larger inputs"
        )
        raise ValueError(f"{name} needs inputs of at least {m}x{m}; got {h}x{w} ({hint})")


def set_input_constraints(model: nn.Module, *, in_chans: int, min_input_size: int, small_input: bool) -> None:
    """Record the accepted inputs on ``model`` and install :func:`check_input` as a pre-hook.

    A forward pre-hook rather than code in ``forward`` keeps ``forward`` free of
    Python shape logic, so ``torch.fx`` tracing and ``torch.compile`` see the bare graph.
    """
    model.in_chans = in_chans  # type: ignore[assignment]
    model.min_input_size = min_input_size  # type: ignore[assignment]
    model.small_input = small_input  # type: ignore[assignment]
    model.register_forward_pre_hook(check_input)
