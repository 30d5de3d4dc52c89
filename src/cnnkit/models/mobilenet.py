"""MobileNet v1 (lecture slide "MobileNets"; Howard et al. 2017, "MobileNets: Efficient
convolutional neural networks for mobile vision applications", arXiv:1704.04861).

A 3x3/2 convolution, then 13 depthwise separable blocks (depthwise 3x3, BN, ReLU,
pointwise 1x1, BN, ReLU; the paper's fig. 3 and table 1), global average pooling and a
fully connected classifier. ``width_mult`` is the paper's width multiplier alpha (sec.
4.2): every layer gets ``max(8, int(alpha * channels))`` channels, TF-slim's rounding
(``mobilenet_v1.py``, ``min_depth=8``). The resolution multiplier (sec. 4.3) needs no
argument: the global pool makes the net resolution independent, so it is the input size.

``mobilenet_v1_conv`` is the paper's "Conv MobileNet" of table 4 (the lecture's table):
the same net with each depthwise separable block replaced by a full 3x3 convolution.

================  ==========  ===========  =============================================
model             params      mult-adds    source
================  ==========  ===========  =============================================
MobileNet         4.2M        569M         Howard et al. 2017, tables 4 and 8
Conv MobileNet    29.3M       4866M        Howard et al. 2017, table 4
================  ==========  ===========  =============================================

(at 224x224, 1000 classes; parameters are the weights of the convolutions and of the
classifier and its bias, without the BN scales and shifts.)

torchvision has no MobileNet v1, so there are no torchvision weights to match.
``small_input=True`` makes the stem stride 1 (28x28 inputs end in 2x2 maps, not 1x1).
All downsampling is by padded 3x3 convolutions, so any input from 1x1 up runs:
``min_input_size`` is 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cnnkit.layers.act import ActLayer, get_act
from cnnkit.layers.conv import DepthwiseSeparableConv2d
from cnnkit.layers.drop import Dropout
from cnnkit.layers.norm import NormLayer, get_norm_layer
from cnnkit.models._utils import check_model_args, set_input_constraints, torchvision_init
from cnnkit.models.api import ZooModel
from cnnkit.models.registry import register_model

__all__ = ["MobileNetV1", "MobileNetV1Block", "mobilenet_v1", "mobilenet_v1_conv"]


STEM_CHANNELS = 32  # table 1: "Conv / s2, 3x3x3x32"

# (stride, out_channels) of the 13 blocks after the stem (Howard et al. 2017, table 1; each row
# "Conv dw / s" + "Conv / s1 1x1" is one block). The table's last "Conv dw / s2" maps 7x7 to
# 7x7, a typo for s1, as in every implementation (TF-slim's _CONV_DEFS).
BLOCKS: list[tuple[int, int]] = [
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),
]


# ---------------------------------------------------------------------------- small helpers


def _scaled(channels: int, width_mult: float) -> int:
    # TF-slim's mobilenet_v1: depth(d) = max(int(d * depth_multiplier), min_depth=8)
    return max(8, int(channels * width_mult))


# ---------------------------------------------------------------------------- blocks


class MobileNetV1Block(nn.Module):
    """One row pair of table 1: ``conv`` (depthwise separable or full 3x3), then ``norm``, ``act``.

    ``separable=True``: ``conv`` is a :class:`DepthwiseSeparableConv2d` that holds the
    depthwise conv, its BN and ReLU, and the pointwise conv (fig. 3, right); ``norm`` and
    ``act`` follow the pointwise conv. ``separable=False``: ``conv`` is a full 3x3
    convolution (fig. 3, left; the stem, and every block of Conv MobileNet).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        *,
        separable: bool,
        norm_layer: Callable[[int], nn.Module],
        act_layer: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        self.conv: nn.Module
        if separable:
            self.conv = DepthwiseSeparableConv2d(
                in_channels, out_channels, 3, stride, norm_layer=norm_layer, act_layer=act_layer
            )
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm = norm_layer(out_channels)
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


