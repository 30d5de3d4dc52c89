"""ResNet and its family (lecture slides "ResNet", "Wide Residual Networks", "ResNeXt").

- He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR,
  arXiv:1512.03385): ImageNet ResNet-18/34/50/101/152 (table 1), their plain counterparts
  (fig. 4, the lecture's plain-vs-residual figure) and the CIFAR-10 ResNets of sec. 4.2
  (6n+2 layers, table 6).
- He, Zhang, Ren & Sun 2016, "Identity mappings in deep residual networks" (ECCV,
  arXiv:1603.05027): pre-activation ResNets up to ResNet-200.
- Zagoruyko & Komodakis 2016, "Wide residual networks" (BMVC, arXiv:1605.07146): CIFAR
  WRN-d-k and the ImageNet WRN-50-2-bottleneck of the lecture's table.
- Xie, Girshick, Dollar, Tu & He 2017, "Aggregated residual transformations for deep neural
  networks" (CVPR, arXiv:1611.05431): ResNeXt.
- Huang et al. 2016, "Deep networks with stochastic depth": ``drop_path_rate``, decayed
  linearly over the blocks (the lecture's fig. 2).

One class builds them all from the blocks of :mod:`cnnkit.layers.residual`, timm-style: a
variant is a builder with other arguments, not another class.

- :class:`ResNet`, the ImageNet net (stem, stages of widths 64-128-256-512, pool, fc),
  with torchvision's module names, so with ``small_input=False`` and torchvision's block and
  arguments its ``state_dict`` *is* torchvision's. It takes post- and pre-activation blocks:
  with a pre-activation block the stem has no norm (the first block normalises its input)
  and a final BN-ReLU (``bn_final``, ``act_final``) follows the last stage, as in He et al.
  2016b, sec. 4. ``small_input=True`` replaces the 7x7/2 stem convolution and the max-pool
  with one 3x3/1 convolution (as the CIFAR variants do), keeping 4x4 maps in the last stage
  for 28x28 inputs instead of 1x1. The stem (``deep_stem``, ``stem_width``), the projection
  kernel (``downsample_kernel_size``), the blocks' width rule (``groups``,
  ``width_per_group``, ``reduce_first``) and SE (``attn_layer``) are arguments: the
  SE-ResNets, SE-ResNeXt and SENet-154 of :mod:`cnnkit.models.senet` are ResNets.
- :class:`CifarResNet`, the CIFAR net of He et al. sec. 4.2 and of the wide ResNets: a
  :class:`ResNet` with a 3x3 stem convolution of 16 channels, three stages (16-32-64
  channels times k), no max-pool module and option-A shortcuts; already made for 32x32
  inputs, so ``small_input`` is accepted and changes nothing.

Every configuration here runs on inputs down to 1x1 (all downsampling is by convolutions or
pools with padding), so ``min_input_size`` is 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from cnnkit.layers.act import ActFactory, ActLayer, get_act
from cnnkit.layers.drop import Dropout, drop_path_rates
from cnnkit.layers.norm import NormFactory, NormLayer, get_norm_layer
from cnnkit.layers.residual import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ResidualBlock,
    conv3x3,
    make_downsample,
)
from cnnkit.models._utils import check_model_args, set_input_constraints, torchvision_init
from cnnkit.models.api import ZooModel
from cnnkit.models.registry import register_model

__all__ = [
    "CifarResNet",
    "ResNet",
    "plain18",
    "plain34",
    "preresnet18",
    "preresnet34",
    "preresnet50",
    "preresnet101",
    "preresnet152",
    "preresnet200",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "wrn_16_4",
    "wrn_28_10",
    "wrn_40_4",
]

ResNetT = TypeVar("ResNetT", bound="ResNet")

# depth -> residual blocks per stage of the ImageNet nets (He et al. 2016, table 1; ResNet-200
# from He et al. 2016b, sec. 5). Depths of 50 and more use bottleneck blocks.
IMAGENET_STAGES: dict[int, list[int]] = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
    200: [3, 24, 36, 3],
}


# ---------------------------------------------------------------------------- small helpers


def _positive_ints(values: Sequence[int]) -> bool:
    return all(not isinstance(v, bool) and isinstance(v, int) and v >= 1 for v in values)


def _check_config(
    who: str,
    block: Any,
    layers: Sequence[int],
    widths: Sequence[int],
    *,
    shortcut: bool,
    shortcut_type: str,
    downsample_kernel_size: int,
    stem_width: int,
    zero_init_residual: bool,
) -> tuple[list[int], list[int]]:
    """The net-level checks (the blocks check their own arguments); returns layers and widths as lists."""
    if not (
        isinstance(block, type)
        and issubclass(block, nn.Module)
        and isinstance(getattr(block, "expansion", None), int)
    ):
        raise ValueError(
            f"block must be a residual block class with an integer `expansion` (BasicBlock, Bottleneck, "
            f"PreActBasicBlock, PreActBottleneck or a subclass); got {block!r}"
        )
    widths, layers = list(widths), list(layers)
    if not widths or not _positive_ints(widths):
        raise ValueError(f"{who} needs positive integer stage widths; got {widths}")
    if len(layers) != len(widths) or not _positive_ints(layers):
        raise ValueError(f"{who} needs {len(widths)} integer block counts >= 1 in `layers`; got {layers}")
    if shortcut_type not in ("A", "B"):
        raise ValueError(
            f"shortcut_type must be 'A' (zero-padding) or 'B' (projection); got {shortcut_type!r}"
        )
    if downsample_kernel_size not in (1, 3):
        raise ValueError(f"{who} needs downsample_kernel_size 1 or 3; got {downsample_kernel_size!r}")
    if stem_width < 1:
        raise ValueError(f"{who} needs stem_width >= 1; got {stem_width}")
    if zero_init_residual and not shortcut:
        raise ValueError("zero_init_residual=True with shortcut=False would zero the signal of a plain net")
    return layers, widths


def _make_stage(
    block: type[ResidualBlock],
    inplanes: int,
    planes: int,
    num_blocks: int,
    stride: int,
    drop_path: Sequence[float],
    *,
    shortcut: bool,
    shortcut_type: str,
    downsample_kernel_size: int,
    norm: Callable[[int], nn.Module],
    groups: int,
    base_width: int,
    block_kwargs: dict[str, Any],
) -> nn.Sequential:
    """``num_blocks`` blocks; the first one strides and changes the width, as torchvision's ``_make_layer``."""
    out_planes = planes * block.expansion
    blocks = []
    for i in range(num_blocks):
        block_in = inplanes if i == 0 else out_planes
        block_stride = stride if i == 0 else 1
        downsample = None
        if shortcut:
            downsample = make_downsample(
                block, block_in, out_planes, block_stride, shortcut_type, downsample_kernel_size, norm
            )
        blocks.append(
            block(
                block_in,
                planes,
                block_stride,
                downsample,
                groups,
                base_width,
                1,
                norm,
                drop_path_rate=drop_path[i],
                shortcut=shortcut,
                **block_kwargs,
            )
        )
    return nn.Sequential(*blocks)


