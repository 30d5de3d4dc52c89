"""Squeeze-and-excitation networks (lecture slides "SENet - SE Block", the ILSVRC 2017 winner).

Hu, Shen & Sun 2018, "Squeeze-and-Excitation Networks" (CVPR; TPAMI 2019,
arXiv:1709.01507). An SE block (:class:`cnnkit.layers.se.SqueezeExcite`, reduction
``r = 16``) rescales the channels of every residual branch before the addition
(paper fig. 3, "SE-ResNet module").

- SE-ResNet-18/34/50/101/152 and SE-ResNeXt-50 (32x4d) are the ResNets of
  :mod:`cnnkit.models.resnet` with ``attn_layer=SqueezeExcite``: the same stem,
  stages and ``state_dict`` names as torchvision's ResNets, plus ``layerN.M.se.fc1/fc2``.
  Like torchvision's ResNet (and unlike the authors' Caffe models, which stride in the
  first 1x1 conv) the bottleneck strides in its 3x3 convolution; parameter counts are
  the same either way.
- SENet-154 (paper sec. 6.2 and appendix) is SE-ResNeXt-152 (64x4d) with the
  appendix's changes: (1) the first 1x1 convolution of each bottleneck has half the
  channels; (2) the 7x7 stem convolution is three 3x3 convolutions; (3) the 1x1
  stride-2 down-sampling projections are 3x3 stride-2 convolutions; (4) dropout 0.2
  before the classifier. It is built by :class:`SENet` from :class:`SENetBottleneck`;
  the layout is that of the authors' released model as ported by Cadene's
  ``pretrainedmodels`` (``senet154``: 115,088,984 parameters, which this model has too).
  Points (5)-(6) of the appendix (label smoothing, frozen BN at the end) are training
  choices, not architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from cnnkit.layers.act import get_act
from cnnkit.layers.drop import Dropout, drop_path_rates
from cnnkit.layers.norm import get_norm_layer
from cnnkit.layers.residual import (
    BasicBlock,
    Bottleneck,
    ResidualBlock,
    SENetBottleneck,
    conv1x1,
    conv3x3,
)
from cnnkit.layers.se import SqueezeExcite
from cnnkit.models._utils import set_input_constraints
from cnnkit.models.registry import register_model
from cnnkit.models.resnet import ResNet

__all__ = [
    "SENet",
    "SENetBottleneck",
    "senet154",
    "seresnet18",
    "seresnet34",
    "seresnet50",
    "seresnet101",
    "seresnet152",
    "seresnext50_32x4d",
]

NormArg = str | Callable[[int], nn.Module] | None
ActArg = str | Callable[[], nn.Module] | None


# ---------------------------------------------------------------------------- small helpers


def _se_layer(reduction: float) -> Callable[[int], nn.Module]:
    """The paper's SE block (ReLU, sigmoid) as a ``channels -> module`` factory for ``attn_layer``."""
    if not reduction > 0:
        raise ValueError(f"se_reduction must be > 0 (the paper uses 16); got {reduction!r}")
    return partial(SqueezeExcite, reduction=reduction)


def _check_int(who: str, name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who} needs an integer {name} >= 1; got {name}={value!r}")


# ---------------------------------------------------------------------------- main class


