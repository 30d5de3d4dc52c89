"""Dense connectivity: the DenseNet layer, block and transition (lecture slide "DenseNet").

Huang, Liu, van der Maaten & Weinberger 2017, "Densely Connected Convolutional
Networks" (CVPR, arXiv:1608.06993). Where a ResNet adds, ``x_l = H_l(x_{l-1}) + x_{l-1}``,
a DenseNet concatenates: layer ``l`` of a block sees the feature maps of all layers
before it,

    x_l = H_l([x_0, x_1, ..., x_{l-1}]),

so a block of ``L`` layers has ``L(L+1)/2`` direct connections (the lecture's count,
input included). Each layer adds only ``k`` (the growth rate) new channels, hence
a block fed with ``k_0`` channels ends with ``k_0 + L k``.

- :class:`DenseLayer` is the DenseNet-B ``H_l`` (paper sec. 3, "Bottleneck layers"):
  BN-ReLU-1x1 conv to ``bn_size * k`` channels, then BN-ReLU-3x3 conv to ``k``,
  optional dropout. It returns the ``k`` new channels only.
- :class:`DenseBlock` chains ``L`` dense layers and returns the concatenation
  ``[x_0, x_1, ..., x_L]``.
- :class:`Transition` (sec. 3, "Pooling layers" and "Compression") is BN-ReLU-1x1
  conv to ``floor(theta m)`` channels, then 2x2 average pooling; ``theta < 1``
  makes the network DenseNet-C (DenseNet-BC with bottlenecks, ``theta = 0.5``).

Submodule names follow torchvision's ``_DenseLayer`` / ``_DenseBlock`` /
``_Transition`` so that torchvision's ``state_dict`` loads unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from cnnkit.layers.act import ActLayer, get_act
from cnnkit.layers.norm import NormLayer, get_norm_layer

__all__ = ["DenseBlock", "DenseLayer", "Transition"]


def _check_positive_int(owner: str, name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} needs {name} to be an integer >= 1; got {value!r}")


def _check_rate(owner: str, name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{owner} needs 0 <= {name} < 1; got {value!r}")


class DenseLayer(nn.Module):
    """One bottleneck layer ``H_l`` of a DenseNet-B block (Huang et al. 2017, sec. 3).

    ``BN - act - conv1x1(in_channels -> bn_size * k) - BN - act - conv3x3(-> k)``,
    then dropout with probability ``drop_rate`` (the paper uses 0.2 on CIFAR
    without augmentation). The input is a tensor or a list of tensors
    ``[x_0, ..., x_{l-1}]``, concatenated along channels before the first norm;
    the output is the ``growth_rate`` new channels ``x_l``.

    ``memory_efficient=True`` recomputes the concatenation, first norm and 1x1
    conv in the backward pass instead of storing them (Pleiss et al. 2017,
    "Memory-Efficient Implementation of DenseNets").
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        *,
        norm_layer: NormLayer = "batch",
        act_layer: ActLayer = "relu",
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        _check_positive_int("DenseLayer", "in_channels", in_channels)
        _check_positive_int("DenseLayer", "growth_rate", growth_rate)
        _check_positive_int("DenseLayer", "bn_size", bn_size)
        _check_rate("DenseLayer", "drop_rate", drop_rate)
        norm = get_norm_layer(norm_layer)
        act = get_act(act_layer)
        inter = bn_size * growth_rate
        self.norm1 = norm(in_channels)
        self.relu1 = act()
        self.conv1 = nn.Conv2d(in_channels, inter, kernel_size=1, bias=False)
        self.norm2 = norm(inter)
        self.relu2 = act()
        self.conv2 = nn.Conv2d(inter, growth_rate, kernel_size=3, padding=1, bias=False)
        self.in_channels = in_channels
        self.growth_rate = growth_rate
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def bottleneck(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``conv1(act(norm1([x_0, ..., x_{l-1}])))``: the 1x1 bottleneck on the concatenation."""
        return self.conv1(self.relu1(self.norm1(torch.cat(inputs, 1))))

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        inputs = [x] if isinstance(x, torch.Tensor) else list(x)
        if self.memory_efficient and torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            out = cp.checkpoint(self.bottleneck, *inputs, use_reentrant=False)
        else:
            out = self.bottleneck(*inputs)
        out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out

    def extra_repr(self) -> str:
        return f"growth_rate={self.growth_rate}, drop_rate={self.drop_rate}"


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers ``denselayer1 .. denselayerL``, each fed with all earlier outputs.

    Returns ``[x_0, x_1, ..., x_L]`` concatenated along channels:
    ``in_channels + num_layers * growth_rate`` channels (``out_channels``).
    """

    def __init__(
        self,
        num_layers: int,
        in_channels: int,
        growth_rate: int,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        *,
        norm_layer: NormLayer = "batch",
        act_layer: ActLayer = "relu",
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        _check_positive_int("DenseBlock", "num_layers", num_layers)
        _check_positive_int("DenseBlock", "in_channels", in_channels)
        _check_positive_int("DenseBlock", "growth_rate", growth_rate)
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer(
                in_channels + i * growth_rate,
                growth_rate,
                bn_size,
                drop_rate,
                norm_layer=norm_layer,
                act_layer=act_layer,
                memory_efficient=memory_efficient,
            )
        self.in_channels = in_channels
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """Transition between dense blocks: ``norm - act - conv1x1 - avgpool 2x2/2`` (Huang et al. 2017, sec. 3).

    The 1x1 conv compresses ``m`` input channels to ``floor(compression * m)``
    (``theta`` in the paper; 1 means no compression, DenseNet-BC uses 0.5).
    """

    def __init__(
        self,
        in_channels: int,
        compression: float = 0.5,
        *,
        norm_layer: NormLayer = "batch",
        act_layer: ActLayer = "relu",
    ) -> None:
        _check_positive_int("Transition", "in_channels", in_channels)
        if not 0.0 < compression <= 1.0:
            raise ValueError(
                f"Transition needs 0 < compression <= 1 (theta in the paper); got {compression!r}"
            )
        out_channels = math.floor(compression * in_channels)
        if out_channels < 1:
            raise ValueError(
                f"Transition with compression={compression} leaves no channels of {in_channels}; raise compression"
            )
        super().__init__()
        self.norm = get_norm_layer(norm_layer)(in_channels)
        self.relu = get_act(act_layer)()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.compression = compression
