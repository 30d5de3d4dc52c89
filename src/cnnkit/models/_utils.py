"""Helpers shared by the model families: argument checks, torchvision's initialisations, input checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["check_input", "check_model_args", "fc_classifier", "set_input_constraints", "torchvision_init"]

InitScheme = Literal["resnet", "vgg", "densenet", "googlenet"]


def check_model_args(who: str, *, num_classes: int, in_chans: int, **rates: float) -> None:
    """The checks every model constructor starts with: integer class and channel counts >= 1, and
    every dropout or drop-path rate (``drop_rate=...``, ``drop_path_rate=...``) in [0, 1)."""
    for name, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{who} needs an integer {name} >= 1; got {name}={value!r}")
    for name, rate in rates.items():
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{who} needs {name} in [0, 1); got {name}={rate}")


def torchvision_init(model: nn.Module, scheme: InitScheme) -> None:
    """Initialise ``model`` in place as torchvision initialises the family's models.

    Every scheme sets affine norms to the identity (weight 1, bias 0). Convolutions get He
    normal weights (He et al. 2015; gain sqrt(2)), fan_out as torchvision's ResNet, VGG and
    MobileNetV2, fan_in as its DenseNet; ``"googlenet"`` draws convolution and linear weights
    from N(0, 0.01^2) truncated to [-2, 2]. Linear layers: untouched (``"resnet"``),
    N(0, 0.01^2) with zero bias (``"vgg"``, torchvision's VGG and mobile nets, which also
    zeroes conv biases), zero bias only (``"densenet"``). Modules are visited in
    ``model.modules()`` order, so a seeded build draws the same numbers as torchvision's loop.
    """
    trunc = scheme == "googlenet"
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if trunc:
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2.0, b=2.0)
            else:
                fan: Literal["fan_in", "fan_out"] = "fan_in" if scheme == "densenet" else "fan_out"
                nn.init.kaiming_normal_(m.weight, mode=fan, nonlinearity="relu")
            if scheme == "vgg" and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if trunc:
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2.0, b=2.0)
            elif scheme == "vgg":
                nn.init.normal_(m.weight, 0.0, 0.01)
            if scheme in ("vgg", "densenet"):
                nn.init.zeros_(m.bias)


def fc_classifier(
    in_features: int,
    num_classes: int,
    act_layer: Callable[[], nn.Module],
    drop_rate: float,
    *,
    hidden: int = 4096,
    dropout_first: bool = False,
) -> nn.Sequential:
    """The three fully connected layers of AlexNet and VGG (torchvision's ``classifier``).

    Two hidden layers of ``hidden`` units with activation and dropout, then the linear
    classifier; dropout comes before each hidden layer (``dropout_first``, AlexNet: Krizhevsky
    et al. 2012, sec. 4.2) or after its activation (VGG), so the indices of the linear layers
    are torchvision's for either net.
    """
    layers: list[nn.Module] = []
    for n_in in (in_features, hidden):
        fc = [nn.Linear(n_in, hidden), act_layer()]
        layers += [nn.Dropout(drop_rate), *fc] if dropout_first else [*fc, nn.Dropout(drop_rate)]
    return nn.Sequential(*layers, nn.Linear(hidden, num_classes))


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
