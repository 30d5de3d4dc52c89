"""Squeeze-and-excitation networks (lecture slides "SENet - SE Block", the ILSVRC 2017 winner).

Hu, Shen & Sun 2018, "Squeeze-and-Excitation Networks" (CVPR; TPAMI 2019,
arXiv:1709.01507). An SE block (:class:`cnnkit.layers.se.SqueezeExcite`, reduction
``r = 16``) rescales the channels of every residual branch before the addition
(paper fig. 3, "SE-ResNet module"). Every model here is a :class:`cnnkit.models.resnet.ResNet`
with ``attn_layer`` set to that block; this module holds the builders and their table.

- SE-ResNet-18/34/50/101/152 and SE-ResNeXt-50 (32x4d) are the ResNets of
  :mod:`cnnkit.models.resnet` with ``attn_layer=SqueezeExcite``: the same stem,
  stages and ``state_dict`` names as torchvision's ResNets, plus ``layerN.M.se.fc1/fc2``.
  Like torchvision's ResNet (and unlike the authors' Caffe models, which stride in the
  first 1x1 conv) the bottleneck strides in its 3x3 convolution; parameter counts are
  the same either way.
- SENet-154 (paper sec. 6.2 and appendix) is SE-ResNeXt-152 (64x4d) with the
  appendix's changes: (1) the first 1x1 convolution of each bottleneck has half the
  channels (:class:`SENetBottleneck`, ``reduce_first=2``); (2) the 7x7 stem convolution is
  three 3x3 convolutions (``deep_stem``); (3) the 1x1 stride-2 down-sampling projections are
  3x3 stride-2 convolutions (``downsample_kernel_size=3``); (4) dropout 0.2 before the
  classifier. :class:`SENet` is the ResNet with these defaults; the layout is that of the
  authors' released model as ported by Cadene's ``pretrainedmodels`` (``senet154``:
  115,088,984 parameters, which this model has too). Points (5)-(6) of the appendix (label
  smoothing, frozen BN at the end) are training choices, not architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from torch import nn

from cnnkit.layers.residual import ResidualBlock, SENetBottleneck
from cnnkit.layers.se import SqueezeExcite
from cnnkit.models.registry import register_model
from cnnkit.models.resnet import IMAGENET_STAGES, ResNet, _create_resnet, _resnet

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

# ---------------------------------------------------------------------------- small helpers


def _se_layer(reduction: float) -> Callable[[int], nn.Module]:
    """The paper's SE block (ReLU, sigmoid) as a ``channels -> module`` factory for ``attn_layer``."""
    if not reduction > 0:
        raise ValueError(f"se_reduction must be > 0 (the paper uses 16); got {reduction!r}")
    return partial(SqueezeExcite, reduction=reduction)


# ---------------------------------------------------------------------------- main class


class SENet(ResNet):
    """SENet-154's network: a :class:`ResNet` with a deep stem, SE blocks and 3x3 stride-2 projections.

    Module names are :class:`cnnkit.models.resnet.ResNet`'s (``conv1`` -- a Sequential of
    three 3x3 convolutions -- ``bn1, act1, maxpool, layer1..layer4, avgpool, dropout, fc``);
    the max-pool is torchvision's padded one rather than Caffe's ``ceil_mode``: the same
    56x56 output at 224x224, and it still works on a 1x1 map.

    Args:
        block: a post-activation residual block class (:class:`SENetBottleneck` for SENet-154).
        layers: blocks per stage.
        groups, width_per_group: ResNeXt's cardinality and channels per path.
        se_reduction: ``r`` of every SE block.
        stem_width: channels of the first two stem convolutions; the third has twice as many.
        downsample_kernel_size: kernel of the stride-2 projection shortcuts (default 3, as in
            SENet-154; 1 in ResNets); stride-1 projections are always 1x1, as in the authors' model.
        small_input: the first stem convolution has stride 1 and there is no max-pool.
        num_classes, in_chans, norm_layer, act_layer, drop_rate (before ``fc``), drop_path_rate
        (last block, decayed linearly), block_drop_rate (inside each block),
        zero_init_residual: as :class:`cnnkit.models.resnet.ResNet`, whose other keyword
        arguments it takes too (all but ``attn_layer`` and ``deep_stem``, which it sets).
    """

    def __init__(
        self, block: type[ResidualBlock], layers: Sequence[int], *, se_reduction: float = 16, **kwargs: Any
    ) -> None:
        if getattr(block, "preact", False):
            raise ValueError(f"SENet takes post-activation blocks; got the pre-activation {block.__name__}")
        kwargs.setdefault("downsample_kernel_size", 3)
        super().__init__(block, layers, attn_layer=_se_layer(se_reduction), deep_stem=True, **kwargs)


# ---------------------------------------------------------------------------- private builders

# name -> the ResNet it adds SE blocks to: He et al. 2016 table 1 and Xie et al. 2017 table 1,
# which SE-ResNet / SE-ResNeXt keep (Hu et al. table 14)
_SE_RESNETS: dict[str, str] = {
    "seresnet18": "resnet18",
    "seresnet34": "resnet34",
    "seresnet50": "resnet50",
    "seresnet101": "resnet101",
    "seresnet152": "resnet152",
    "seresnext50_32x4d": "resnext50_32x4d",
}


def _se_resnet(
    name: str, num_classes: int, in_chans: int, small_input: bool, se_reduction: float, kwargs: dict[str, Any]
) -> ResNet:
    se = _se_layer(se_reduction)
    return _resnet(name, num_classes, in_chans, small_input, kwargs, base=_SE_RESNETS[name], attn_layer=se)


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
    return _se_resnet("seresnet18", num_classes, in_chans, small_input, se_reduction, kwargs)


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
    return _se_resnet("seresnet34", num_classes, in_chans, small_input, se_reduction, kwargs)


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
    return _se_resnet("seresnet50", num_classes, in_chans, small_input, se_reduction, kwargs)


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
    return _se_resnet("seresnet101", num_classes, in_chans, small_input, se_reduction, kwargs)


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
    return _se_resnet("seresnet152", num_classes, in_chans, small_input, se_reduction, kwargs)


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
    return _se_resnet("seresnext50_32x4d", num_classes, in_chans, small_input, se_reduction, kwargs)


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
    return _create_resnet(
        "senet154",
        SENet,
        SENetBottleneck,
        IMAGENET_STAGES[152],
        kwargs,
        forced={"groups": 64, "width_per_group": 4},
        defaults={"drop_rate": 0.2},
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
    )