# ---------------------------------------------------------------------------- main class


class MobileNetV1(ZooModel):
    """MobileNet v1: ``features`` (stem and 13 blocks of :data:`BLOCKS`), ``avgpool``, ``dropout``, ``classifier``.

    Arguments: ``width_mult`` (alpha, > 0), ``separable`` (False: Conv MobileNet),
    ``norm_layer`` / ``act_layer`` (names or factories; default BatchNorm and ReLU),
    ``drop_rate`` (dropout before the classifier; TF-slim trains with 0.001),
    ``small_input`` (stride-1 stem), ``in_chans``, ``num_classes``.
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        width_mult: float = 1.0,
        separable: bool = True,
        norm_layer: NormLayer = "batch",
        act_layer: ActLayer = "relu",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_model_args("MobileNetV1", num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
        if not width_mult > 0:
            raise ValueError(
                f"MobileNetV1 needs width_mult > 0 (the paper uses 1, 0.75, 0.5, 0.25); got {width_mult}"
            )
        norm = get_norm_layer(norm_layer)
        act = get_act(act_layer)
        self.width_mult = width_mult
        self.separable = separable

        channels = _scaled(STEM_CHANNELS, width_mult)
        layers: list[nn.Module] = [
            MobileNetV1Block(
                in_chans, channels, 1 if small_input else 2, separable=False, norm_layer=norm, act_layer=act
            )
        ]
        for stride, out in BLOCKS:
            out = _scaled(out, width_mult)
            layers.append(
                MobileNetV1Block(channels, out, stride, separable=separable, norm_layer=norm, act_layer=act)
            )
            channels = out
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.classifier = nn.Linear(channels, num_classes)

        torchvision_init(self, "vgg")  # torchvision's MobileNetV2 scheme
        set_input_constraints(self, in_chans=in_chans, min_input_size=1, small_input=small_input)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's map, (N, num_features, H/32, W/32) (H/16 with ``small_input``)."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, dropout, classifier."""
        return self.classifier(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------- builders


# name -> (separable, what the builder is, for a conflicting ``separable``)
_VARIANTS: dict[str, tuple[bool, str]] = {
    "mobilenet_v1": (True, "is the depthwise separable net; for full convolutions use mobilenet_v1_conv"),
    "mobilenet_v1_conv": (False, "has full 3x3 convolutions; for separable ones use mobilenet_v1"),
}


def _mobilenet_v1(
    name: str, num_classes: int, in_chans: int, small_input: bool, kwargs: dict[str, Any]
) -> MobileNetV1:
    separable, what = _VARIANTS[name]
    if kwargs.pop("separable", separable) is not separable:
        raise ValueError(f"{name} {what}")
    return MobileNetV1(
        num_classes=num_classes, in_chans=in_chans, small_input=small_input, separable=separable, **kwargs
    )


@register_model()
def mobilenet_v1(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> MobileNetV1:
    """MobileNet v1 (Howard et al. 2017, table 1); ``width_mult`` is the width multiplier alpha.

    4,231,976 parameters at 1000 classes (4,210,088 without the BN scales and shifts): the
    paper's 4.2M (table 4); 568.7M mult-adds at 224x224, the paper's 569M.
    """
    return _mobilenet_v1("mobilenet_v1", num_classes, in_chans, small_input, kwargs)


@register_model()
def mobilenet_v1_conv(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> MobileNetV1:
    """Conv MobileNet (Howard et al. 2017, table 4): MobileNet with full 3x3 convolutions.

    29,294,088 parameters at 1000 classes (29,282,120 without the BN scales and shifts): the
    paper's 29.3M (table 4); 4867.3M mult-adds at 224x224, the paper's 4866M.
    """
    return _mobilenet_v1("mobilenet_v1_conv", num_classes, in_chans, small_input, kwargs)