def _block_kwargs(
    act_layer: ActLayer | None,
    attn_layer: Callable[[int], nn.Module] | None,
    drop_rate: float,
    reduce_first: int | None,
) -> dict[str, Any]:
    """The keyword arguments every block of the net gets; the optional ones only when set."""
    kwargs: dict[str, Any] = {"act_layer": act_layer, "attn_layer": attn_layer}
    if drop_rate:
        kwargs["drop_rate"] = drop_rate
    if reduce_first is not None:
        kwargs["reduce_first"] = reduce_first
    return kwargs


def _zero_init_residual(model: nn.Module) -> None:
    """Zero the last norm scale (post-activation) or last convolution (pre-activation) of every
    residual branch, so each block starts as the identity (Goyal et al. 2017, "Accurate, large
    minibatch SGD", sec. 5.1); torchvision's ``zero_init_residual``."""
    for m in model.modules():
        zero_init_last = getattr(m, "zero_init_last", None)
        if callable(zero_init_last):
            zero_init_last()


# ---------------------------------------------------------------------------- main classes


class ResNet(ZooModel):
    """The ImageNet ResNet: stem, stages (64, 128, 256, 512 x ``block.expansion``), pool, fc.

    Module names are torchvision's (``conv1, bn1, layer1..layer4, fc``; parameter-free
    modules aside). Arguments beyond torchvision's:

    - ``in_chans``: input channels; ``small_input``: 3x3/1 stem convolution and no max-pool;
    - ``act_layer`` (name or factory), ``norm_layer`` (name or ``channels -> module``);
    - ``drop_rate``: dropout before ``fc``; ``drop_path_rate``: stochastic depth of the last
      block, decayed linearly over all blocks; ``block_drop_rate``: dropout inside each block
      (wide ResNets);
    - ``attn_layer``: ``channels -> module`` applied to every residual branch (SE-ResNet:
      ``partial(SqueezeExcite, reduction=16)``);
    - ``shortcut=False``: plain net, no shortcuts at all (so no projections either);
      ``shortcut_type``: ``"B"`` (projection where shapes change; torchvision, He et al.'s
      ImageNet default) or ``"A"`` (zero-padding, parameter-free); ``downsample_kernel_size``:
      1, or 3 for 3x3 stride-2 projections (SENet-154);
    - ``deep_stem``: three 3x3 convolutions (``stem_width``, ``stem_width``,
      ``2 * stem_width`` channels) instead of the 7x7 one (SENet-154; He et al. 2019, "Bag of
      tricks", ResNet-C), kept in ``conv1`` as a Sequential;
    - ``widths``: the stages' ``planes`` (one stage per entry); ``reduce_first``: divisor of
      each block's first width (2: SENet-154's halved 1x1; ``None``: the block's own);
    - ``zero_init_residual`` as torchvision's (pre-activation blocks zero their last conv).
    """

    stem_pool: ClassVar[bool] = True  # a max-pool module after the stem (an identity with small_input)

    def __init__(
        self,
        block: type[ResidualBlock],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        block_drop_rate: float = 0.0,
        attn_layer: Callable[[int], nn.Module] | None = None,
        shortcut: bool = True,
        shortcut_type: str = "B",
        zero_init_residual: bool = False,
        deep_stem: bool = False,
        stem_width: int = 64,
        widths: Sequence[int] = (64, 128, 256, 512),
        downsample_kernel_size: int = 1,
        reduce_first: int | None = None,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        layers, widths = _check_config(
            who,
            block,
            layers,
            widths,
            shortcut=shortcut,
            shortcut_type=shortcut_type,
            downsample_kernel_size=downsample_kernel_size,
            stem_width=stem_width,
            zero_init_residual=zero_init_residual,
        )
        check_model_args(
            who,
            num_classes=num_classes,
            in_chans=in_chans,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
        )
        norm = get_norm_layer(norm_layer or "batch")
        act = get_act(act_layer or "relu")
        self.preact = bool(getattr(block, "preact", False))
        inplanes = self._make_stem(in_chans, stem_width, deep_stem, small_input, norm, act)

        rates = drop_path_rates(sum(layers), drop_path_rate) if drop_path_rate > 0 else [0.0] * sum(layers)
        kwargs = _block_kwargs(act_layer, attn_layer, block_drop_rate, reduce_first)
        for i, (planes, num_blocks) in enumerate(zip(widths, layers, strict=True)):
            first = sum(layers[:i])
            stage = _make_stage(
                block,
                inplanes,
                planes,
                num_blocks,
                1 if i == 0 else 2,
                rates[first : first + num_blocks],
                shortcut=shortcut,
                shortcut_type=shortcut_type,
                downsample_kernel_size=downsample_kernel_size,
                norm=norm,
                groups=groups,
                base_width=width_per_group,
                block_kwargs=kwargs,
            )
            self.add_module(f"layer{i + 1}", stage)
            inplanes = planes * block.expansion
        self.num_stages = len(widths)

        self.num_features = inplanes
        self.bn_final = norm(inplanes) if self.preact else nn.Identity()
        self.act_final = act() if self.preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(inplanes, num_classes)

        torchvision_init(self, "resnet")
        if zero_init_residual:
            _zero_init_residual(self)
        set_input_constraints(self, in_chans=in_chans, min_input_size=1, small_input=small_input)

    def _make_stem(
        self,
        in_chans: int,
        width: int,
        deep_stem: bool,
        small_input: bool,
        norm: NormFactory,
        act: ActFactory,
    ) -> int:
        """``conv1, bn1, act1[, maxpool]``: 7x7/2 conv + 3x3/2 max-pool (4x downsampling), three 3x3
        convs (``deep_stem``), or a 3x3/1 conv for small inputs; returns its output channels."""
        inplanes = 2 * width if deep_stem else width
        self.conv1: nn.Module
        if deep_stem:
            self.conv1 = nn.Sequential(
                conv3x3(in_chans, width, 1 if small_input else 2),
                norm(width),
                act(),
                conv3x3(width, width),
                norm(width),
                act(),
                conv3x3(width, inplanes),
            )
        elif small_input:
            self.conv1 = conv3x3(in_chans, inplanes)
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        # a pre-activation net normalises in the blocks (the first block pre-activates its input)
        self.bn1 = nn.Identity() if self.preact else norm(inplanes)
        self.act1 = nn.Identity() if self.preact else act()
        if self.stem_pool:
            self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        return inplanes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (N, num_features, H/32, W/32), after the final norm if any."""
        x = self.act1(self.bn1(self.conv1(x)))
        if self.stem_pool:
            x = self.maxpool(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.act_final(self.bn_final(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, dropout, classifier."""
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class CifarResNet(ResNet):
    """The CIFAR ResNet of He et al. 2016 (sec. 4.2) and of the wide ResNets.

    A 3x3 convolution with ``stem_width`` (16) channels, one stage per entry of ``layers``
    with ``widths`` channels (16, 32, 64; times k for WRN-d-k), the first stage at stride 1
    and the others at stride 2, global average pool, fc. With a post-activation block the
    stem is conv-BN-ReLU (He et al.); with a pre-activation block it is the bare convolution
    and a final BN-ReLU follows the last stage (Zagoruyko & Komodakis). Shortcuts default
    to option A (zero-padding; He et al.'s CIFAR choice, so residual and plain nets have the
    same parameters); the wide ResNets use ``shortcut_type="B"`` (1x1 projection).
    ``block_drop_rate`` is the wide ResNets' dropout between the two convolutions.

    Made for 32x32 inputs already: ``small_input`` is accepted for a uniform interface and
    changes nothing (the net records ``small_input=True``). It is a :class:`ResNet` with
    these defaults and no max-pool module.
    """

    stem_pool = False

    def __init__(
        self,
        block: type[ResidualBlock],
        layers: Sequence[int],
        *,
        widths: Sequence[int] = (16, 32, 64),
        stem_width: int = 16,
        num_classes: int = 10,
        in_chans: int = 3,
        small_input: bool = True,
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        block_drop_rate: float = 0.0,
        attn_layer: Callable[[int], nn.Module] | None = None,
        shortcut: bool = True,
        shortcut_type: str = "A",
        zero_init_residual: bool = False,
    ) -> None:
        del small_input  # CIFAR nets are small-input nets by design; see the class docstring
        super().__init__(
            block,
            layers,
            widths=widths,
            stem_width=stem_width,
            num_classes=num_classes,
            in_chans=in_chans,
            small_input=True,
            norm_layer=norm_layer,
            act_layer=act_layer,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            block_drop_rate=block_drop_rate,
            attn_layer=attn_layer,
            shortcut=shortcut,
            shortcut_type=shortcut_type,
            zero_init_residual=zero_init_residual,
        )


# ---------------------------------------------------------------------------- private builders


def _create_resnet(
    builder: str,
    cls: type[ResNetT],
    block: type[ResidualBlock],
    layers: Sequence[int],
    kwargs: dict[str, Any],
    *,
    fixed: Sequence[str] = ("block", "layers"),
    forced: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    **config: Any,
) -> ResNetT:
    """``cls(block, layers, **config, **kwargs)`` for the public builder ``builder``.

    The caller's ``kwargs`` may not set the ``fixed`` arguments, may set the ``forced`` ones
    only to the builder's value, and override the ``defaults``.
    """
    for key in fixed:
        if key in kwargs:
            names = ", ".join(fixed[:-1]) + f" and {fixed[-1]}"
            raise ValueError(f"{builder} fixes {names}; build {cls.__name__}(...) directly for others")
    for key, value in (forced or {}).items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(
                f"{builder} fixes {key}={value!r}; got {key}={kwargs[key]!r} "
                f"(build {cls.__name__}(...) directly for another {key})"
            )
    return cls(block, layers, **config, **{**(defaults or {}), **kwargs, **(forced or {})})


# ImageNet nets: name -> (block, depth, arguments the builder fixes)
_IMAGENET_CFGS: dict[str, tuple[type[ResidualBlock], int, dict[str, Any]]] = {
    **{f"resnet{d}": (BasicBlock if d < 50 else Bottleneck, d, {}) for d in (18, 34, 50, 101, 152)},
    **{f"plain{d}": (BasicBlock, d, {"shortcut": False}) for d in (18, 34)},
    **{f"preresnet{d}": (PreActBasicBlock, d, {}) for d in (18, 34)},
    **{f"preresnet{d}": (PreActBottleneck, d, {}) for d in (50, 101, 152, 200)},
    "wide_resnet50_2": (Bottleneck, 50, {"width_per_group": 128}),
    "wide_resnet101_2": (Bottleneck, 101, {"width_per_group": 128}),
    "resnext50_32x4d": (Bottleneck, 50, {"groups": 32, "width_per_group": 4}),
    "resnext101_32x8d": (Bottleneck, 101, {"groups": 32, "width_per_group": 8}),
    "resnext101_64x4d": (Bottleneck, 101, {"groups": 64, "width_per_group": 4}),
}

# CIFAR nets: name -> (depth, k). He et al. sec. 4.2 (k = 0 here): 6n + 2 layers, the stem, 3
# stages of n two-layer blocks, the classifier, widths 16, 32, 64. WRN-d-k (Zagoruyko &
# Komodakis, table 1): (d - 4) / 6 pre-activation basic blocks per stage, widths 16k, 32k, 64k,
# 1x1 projections where widths change, as their code.
_CIFAR_CFGS: dict[str, tuple[int, int]] = {
    **{f"resnet{d}": (d, 0) for d in (20, 32, 44, 56, 110)},
    "wrn_16_4": (16, 4),
    "wrn_28_10": (28, 10),
    "wrn_40_4": (40, 4),
}


def _resnet(
    name: str,
    num_classes: int,
    in_chans: int,
    small_input: bool,
    kwargs: dict[str, Any],
    *,
    base: str | None = None,
    attn_layer: Callable[[int], nn.Module] | None = None,
) -> ResNet:
    """The ImageNet net ``name``; with ``base`` and ``attn_layer``, the net ``base`` with attention on
    every residual branch, which then fixes the attention and the width rule too (the SE-ResNets)."""
    block, depth, forced = _IMAGENET_CFGS[base or name]
    fixed: tuple[str, ...] = ("block", "layers")
    config: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans, "small_input": small_input}
    if attn_layer is not None:
        fixed += ("attn_layer",)
        forced = {"groups": 1, "width_per_group": 64, **forced}
        config["attn_layer"] = attn_layer
    return _create_resnet(
        name, ResNet, block, IMAGENET_STAGES[depth], kwargs, fixed=fixed, forced=forced, **config
    )


