"""Activation functions of the lecture ("Activation Functions" slides).

Sigmoid and tanh (saturating), ReLU, LeakyReLU (slope 0.01), PReLU (He et al.
2015, "Delving deep into rectifiers"), Softplus, Swish/SiLU (Ramachandran et
al. 2017), GELU (Hendrycks & Gimpel 2016) both exact and in the lecture's
sigmoid approximation ``x * sigmoid(1.702 x)``, and the sine activation
(Sitzmann et al. 2020, SIREN).

Where ``torch.nn`` already has the function it is used as is; only the
sigmoid-approximated GELU and the sine are written here, because torch has
neither. ``get_act(name)`` resolves a command-line string once into a factory
that takes no arguments and returns a fresh module.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "ActFactory", "ActLayer", "QuickGELU", "Sine", "get_act", "quick_gelu", "sine"]

# a zero-argument factory of activation modules, what get_act returns
ActFactory = Callable[[], nn.Module]
# what an ``act_layer`` argument takes: a name of ACTIVATIONS or a factory
ActLayer = str | ActFactory


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """The lecture's GELU approximation: ``x * sigmoid(1.702 x)`` (Hendrycks & Gimpel 2016, sec. 2)."""
    return x * torch.sigmoid(1.702 * x)


def sine(x: torch.Tensor, w0: float = 1.0) -> torch.Tensor:
    """Sine activation ``sin(w0 x)`` (Sitzmann et al. 2020, "Implicit neural representations...")."""
    return torch.sin(w0 * x)


class QuickGELU(nn.Module):
    """GELU approximated by ``x * sigmoid(1.702 x)``; see :func:`quick_gelu`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quick_gelu(x)


class Sine(nn.Module):
    """Sine activation ``sin(w0 x)``; see :func:`sine`."""

    def __init__(self, w0: float = 1.0) -> None:
        super().__init__()
        if not w0 > 0:
            raise ValueError(f"Sine needs w0 > 0; got {w0}")
        self.w0 = w0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sine(x, self.w0)

    def extra_repr(self) -> str:
        return f"w0={self.w0}"


# name -> factory taking no arguments. The lecture's LeakyReLU uses slope 0.01
# (also torch's default, pinned here so the lecture's definition holds).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    # in place, as torchvision's nets: saves one activation per layer; autograd raises if a
    # caller needs the input afterwards, so this can never silently give a wrong gradient
    "relu": partial(nn.ReLU, inplace=True),
    "leaky_relu": partial(nn.LeakyReLU, negative_slope=0.01),
    "prelu": nn.PReLU,
    "softplus": nn.Softplus,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),
    "quick_gelu": QuickGELU,
    "sine": Sine,
    "identity": nn.Identity,
}


def get_act(name: str | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Resolve an activation name (``"swish"``) into a factory; callables pass through.

    >>> get_act("leaky_relu")()
    LeakyReLU(negative_slope=0.01)
    """
    if callable(name):
        return name
    key = name.lower().replace("-", "_")
    if key not in ACTIVATIONS:
        close = difflib.get_close_matches(key, list(ACTIVATIONS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown activation {name!r}{hint}; choose from {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[key]