class SENet(nn.Module):
    """SENet-154's network: deep stem, four SE stages, 3x3 stride-2 projections, dropout, fc.

    Module names follow :class:`cnnkit.models.resnet.ResNet` (``conv1`` -- a Sequential of
    three 3x3 convolutions -- ``bn1, act1, maxpool, layer1..layer4, avgpool, dropout, fc``).

    Args:
        block: a residual block class (:class:`SENetBottleneck` for SENet-154).
        layers: blocks per stage.
        groups, width_per_group: ResNeXt's cardinality and channels per path.
        se_reduction: ``r`` of every SE block.
        stem_width: channels of the first two stem convolutions; the third has twice as many.
        downsample_kernel_size: kernel of the stride-2 projection shortcuts (3 in SENet-154,
            1 in ResNets); stride-1 projections are always 1x1, as in the authors' model.
        small_input: the first stem convolution has stride 1 and there is no max-pool.
        norm_layer, act_layer, drop_rate (before ``fc``), drop_path_rate (last block,
        decayed linearly), block_drop_rate (inside each block), zero_init_residual: as
        :class:`cnnkit.models.resnet.ResNet`.
    """

    def __init__(
        self,
        block: type[ResidualBlock] | type[SENetBottleneck],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        se_reduction: float = 16,
        stem_width: int = 64,
        downsample_kernel_size: int = 3,
        norm_layer: NormArg = None,
        act_layer: ActArg = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        block_drop_rate: float = 0.0,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if not (
            isinstance(block, type)
            and issubclass(block, nn.Module)
            and isinstance(getattr(block, "expansion", None), int)
        ):
            raise ValueError(
                f"block must be a residual block class with an integer `expansion`; got {block!r}"
            )
        if getattr(block, "preact", False):
            raise ValueError(f"SENet takes post-activation blocks; got the pre-activation {block.__name__}")
        layers = list(layers)
        if len(layers) != 4 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"SENet needs 4 integer block counts >= 1 in `layers`; got {layers}")
        for name, value in (
            ("num_classes", num_classes),
            ("in_chans", in_chans),
            ("groups", groups),
            ("width_per_group", width_per_group),
            ("stem_width", stem_width),
        ):
            _check_int("SENet", name, value)
        if downsample_kernel_size not in (1, 3):
            raise ValueError(f"SENet needs downsample_kernel_size 1 or 3; got {downsample_kernel_size!r}")
        for name, rate in (
            ("drop_rate", drop_rate),
            ("drop_path_rate", drop_path_rate),
            ("block_drop_rate", block_drop_rate),
        ):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"SENet needs {name} in [0, 1); got {rate}")
        norm = get_norm_layer(norm_layer or "batch")
        act = get_act(act_layer or "relu")
        attn = _se_layer(se_reduction)

        # stem: three 3x3 convolutions (the first strided unless small_input), then a 3x3/2 max-pool
        inplanes = 2 * stem_width
        self.conv1 = nn.Sequential(
            conv3x3(in_chans, stem_width, 1 if small_input else 2),
            norm(stem_width),
            act(),
            conv3x3(stem_width, stem_width),
            norm(stem_width),
            act(),
            conv3x3(stem_width, inplanes),
        )
        self.bn1 = norm(inplanes)
        self.act1 = act()
        # torchvision's padded max-pool rather than Caffe's ceil_mode: same 56x56 output at 224x224,
        # and it still works on a 1x1 map
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        rates = drop_path_rates(sum(layers), drop_path_rate) if drop_path_rate > 0 else [0.0] * sum(layers)
        stages = []
        for i, (planes, num_blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if i == 0 else 2
            out_planes = planes * block.expansion
            blocks: list[nn.Module] = []
            for j in range(num_blocks):
                block_in = inplanes if j == 0 else out_planes
                block_stride = stride if j == 0 else 1
                downsample = None
                if block_stride != 1 or block_in != out_planes:
                    k = downsample_kernel_size if block_stride > 1 else 1
                    proj = (
                        conv3x3(block_in, out_planes, block_stride)
                        if k == 3
                        else conv1x1(block_in, out_planes, block_stride)
                    )
                    downsample = nn.Sequential(proj, norm(out_planes))
                blocks.append(
                    block(
                        block_in,
                        planes,
                        block_stride,
                        downsample,
                        groups,
                        width_per_group,
                        1,
                        norm,
                        act_layer=act,
                        drop_path_rate=rates[sum(layers[:i]) + j],
                        drop_rate=block_drop_rate,
                        attn_layer=attn,
                    )
                )
            stages.append(nn.Sequential(*blocks))
            inplanes = out_planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        self.num_features = inplanes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(inplanes, num_classes)

        # He initialisation (fan_out) and unit-scale norms, as torchvision's ResNet
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                zero_init_last = getattr(m, "zero_init_last", None)
                if callable(zero_init_last):
                    zero_init_last()
        # every downsampling step is padded (3x3/2 convolutions and max-pool), so 1x1 inputs run
        set_input_constraints(self, in_chans=in_chans, min_input_size=1, small_input=small_input)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (N, num_features, H/32, W/32)."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, dropout, classifier."""
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------- private builders

# name -> (block, blocks per stage, groups, width_per_group); He et al. 2016 table 1 and
# Xie et al. 2017 table 1, which SE-ResNet / SE-ResNeXt keep (Hu et al. table 14)
_SE_RESNETS: dict[str, tuple[type[ResidualBlock], tuple[int, int, int, int], int, int]] = {
    "seresnet18": (BasicBlock, (2, 2, 2, 2), 1, 64),
    "seresnet34": (BasicBlock, (3, 4, 6, 3), 1, 64),
    "seresnet50": (Bottleneck, (3, 4, 6, 3), 1, 64),
    "seresnet101": (Bottleneck, (3, 4, 23, 3), 1, 64),
    "seresnet152": (Bottleneck, (3, 8, 36, 3), 1, 64),
    "seresnext50_32x4d": (Bottleneck, (3, 4, 6, 3), 32, 4),
}


def _se_resnet(
    name: str,
    *,
    num_classes: int,
    in_chans: int,
    small_input: bool,
    se_reduction: float,
    **kwargs: Any,
) -> ResNet:
    block, layers, groups, width_per_group = _SE_RESNETS[name]
    for key in ("block", "layers", "attn_layer"):
        if key in kwargs:
            raise ValueError(
                f"{name} fixes {key}; build ResNet(...) with attn_layer=... directly for another one"
            )
    for key, value in (("groups", groups), ("width_per_group", width_per_group)):
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"{name} fixes {key}={value}; got {key}={kwargs[key]!r}")
        kwargs[key] = value
    return ResNet(
        block,
        layers,
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        attn_layer=_se_layer(se_reduction),
        **kwargs,
    )


