"""ShuffleNet v1 (lecture slides "Shuffled Convolution"; Zhang, Zhou, Lin & Sun 2018,
"ShuffleNet: An extremely efficient convolutional neural network for mobile devices",
CVPR, arXiv:1707.01083).

A 3x3/2 convolution with 24 channels and a 3x3/2 max-pool, three stages of 4, 8 and 4
ShuffleNet units, global average pooling and a classifier (table 1). A unit (fig. 2b, c)
is a residual bottleneck: 1x1 group convolution to ``out/4`` channels, BN, ReLU, channel
shuffle, 3x3 depthwise convolution (stride 1 or 2), BN, 1x1 group convolution, BN; added
to the identity (stride 1) or concatenated with a 3x3/2 average-pooled shortcut (stride
2, the branch then produces ``out - in`` channels), then ReLU. The first pointwise
convolution of stage 2 is not grouped: its 24 input channels are too few (sec. 3.3).
That unit then has no shuffle either: after an ungrouped convolution a shuffle would only
relabel channels.

``use_shuffle=False`` keeps every weight and replaces the shuffles by the identity (the
paper's table 3 ablation). ``width_mult`` is the paper's "ShuffleNet s x" (sec. 3.3):
every width, stem included, is scaled by s and rounded to the nearest multiple that keeps
the group convolutions and shuffles whole (stage widths to ``4 g``, the stem to ``g``);
for s = 0.5 this gives the authors' own widths (ShuffleNet-Series repository: 12, 120,
240, 480 for g = 3; 16, 192, 384, 768 for g = 8).

Complexity of ShuffleNet 1x at 224x224 (paper, table 1; its "MFLOPs" are mult-adds) beside
the mult-adds that torch's FLOP counter measures on this code (FLOPs / 2):

======  ========  ===========  ================  ==================  ===========
groups  stage 2   paper        convolutions      convolutions + fc   parameters
======  ========  ===========  ================  ==================  ===========
1       144       143M         142.50M           143.08M             1,531,936
2       200       140M         140.04M           140.84M             1,733,848
3       240       137M         136.50M           137.46M             1,865,728
4       272       133M         133.25M           134.34M             1,968,344
8       384       137M         136.83M           138.37M             2,434,768
======  ========  ===========  ================  ==================  ===========

The convolutions alone round to the paper's figures for every g, so table 1 evidently
leaves out the classifier (0.6-1.5M); with it the counts are within 1.1%. The 0.5x nets
come to 37-40M against the paper's "38 MFLOPs" (table 2); the 0.25x ones to 11-12.4M
against its 13M, a gap these widths do not close (the paper gives no widths for them).
Parameters are at 1000 classes, BN included; the paper gives none, and g = 3 agrees with
OpenMMLab's 1.87M (mmpretrain's ShuffleNet v1 page). torchvision has only
ShuffleNet v2, so there are no torchvision weights to match. ``small_input=True`` makes the
stem stride 1 and drops the max-pool (28x28 inputs end in 4x4 maps). All downsampling is by
padded 3x3 convolutions and pools, so any input from 1x1 up runs: ``min_input_size`` is 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cnnkit.layers.act import ActLayer, get_act
from cnnkit.layers.conv import DepthwiseConv2d, PointwiseConv2d
from cnnkit.layers.drop import Dropout, DropPath, drop_path_rates
from cnnkit.layers.norm import NormLayer, get_norm_layer
from cnnkit.layers.shuffle import ChannelShuffle
from cnnkit.models._utils import check_model_args, set_input_constraints, torchvision_init
from cnnkit.models.api import ZooModel
from cnnkit.models.registry import register_model

__all__ = [
    "ShuffleNetV1",
    "ShuffleUnit",
    "shufflenet_v1_g1",
    "shufflenet_v1_g2",
    "shufflenet_v1_g3",
    "shufflenet_v1_g4",
    "shufflenet_v1_g8",
]


STEM_CHANNELS = 24  # table 1: Conv1, 3x3, stride 2, 24 channels
STAGE_REPEATS = (4, 8, 4)  # units of stages 2, 3, 4 (table 1, "Repeat": 1 unit at stride 2 + 3, 7, 3)
# groups g -> output channels of stages 2, 3, 4 of ShuffleNet 1x (table 1)
STAGE_OUT_CHANNELS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}


# ---------------------------------------------------------------------------- small helpers


def _round_to(value: float, divisor: int) -> int:
    """Nearest multiple of ``divisor`` to ``value``, at least ``divisor``."""
    return max(divisor, int(value / divisor + 0.5) * divisor)


def stage_widths(groups: int, width_mult: float = 1.0) -> tuple[int, int, int, int]:
    """(stem, stage 2, stage 3, stage 4) output channels of ShuffleNet ``width_mult`` x with g = ``groups``."""
    if groups not in STAGE_OUT_CHANNELS:
        raise ValueError(
            f"ShuffleNet v1 has groups in {sorted(STAGE_OUT_CHANNELS)} (table 1); got groups={groups!r}"
        )
    if not width_mult > 0:
        raise ValueError(
            f"ShuffleNet v1 needs width_mult > 0 (the paper uses 1, 0.5, 0.25); got {width_mult}"
        )
    # bottleneck = out / 4 must split into g groups, and so must out - in of a stride-2 unit
    stages = tuple(_round_to(c * width_mult, 4 * groups) for c in STAGE_OUT_CHANNELS[groups])
    return (_round_to(STEM_CHANNELS * width_mult, groups), *stages)  # type: ignore[return-value]


# ---------------------------------------------------------------------------- blocks


class ShuffleUnit(nn.Module):
    """The ShuffleNet unit of fig. 2b (stride 1, residual add) and 2c (stride 2, concat).

    Modules in order: ``conv1`` (1x1, grouped unless ``first_grouped=False``), ``bn1``,
    ``act1``, ``shuffle``, ``conv2`` (3x3 depthwise, carries the stride), ``bn2``, ``conv3``
    (1x1 grouped), ``bn3``; then ``shortcut`` (identity or 3x3/2 average pool),
    ``drop_path`` (stride 1 only) and ``act``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        groups: int,
        *,
        first_grouped: bool = True,
        use_shuffle: bool = True,
        norm_layer: Callable[[int], nn.Module],
        act_layer: Callable[[], nn.Module],
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleUnit has stride 1 or 2; got stride={stride}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"a stride-1 ShuffleUnit adds its input: in_channels={in_channels} must equal out_channels={out_channels}"
            )
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        if branch_out < 1:
            raise ValueError(
                f"a stride-2 ShuffleUnit needs out_channels > in_channels; got {in_channels} -> {out_channels}"
            )
        mid = out_channels // 4  # "bottleneck channels set to 1/4 of the output channels" (sec. 3.2)
        if out_channels % 4 or mid % groups or branch_out % groups:
            raise ValueError(
                f"ShuffleUnit with groups={groups}: out_channels={out_channels} must be a multiple of 4*groups "
                f"and out - in = {branch_out} a multiple of groups"
            )
        self.stride = stride
        g1 = groups if first_grouped else 1
        self.conv1 = PointwiseConv2d(in_channels, mid, groups=g1)
        self.bn1 = norm_layer(mid)
        self.act1 = act_layer()
        self.shuffle = ChannelShuffle(groups) if use_shuffle and g1 > 1 else nn.Identity()
        self.conv2 = DepthwiseConv2d(mid, 3, stride=stride)
        self.bn2 = norm_layer(mid)  # no ReLU after the depthwise conv (sec. 3.2, as Xception)
        self.conv3 = PointwiseConv2d(mid, branch_out, groups=groups)
        self.bn3 = norm_layer(branch_out)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if stride == 1 and drop_path_rate > 0 else nn.Identity()
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(self.act1(self.bn1(self.conv1(x))))
        out = self.bn3(self.conv3(self.bn2(self.conv2(out))))
        if self.stride == 2:
            return self.act(torch.cat([self.shortcut(x), out], dim=1))
        return self.act(self.shortcut(x) + self.drop_path(out))