def _cifar_resnet(
    name: str, num_classes: int, in_chans: int, small_input: bool, kwargs: dict[str, Any]
) -> CifarResNet:
    depth, k = _CIFAR_CFGS[name]
    block: type[ResidualBlock] = PreActBasicBlock if k else BasicBlock
    n = (depth - 4) // 6 if k else (depth - 2) // 6
    widths = (16 * k, 32 * k, 64 * k) if k else (16, 32, 64)
    return _create_resnet(
        name,
        CifarResNet,
        block,
        [n] * 3,
        kwargs,
        fixed=("block", "layers", "widths"),
        defaults={"shortcut_type": "B"} if k else None,
        widths=widths,
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
    )


# ---------------------------------------------------------------------------- public builders
# Parameter counts are at num_classes=1000 (ImageNet nets) or 10 (CIFAR nets), as measured by
# tests/models/test_resnet.py, beside the published figure they are checked against.


@register_model(torchvision="resnet18")
def resnet18(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNet-18 (He et al. 2016, table 1): 11,689,512 parameters, equal to torchvision's ``resnet18``."""
    return _resnet("resnet18", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="resnet34")
def resnet34(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNet-34 (He et al. 2016, table 1): 21,797,672 parameters, equal to torchvision's ``resnet34``."""
    return _resnet("resnet34", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="resnet50")
def resnet50(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNet-50 (He et al. 2016, table 1): 25,557,032 parameters, torchvision's ``resnet50``; the lecture's WRN table says 25.6M."""
    return _resnet("resnet50", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="resnet101")
def resnet101(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNet-101 (He et al. 2016, table 1): 44,549,160 parameters, torchvision's ``resnet101``; the lecture's WRN table says 44.5M."""
    return _resnet("resnet101", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="resnet152")
def resnet152(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNet-152 (He et al. 2016, table 1): 60,192,808 parameters, torchvision's ``resnet152``; the lecture's WRN table says 60.2M."""
    return _resnet("resnet152", num_classes, in_chans, small_input, kwargs)


@register_model()
def plain18(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Plain-18 (He et al. 2016, table 1 and fig. 4 left): ResNet-18 without shortcuts.

    11,515,688 parameters: a plain net has no shortcuts, hence no projections, so it has
    exactly the parameters of ``resnet18(shortcut_type="A")`` -- the lecture's "no extra
    parameter compared to their plain counterparts", which holds for option A -- and
    173,824 fewer than torchvision's ``resnet18`` (option B: three 1x1 projections + BN).
    """
    return _resnet("plain18", num_classes, in_chans, small_input, kwargs)


@register_model()
def plain34(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Plain-34 (He et al. 2016, table 1 and fig. 4 left): ResNet-34 without shortcuts.

    21,623,848 parameters, those of ``resnet34(shortcut_type="A")`` (see :func:`plain18`),
    173,824 fewer than torchvision's ``resnet34``.
    """
    return _resnet("plain34", num_classes, in_chans, small_input, kwargs)


@register_model()
def preresnet18(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-18 (He et al. 2016b): 11,687,720 parameters.

    Norms sit on the block inputs, none on the stem or the bare 1x1 projections, one after the
    last stage, so the count differs slightly from ResNet-18's 11,689,512.
    """
    return _resnet("preresnet18", num_classes, in_chans, small_input, kwargs)


@register_model()
def preresnet34(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-34 (He et al. 2016b): 21,795,880 parameters."""
    return _resnet("preresnet34", num_classes, in_chans, small_input, kwargs)


@register_model()
def preresnet50(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-50 (He et al. 2016b): 25,549,352 parameters."""
    return _resnet("preresnet50", num_classes, in_chans, small_input, kwargs)


@register_model()
def preresnet101(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-101 (He et al. 2016b): 44,541,480 parameters."""
    return _resnet("preresnet101", num_classes, in_chans, small_input, kwargs)


@register_model()
def preresnet152(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-152 (He et al. 2016b): 60,185,128 parameters."""
    return _resnet("preresnet152", num_classes, in_chans, small_input, kwargs)


@register_model()
def preresnet200(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-200 (He et al. 2016b): 64,666,152 parameters; the lecture's WRN table (pre-ResNet-200) says 64.7M."""
    return _resnet("preresnet200", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="wide_resnet50_2")
def wide_resnet50_2(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """WRN-50-2-bottleneck (Zagoruyko & Komodakis 2016, ImageNet results): bottleneck 3x3 convolutions twice as wide.

    68,883,240 parameters, torchvision's ``wide_resnet50_2``; the lecture's WRN table says 68.9M.
    Fixes ``width_per_group=128``.
    """
    return _resnet("wide_resnet50_2", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="wide_resnet101_2")
def wide_resnet101_2(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """WRN-101-2-bottleneck (Zagoruyko & Komodakis 2016): 126,886,696 parameters, torchvision's ``wide_resnet101_2``.

    Fixes ``width_per_group=128``.
    """
    return _resnet("wide_resnet101_2", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="resnext50_32x4d")
def resnext50_32x4d(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNeXt-50 (32x4d) (Xie et al. 2017, table 1): cardinality 32, 4 channels per path.

    25,028,904 parameters, torchvision's ``resnext50_32x4d`` (the paper's table 1 says 25.0M).
    Fixes ``groups=32, width_per_group=4``.
    """
    return _resnet("resnext50_32x4d", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="resnext101_32x8d")
def resnext101_32x8d(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNeXt-101 (32x8d) (Xie et al. 2017, table 5): 88,791,336 parameters, torchvision's ``resnext101_32x8d``.

    Fixes ``groups=32, width_per_group=8``.
    """
    return _resnet("resnext101_32x8d", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="resnext101_64x4d")
def resnext101_64x4d(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNeXt-101 (64x4d) (Xie et al. 2017, table 5): 83,455,272 parameters, torchvision's ``resnext101_64x4d``.

    Fixes ``groups=64, width_per_group=4``.
    """
    return _resnet("resnext101_64x4d", num_classes, in_chans, small_input, kwargs)


@register_model()
def wrn_16_4(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """WRN-16-4 (Zagoruyko & Komodakis 2016): 2,748,890 parameters at 10 classes; the paper's CIFAR table says 2.7M."""
    return _cifar_resnet("wrn_16_4", num_classes, in_chans, small_input, kwargs)


@register_model()
def wrn_28_10(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """WRN-28-10 (Zagoruyko & Komodakis 2016): 36,479,194 parameters at 10 classes; the paper's CIFAR table says 36.5M."""
    return _cifar_resnet("wrn_28_10", num_classes, in_chans, small_input, kwargs)


@register_model()
def wrn_40_4(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """WRN-40-4 (Zagoruyko & Komodakis 2016): 8,949,210 parameters at 10 classes; the paper's CIFAR table says 8.9M."""
    return _cifar_resnet("wrn_40_4", num_classes, in_chans, small_input, kwargs)


@register_model()
def resnet20(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """CIFAR ResNet-20 (He et al. 2016, sec. 4.2, n=3): 269,722 parameters at 10 classes; table 6 says 0.27M."""
    return _cifar_resnet("resnet20", num_classes, in_chans, small_input, kwargs)


@register_model()
def resnet32(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """CIFAR ResNet-32 (He et al. 2016, sec. 4.2, n=5): 464,154 parameters at 10 classes; table 6 says 0.46M."""
    return _cifar_resnet("resnet32", num_classes, in_chans, small_input, kwargs)


@register_model()
def resnet44(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """CIFAR ResNet-44 (He et al. 2016, sec. 4.2, n=7): 658,586 parameters at 10 classes; table 6 says 0.66M."""
    return _cifar_resnet("resnet44", num_classes, in_chans, small_input, kwargs)


@register_model()
def resnet56(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """CIFAR ResNet-56 (He et al. 2016, sec. 4.2, n=9): 853,018 parameters at 10 classes; table 6 says 0.85M."""
    return _cifar_resnet("resnet56", num_classes, in_chans, small_input, kwargs)


@register_model()
def resnet110(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """CIFAR ResNet-110 (He et al. 2016, sec. 4.2, n=18): 1,727,962 parameters at 10 classes; table 6 says 1.7M."""
    return _cifar_resnet("resnet110", num_classes, in_chans, small_input, kwargs)
