"""Normalisation layers of the lecture ("Normalization Methods" slides).

For an activation of shape (N, C, H, W) each method computes its mean and
variance over different axes (Wu & He 2018, "Group Normalization", fig. 2):

- batch (Ioffe & Szegedy 2015): over (N, H, W), one statistic per channel, so
  mu in R^C (the slide's M=128, |B|=32, D_F=64 example gives mu in R^128);
- layer (Ba et al. 2016): over (C, H, W), one statistic per sample, as the
  lecture defines it for convolutions;
- instance (Ulyanov et al. 2016): over (H, W), per sample and channel;
- group (Wu & He 2018): over (C/G, H, W), per sample and group of channels.

All four are torch's own layers; ``LayerNorm2d`` is ``GroupNorm`` with a single
group, which is exactly the lecture's layer norm with a per-channel affine (torch's
``nn.LayerNorm`` would need H and W at construction).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable

from torch import nn

__all__ = ["NORMS", "LayerNorm2d", "NormFactory", "NormLayer", "get_norm", "get_norm_layer", "group_norm"]

# a ``channels -> norm module`` factory, what get_norm_layer returns
NormFactory = Callable[[int], nn.Module]
# what a ``norm_layer`` argument takes: a name of NORMS (or an alias) or a factory
NormLayer = str | NormFactory


class LayerNorm2d(nn.GroupNorm):
    """Layer normalisation over (C, H, W) of each sample, with a per-channel scale and shift."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        if num_channels < 1:
            raise ValueError(f"LayerNorm2d needs num_channels >= 1; got {num_channels}")
        super().__init__(1, num_channels, eps=eps, affine=affine)


def group_norm(num_channels: int, num_groups: int = 32, eps: float = 1e-5) -> nn.GroupNorm:
    """GroupNorm with Wu & He's default of 32 groups, reduced to ``gcd(num_groups, C)`` when
    ``num_groups`` does not divide C (48 channels give 16 groups of 3, 24 channels 8 groups)."""
    if num_channels < 1:
        raise ValueError(f"group_norm needs num_channels >= 1; got {num_channels}")
    if num_groups < 1:
        raise ValueError(f"group_norm needs num_groups >= 1; got {num_groups} (Wu & He use 32)")
    return nn.GroupNorm(math.gcd(num_groups, num_channels), num_channels, eps=eps)


def _instance_norm(num_channels: int) -> nn.Module:
    return nn.InstanceNorm2d(num_channels, affine=True)


def _no_norm(num_channels: int) -> nn.Module:
    return nn.Identity()


NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "layer": LayerNorm2d,
    "instance": _instance_norm,
    "group": group_norm,
    "none": _no_norm,
}
_ALIASES = {"bn": "batch", "ln": "layer", "in": "instance", "gn": "group", "identity": "none"}


def get_norm_layer(name: str | Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
    """Resolve a norm name (``"gn"``, ``"batch"``...) into a ``channels -> module`` factory.

    Callables (``nn.BatchNorm2d``, a ``partial``) pass through unchanged, as torchvision's
    ``norm_layer=`` arguments do.
    """
    if callable(name):
        return name
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in NORMS:
        choices = sorted([*NORMS, *_ALIASES])
        close = difflib.get_close_matches(key, choices, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown norm {name!r}{hint}; choose from {', '.join(choices)}")
    return NORMS[key]


def get_norm(name: str | Callable[[int], nn.Module], channels: int) -> nn.Module:
    """Build the norm layer ``name`` for ``channels`` channels: ``get_norm("gn", 64)``."""
    if channels < 1:
        raise ValueError(f"get_norm needs channels >= 1; got {channels}")
    return get_norm_layer(name)(channels)
