"""The Inception module of GoogLeNet (lecture slide "GoogLeNet - Inception module").

Szegedy et al. 2015, "Going deeper with convolutions" (CVPR), figure 2:

- (a) naive version, :class:`InceptionNaive`: 1x1, 3x3 and 5x5 convolutions and a
  3x3 max-pooling run in parallel on the same input and their outputs are
  concatenated along the channels. The pooling branch passes all ``in_channels``
  through, so the width can only grow from module to module, and the 3x3/5x5
  convolutions act on the full input width, which makes them expensive;
- (b) with dimensionality reduction, :class:`Inception`: 1x1 convolutions reduce
  the width before the 3x3 and 5x5 convolutions and project the pooled features,
  so the module costs a fraction of (a) for the same branch widths. For
  inception(3a) the weights are 192*64 + 192*96 + 96*9*128 + 192*16 + 16*25*32 +
  192*32 = 163,328 = 159.5 Ki, the "159K" of the paper's Table 1.

:class:`Inception` uses torchvision's submodule names (``branch1`` ...
``branch4``, each convolution a :class:`BasicConv2d` with ``conv`` and ``bn``),
so a GoogLeNet built from it has torchvision's ``state_dict``. torchvision's
``branch3`` uses a 3x3 convolution where the paper has 5x5 (a known quirk of
torchvision's port, pytorch/vision#906, kept so its ImageNet weights load); it is
the default here too, and ``branch3_kernel_size=5`` gives the paper's module.

GoogLeNet v1 itself has no batch normalisation; torchvision's port (and its
weights) adds BatchNorm with ``eps=1e-3`` after every convolution, which is the
default norm here (``norm_layer=None``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from cnnkit.layers.act import ActLayer, get_act
from cnnkit.layers.norm import NormLayer, get_norm_layer

__all__ = ["BasicConv2d", "Inception", "InceptionNaive", "inception_batch_norm"]


def inception_batch_norm(num_channels: int) -> nn.BatchNorm2d:
    """BatchNorm with ``eps=1e-3``, the value of torchvision's GoogLeNet (from the TF Inception port)."""
    return nn.BatchNorm2d(num_channels, eps=1e-3)


def _check_positive(**widths: int) -> None:
    for name, value in widths.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int (a channel count); got {value!r}")


class BasicConv2d(nn.Module):
    """Convolution -> norm -> activation, with torchvision's names ``conv`` and ``bn``.

    ``norm_layer=None`` is :func:`inception_batch_norm`; with ``norm_layer="none"``
    the norm is an identity and the convolution gets a bias (otherwise the norm's
    shift makes a bias redundant, and torchvision has none).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer = "relu",
    ) -> None:
        super().__init__()
        _check_positive(
            in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride
        )
        if padding < 0:
            raise ValueError(f"padding must be >= 0; got {padding}")
        norm = (inception_batch_norm if norm_layer is None else get_norm_layer(norm_layer))(out_channels)
        bias = isinstance(norm, nn.Identity)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
        )
        self.bn = norm
        self.act = get_act(act_layer)()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _Branches(nn.Module):
    """Four branches ``branch1..branch4`` on the same input, their outputs concatenated along the
    channels in that order (both Inception modules of Szegedy et al. 2015, fig. 2)."""

    branch1: nn.Module
    branch2: nn.Module
    branch3: nn.Module
    branch4: nn.Module
    _out_channels: int

    @property
    def out_channels(self) -> int:
        """Width of the concatenated output, the sum of the branches' (see the class docstring)."""
        return self._out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class InceptionNaive(_Branches):
    """Inception module, naive version (Szegedy et al. 2015, fig. 2a).

    Branches, concatenated in this order: ``branch1`` 1x1 conv (``ch1x1``),
    ``branch2`` 3x3 conv (``ch3x3``), ``branch3`` 5x5 conv (``ch5x5``) and
    ``branch4`` 3x3 max-pool with stride 1, which keeps all ``in_channels``.
    Padding keeps the spatial size, so ``out_channels = ch1x1 + ch3x3 + ch5x5 +
    in_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3: int,
        ch5x5: int,
        *,
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer = "relu",
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, ch1x1=ch1x1, ch3x3=ch3x3, ch5x5=ch5x5)
        conv = partial(BasicConv2d, norm_layer=norm_layer, act_layer=act_layer)
        self.branch1 = conv(in_channels, ch1x1, 1)
        self.branch2 = conv(in_channels, ch3x3, 3, padding=1)
        self.branch3 = conv(in_channels, ch5x5, 5, padding=2)
        self.branch4 = nn.MaxPool2d(3, stride=1, padding=1)
        self._out_channels = ch1x1 + ch3x3 + ch5x5 + in_channels


class Inception(_Branches):
    """Inception module with dimensionality reduction (Szegedy et al. 2015, fig. 2b).

    Arguments follow the columns of the paper's Table 1 (and torchvision):
    ``ch1x1`` ("#1x1"), ``ch3x3red``/``ch3x3`` ("#3x3 reduce"/"#3x3"),
    ``ch5x5red``/``ch5x5`` ("#5x5 reduce"/"#5x5") and ``pool_proj``. Branches:

    - ``branch1``: 1x1 conv to ``ch1x1``;
    - ``branch2``: 1x1 conv to ``ch3x3red``, then 3x3 conv to ``ch3x3``;
    - ``branch3``: 1x1 conv to ``ch5x5red``, then a ``branch3_kernel_size`` conv to
      ``ch5x5``. The default 3 is torchvision's (its ImageNet weights have 3x3
      kernels here); 5 is the paper's 5x5 convolution;
    - ``branch4``: 3x3 max-pool (stride 1, ``ceil_mode`` as torchvision), then 1x1
      conv to ``pool_proj``.

    ``out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj``; the spatial size is kept.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        *,
        branch3_kernel_size: int = 3,
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer = "relu",
    ) -> None:
        super().__init__()
        _check_positive(
            in_channels=in_channels,
            ch1x1=ch1x1,
            ch3x3red=ch3x3red,
            ch3x3=ch3x3,
            ch5x5red=ch5x5red,
            ch5x5=ch5x5,
            pool_proj=pool_proj,
        )
        if branch3_kernel_size not in (3, 5):
            raise ValueError(
                f"branch3_kernel_size must be 3 (torchvision's GoogLeNet) or 5 (the paper's 5x5); "
                f"got {branch3_kernel_size!r}"
            )
        conv = partial(BasicConv2d, norm_layer=norm_layer, act_layer=act_layer)
        k = branch3_kernel_size
        self.branch1 = conv(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(
            conv(in_channels, ch3x3red, 1),
            conv(ch3x3red, ch3x3, 3, padding=1),
        )
        self.branch3 = nn.Sequential(
            conv(in_channels, ch5x5red, 1),
            conv(ch5x5red, ch5x5, k, padding=k // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            conv(in_channels, pool_proj, 1),
        )
        self.branch3_kernel_size = k
        self._out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
