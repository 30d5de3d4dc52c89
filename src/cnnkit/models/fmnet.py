"""FMNet: cnnkit's default net for 28x28 data, after the CIFAR-10 speedrun nets.

The shape follows Page's ResNet-9 "bag of tricks" and Keller Jordan's airbench
(2024): a 3x3 stem, then three conv groups, each conv -> 2x2 max-pool -> norm -> act
-> conv -> norm -> act, a global max-pool and a linear classifier scaled down by a
constant (airbench's 1/9 logit scale). It is small enough to train on a laptop CPU in
about a minute and uses only layers of the lecture (3x3 convs, pooling, batch norm,
GELU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.layers.act import ActFactory, ActLayer, get_act
from cnnkit.layers.fused import fused_conv, fused_conv_relu, fused_norm_act
from cnnkit.layers.norm import NormFactory, NormLayer, get_norm_layer
from cnnkit.models._utils import set_input_constraints
from cnnkit.models.api import ZooModel
from cnnkit.models.registry import register_model

__all__ = ["FMNet", "fmnet"]


class ConvGroup(nn.Module):
    """conv 3x3 -> max-pool 2 -> norm -> act -> conv 3x3 -> norm -> act (airbench's ConvGroup).

    ``strided``: the first conv has stride 2 and no pool follows (a quarter of its mult-adds,
    and no max-pool over the full-size map). ``depth=3``: a third conv -> norm -> act, and the
    output of the first act added to the third's (airbench96's deeper group; the residual
    block of Page's ResNet-9).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm_layer: NormFactory,
        act_layer: ActFactory,
        strided: bool = False,
        depth: int = 2,
    ) -> None:
        super().__init__()
        if depth not in (2, 3):
            raise ValueError(f"a conv group has 2 or 3 convolutions (fmnet group_depth); got {depth}")
        stride = 2 if strided else 1
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.pool: nn.Module = nn.Identity() if strided else nn.MaxPool2d(2)
        self.norm1 = norm_layer(out_channels)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = norm_layer(out_channels)
        self.act2 = act_layer()
        self.residual = depth == 3
        if self.residual:
            self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
            self.norm3 = norm_layer(out_channels)
            self.act3 = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fused_norm_act(fused_conv(x, self.conv1), self.pool, self.norm1, self.act1)
        y = fused_norm_act(fused_conv(x, self.conv2), None, self.norm2, self.act2)
        if self.residual:
            y = x + fused_norm_act(fused_conv(y, self.conv3), None, self.norm3, self.act3)
        return y


class FMNet(ZooModel):
    """Stem + three :class:`ConvGroup` s + global max-pool + scaled linear classifier.

    ``stem_norm=False``: the stem is conv (with a bias) -> act, as airbench's whitening stem,
    whose outputs need no normalisation (``cnnkit train --whiten``); ``strided_first``: the
    first group downsamples with its stride-2 conv instead of a max-pool (:class:`ConvGroup`).
    The default recipe trains the default widths with ``stem_norm=False``, ReLU and the
    whitening stem (cnnkit.train.config ``RECIPES``): on 2 CPU cores the stem's batch norm and
    GELU cost time the convolutions around them do not (benchmarks/speed_ablation.py). The
    ``strided_first`` net at 48/96/192 runs nearer the machine's peak but reaches 94% later.
    ``group_depth=3`` gives every group a third conv and a residual connection (:class:`ConvGroup`).
    In training on the CPU, pool -> batch norm -> ReLU, the frozen stem's bias -> ReLU and the
    weight gradients of the small-map convolutions run cnnkit's fused kernels
    (:mod:`cnnkit.layers.fused`; the same maths, 1.5-2x faster here), eager layers elsewhere.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128),
        *,
        num_classes: int = 10,
        in_chans: int = 1,
        small_input: bool = True,
        stem_width: int = 16,
        stem_norm: bool = True,
        strided_first: bool = False,
        group_depth: int = 2,
        norm_layer: NormLayer = "batch",
        act_layer: ActLayer = "gelu",
        drop_rate: float = 0.0,
        logit_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 1 or stem_width < 1:
            raise ValueError(
                f"FMNet needs three positive widths and stem_width >= 1; got {tuple(widths)}, {stem_width}"
            )
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1); got {drop_rate}")
        norm = get_norm_layer(norm_layer)
        act = get_act(act_layer)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_width, 3, padding=1, bias=not stem_norm),
            norm(stem_width) if stem_norm else nn.Identity(),
            act(),
        )
        chans = [stem_width, *widths]
        self.groups = nn.Sequential(
            *[
                ConvGroup(
                    chans[i], chans[i + 1], norm, act, strided=strided_first and i == 0, depth=group_depth
                )
                for i in range(3)
            ]
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = logit_scale
        # three 2x2 pools: 8 -> 4 -> 2 -> 1 is the smallest input that reaches the head
        set_input_constraints(self, in_chans=in_chans, min_input_size=8, small_input=small_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem_conv, stem_norm, stem_act = self.stem
        x = fused_conv_relu(x, stem_conv, stem_act) if isinstance(stem_norm, nn.Identity) else self.stem(x)
        x = self.pool(self.groups(x)).flatten(1)
        return self.fc(self.dropout(x)) * self.logit_scale


@register_model()
def fmnet(*, num_classes: int = 10, in_chans: int = 1, small_input: bool = True, **kwargs: Any) -> FMNet:
    """cnnkit's default Fashion-MNIST net (stem 16, widths 32/64/128: 0.29M parameters, 15.8M mult-adds at 28x28).

    The shape of Page's ResNet-9 "bag of tricks" and Jordan's airbench (2024), see the module
    docstring. The input size is free from 8x8 up; ``small_input`` is accepted for the zoo's
    common interface and changes nothing (the net is built for small images).
    """
    return FMNet(num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs)