# ---------------------------------------------------------------------------- public builders
# Parameter counts at num_classes=1000, as measured by tests/models/test_senet.py.


@register_model()
def seresnet18(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    se_reduction: float = 16,
    **kwargs: Any,
) -> ResNet:
    """SE-ResNet-18 (Hu et al. 2018; ResNet-18 with SE blocks, r=16): 11,778,592 parameters.

    Not in the paper's tables; ResNet-18's 11,689,512 plus 89,080 for the SE blocks
    (``2 C^2 / r`` weights + ``C / r + C`` biases per block).
    """
    return _se_resnet(
        "seresnet18",
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        se_reduction=se_reduction,
        **kwargs,
    )


@register_model()
def seresnet34(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    se_reduction: float = 16,
    **kwargs: Any,
) -> ResNet:
    """SE-ResNet-34 (Hu et al. 2018; ResNet-34 with SE blocks, r=16): 21,958,868 parameters.

    Not in the paper's tables; ResNet-34's 21,797,672 plus 161,196 for the SE blocks.
    """
    return _se_resnet(
        "seresnet34",
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        se_reduction=se_reduction,
        **kwargs,
    )


@register_model()
def seresnet50(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    se_reduction: float = 16,
    **kwargs: Any,
) -> ResNet:
    """SE-ResNet-50 (Hu et al. 2018, table 2 / the lecture): 28,088,024 parameters; the paper says 28.1M.

    ResNet-50's 25,557,032 plus 2,530,992 for the SE blocks (the paper's "~2.5M", sec. 4);
    equal to Cadene's ``pretrainedmodels`` ``se_resnet50``.
    """
    return _se_resnet(
        "seresnet50",
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        se_reduction=se_reduction,
        **kwargs,
    )


@register_model()
def seresnet101(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    se_reduction: float = 16,
    **kwargs: Any,
) -> ResNet:
    """SE-ResNet-101 (Hu et al. 2018, table 2): 49,326,872 parameters; the paper says 49.3M."""
    return _se_resnet(
        "seresnet101",
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        se_reduction=se_reduction,
        **kwargs,
    )


@register_model()
def seresnet152(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    se_reduction: float = 16,
    **kwargs: Any,
) -> ResNet:
    """SE-ResNet-152 (Hu et al. 2018, table 2): 66,821,848 parameters; the paper says 66.8M."""
    return _se_resnet(
        "seresnet152",
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        se_reduction=se_reduction,
        **kwargs,
    )


@register_model()
def seresnext50_32x4d(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    se_reduction: float = 16,
    **kwargs: Any,
) -> ResNet:
    """SE-ResNeXt-50 (32x4d) (Hu et al. 2018, table 2): 27,559,896 parameters; the paper says 27.6M.

    ResNeXt-50's 25,028,904 plus the SE blocks. Fixes ``groups=32, width_per_group=4``.
    """
    return _se_resnet(
        "seresnext50_32x4d",
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        se_reduction=se_reduction,
        **kwargs,
    )


@register_model()
def senet154(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> SENet:
    """SENet-154 (Hu et al. 2018, sec. 6.2, table 8 and appendix): 115,088,984 parameters.

    The issue's 115.1M; equal to Cadene's ``pretrainedmodels`` ``senet154`` (115,088,984), the port of
    the authors' released model. SE-ResNeXt-152 (64x4d, blocks 3-8-36-3) with halved first 1x1
    convolutions, a three-conv stem, 3x3 stride-2 projections and dropout 0.2 before the
    classifier (``drop_rate``, overridable). Fixes ``block``, ``layers``, ``groups=64``,
    ``width_per_group=4``.
    """
    for key in ("block", "layers"):
        if key in kwargs:
            raise ValueError(f"senet154 fixes {key}; build SENet(...) directly for another one")
    for key, value in (("groups", 64), ("width_per_group", 4)):
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"senet154 fixes {key}={value}; got {key}={kwargs[key]!r}")
        kwargs[key] = value
    kwargs.setdefault("drop_rate", 0.2)
    return SENet(
        SENetBottleneck,
        (3, 8, 36, 3),
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        **kwargs,
    )