# ---------------------------------------------------------------------------- main class


class ShuffleNetV1(ZooModel):
    """ShuffleNet v1: ``conv1`` (conv, norm, act), ``maxpool``, ``stage2..stage4``, ``avgpool``, ``dropout``, ``fc``.

    Arguments: ``groups`` (1, 2, 3, 4 or 8), ``width_mult`` (the paper's s), ``use_shuffle``,
    ``norm_layer`` / ``act_layer`` (names or factories; default BatchNorm and ReLU),
    ``drop_rate`` (dropout before ``fc``), ``drop_path_rate`` (stochastic depth of the last
    unit, decayed linearly over the 16 units; applied to the residual, stride-1 units),
    ``small_input`` (stride-1 stem, no max-pool), ``zero_init_residual`` (each residual
    unit's last BN scale starts at 0, so that the unit starts as the identity: Goyal et al.
    2017, as torchvision's ResNet), ``in_chans``, ``num_classes``.
    """

    def __init__(
        self,
        *,
        groups: int = 3,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        use_shuffle: bool = True,
        norm_layer: NormLayer = "batch",
        act_layer: ActLayer = "relu",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        check_model_args(
            "ShuffleNetV1",
            num_classes=num_classes,
            in_chans=in_chans,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
        )
        stem, *widths = stage_widths(groups, width_mult)
        norm = get_norm_layer(norm_layer)
        act = get_act(act_layer)
        self.groups = groups
        self.width_mult = width_mult
        self.use_shuffle = use_shuffle

        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, stem, 3, stride=1 if small_input else 2, padding=1, bias=False),
            norm(stem),
            act(),
        )
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)

        rates = drop_path_rates(sum(STAGE_REPEATS), drop_path_rate)
        channels, unit = stem, 0
        stages = []
        for i, (repeats, out) in enumerate(zip(STAGE_REPEATS, widths, strict=True)):
            units = []
            for j in range(repeats):
                units.append(
                    ShuffleUnit(
                        channels,
                        out,
                        2 if j == 0 else 1,
                        groups,
                        first_grouped=not (i == 0 and j == 0),
                        use_shuffle=use_shuffle,
                        norm_layer=norm,
                        act_layer=act,
                        drop_path_rate=rates[unit],
                    )
                )
                channels, unit = out, unit + 1
            stages.append(nn.Sequential(*units))
        self.stage2, self.stage3, self.stage4 = stages

        self.num_features = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)

        torchvision_init(self, "vgg")  # torchvision's mobile nets' scheme
        if zero_init_residual:
            for m in self.modules():
                weight = getattr(m.bn3, "weight", None) if isinstance(m, ShuffleUnit) and m.stride == 1 else None
                if isinstance(weight, torch.Tensor):
                    nn.init.zeros_(weight)
        set_input_constraints(self, in_chans=in_chans, min_input_size=1, small_input=small_input)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 4's map, (N, num_features, H/32, W/32) (H/8 with ``small_input``)."""
        x = self.maxpool(self.conv1(x))
        return self.stage4(self.stage3(self.stage2(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, dropout, classifier."""
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------- builders


def _shufflenet_v1(
    groups: int, num_classes: int, in_chans: int, small_input: bool, kwargs: dict[str, Any]
) -> ShuffleNetV1:
    if kwargs.pop("groups", groups) != groups:
        raise ValueError(
            f"shufflenet_v1_g{groups} has groups={groups}; use shufflenet_v1_g{{1,2,3,4,8}} for others"
        )
    return ShuffleNetV1(
        groups=groups, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model()
def shufflenet_v1_g1(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 1 (Zhang et al. 2018, table 1): 1,531,936 parameters at 1000 classes (measured; the paper
    gives none), 143.1M mult-adds at 224x224 with the classifier (paper: 143M)."""
    return _shufflenet_v1(1, num_classes, in_chans, small_input, kwargs)


@register_model()
def shufflenet_v1_g2(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 2 (Zhang et al. 2018, table 1): 1,733,848 parameters at 1000 classes (measured; the paper
    gives none), 140.8M mult-adds at 224x224 with the classifier (paper: 140M)."""
    return _shufflenet_v1(2, num_classes, in_chans, small_input, kwargs)


@register_model()
def shufflenet_v1_g3(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 3 (Zhang et al. 2018, table 1): 1,865,728 parameters at 1000 classes (measured; the paper
    gives none), 137.5M mult-adds at 224x224 with the classifier (paper: 137M)."""
    return _shufflenet_v1(3, num_classes, in_chans, small_input, kwargs)


@register_model()
def shufflenet_v1_g4(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 4 (Zhang et al. 2018, table 1): 1,968,344 parameters at 1000 classes (measured; the paper
    gives none), 134.3M mult-adds at 224x224 with the classifier (paper: 133M)."""
    return _shufflenet_v1(4, num_classes, in_chans, small_input, kwargs)


@register_model()
def shufflenet_v1_g8(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 8 (Zhang et al. 2018, table 1): 2,434,768 parameters at 1000 classes (measured; the paper
    gives none), 138.4M mult-adds at 224x224 with the classifier (paper: 137M)."""
    return _shufflenet_v1(8, num_classes, in_chans, small_input, kwargs)
