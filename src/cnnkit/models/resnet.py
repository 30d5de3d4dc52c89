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

Two classes share the blocks of :mod:`cnnkit.layers.residual`:

- :class:`ResNet`, the ImageNet net (stem, four stages of widths 64-128-256-512, pool, fc),
  with torchvision's module names, so with ``small_input=False`` and torchvision's block and
  arguments its ``state_dict`` *is* torchvision's. It takes post- and pre-activation blocks:
  with a pre-activation block the stem has no norm (the first block normalises its input)
  and a final BN-ReLU (``bn_final``, ``act_final``) follows the last stage, as in He et al.
  2016b, sec. 4. ``small_input=True`` replaces the 7x7/2 stem convolution and the max-pool
  with one 3x3/1 convolution (as the CIFAR variants do), keeping 4x4 maps in the last stage
  for 28x28 inputs instead of 1x1.
- :class:`CifarResNet`, the CIFAR net of He et al. sec. 4.2 and of the wide ResNets: a 3x3
  stem convolution with 16 channels and three stages (16-32-64 channels times k), no
  max-pool; already made for 32x32 inputs, so ``small_input`` is accepted and changes
  nothing.

Every configuration here runs on inputs down to 1x1 (all downsampling is by convolutions or
pools with padding), so ``min_input_size`` is 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.layers.act import get_act
from cnnkit.layers.drop import Dropout, drop_path_rates
from cnnkit.layers.norm import get_norm_layer
from cnnkit.layers.residual import (
    BasicBlock,
    Bottleneck,
    PadShortcut,
    PreActBasicBlock,
    PreActBottleneck,
    ResidualBlock,
    conv1x1,
    conv3x3,
)
from cnnkit.models._utils import set_input_constraints
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

NormArg = str | Callable[[int], nn.Module] | None
ActArg = str | Callable[[], nn.Module] | None

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


def _check_block(block: Any) -> None:
    if not (
        isinstance(block, type)
        and issubclass(block, nn.Module)
        and isinstance(getattr(block, "expansion", None), int)
    ):
        raise ValueError(
            f"block must be a residual block class with an integer `expansion` (BasicBlock, Bottleneck, "
            f"PreActBasicBlock, PreActBottleneck or a subclass); got {block!r}"
        )


def _check_layers(layers: Sequence[int], stages: int, who: str) -> list[int]:
    layers = list(layers)
    if len(layers) != stages or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
        raise ValueError(f"{who} needs {stages} integer block counts >= 1 in `layers`; got {layers}")
    return layers


def _check_head(num_classes: int, in_chans: int, drop_rate: float, drop_path_rate: float, who: str) -> None:
    if num_classes < 1:
        raise ValueError(f"{who} needs num_classes >= 1; got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"{who} needs in_chans >= 1; got {in_chans}")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"{who} needs drop_rate (dropout before the classifier) in [0, 1); got {drop_rate}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"{who} needs drop_path_rate in [0, 1); got {drop_path_rate} (e.g. 0.1)")


def _make_downsample(
    block: type[ResidualBlock],
    inplanes: int,
    out_planes: int,
    stride: int,
    shortcut_type: str,
    norm: Callable[[int], nn.Module],
) -> nn.Module | None:
    """The shortcut of a block whose input and output shapes differ (He et al. 2016, sec. 3.3).

    Option A: zero-padding identity (:class:`PadShortcut`, no parameters). Option B: 1x1
    projection; followed by a norm in post-activation nets (torchvision's ``downsample.0/1``),
    a bare convolution in pre-activation nets (the authors' ``preresnet.lua``, and the
    wide-ResNet code), whose input is already normalised.
    """
    if stride == 1 and inplanes == out_planes:
        return None
    if shortcut_type == "A":
        return PadShortcut(inplanes, out_planes, stride)
    if getattr(block, "preact", False):
        return conv1x1(inplanes, out_planes, stride)
    return nn.Sequential(conv1x1(inplanes, out_planes, stride), norm(out_planes))


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
        downsample = (
            _make_downsample(block, block_in, out_planes, block_stride, shortcut_type, norm)
            if shortcut
            else None
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


def _init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    """He initialisation (fan_out) of convolutions, unit-scale norms, as torchvision's ResNet.

    ``zero_init_residual`` zeroes the last norm scale (post-activation) or last convolution
    (pre-activation) of every residual branch, so each block starts as the identity
    (Goyal et al. 2017, "Accurate, large minibatch SGD", sec. 5.1).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm | nn.InstanceNorm2d) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            zero_init_last = getattr(m, "zero_init_last", None)
            if callable(zero_init_last):
                zero_init_last()


def _block_kwargs(
    act_layer: ActArg, attn_layer: Callable[[int], nn.Module] | None, block_drop_rate: float
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"act_layer": act_layer, "attn_layer": attn_layer}
    if block_drop_rate:
        kwargs["drop_rate"] = block_drop_rate
    return kwargs


# ---------------------------------------------------------------------------- main classes


class ResNet(nn.Module):
    """The ImageNet ResNet: stem, four stages (64, 128, 256, 512 x ``block.expansion``), pool, fc.

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
      ImageNet default) or ``"A"`` (zero-padding, parameter-free);
    - ``deep_stem``: three 3x3 convolutions (``stem_width``, ``stem_width``,
      ``2 * stem_width`` channels) instead of the 7x7 one (SENet-154; He et al. 2019, "Bag of
      tricks", ResNet-C), kept in ``conv1`` as a Sequential;
    - ``zero_init_residual`` as torchvision's (pre-activation blocks zero their last conv).
    """

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
        norm_layer: NormArg = None,
        act_layer: ActArg = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        block_drop_rate: float = 0.0,
        attn_layer: Callable[[int], nn.Module] | None = None,
        shortcut: bool = True,
        shortcut_type: str = "B",
        zero_init_residual: bool = False,
        deep_stem: bool = False,
        stem_width: int = 64,
    ) -> None:
        super().__init__()
        _check_block(block)
        layers = _check_layers(layers, 4, "ResNet")
        _check_head(num_classes, in_chans, drop_rate, drop_path_rate, "ResNet")
        if shortcut_type not in ("A", "B"):
            raise ValueError(
                f"shortcut_type must be 'A' (zero-padding) or 'B' (projection); got {shortcut_type!r}"
            )
        if stem_width < 1:
            raise ValueError(f"ResNet needs stem_width >= 1; got {stem_width}")
        if zero_init_residual and not shortcut:
            raise ValueError(
                "zero_init_residual=True with shortcut=False would zero the signal of a plain net"
            )
        norm = get_norm_layer(norm_layer or "batch")
        act = get_act(act_layer or "relu")
        preact = bool(getattr(block, "preact", False))
        self.preact = preact

        # stem: 7x7/2 conv + 3x3/2 max-pool (4x downsampling), or a 3x3/1 conv for small inputs
        inplanes = 2 * stem_width if deep_stem else stem_width
        stride = 1 if small_input else 2
        self.conv1: nn.Module
        if deep_stem:
            self.conv1 = nn.Sequential(
                conv3x3(in_chans, stem_width, stride),
                norm(stem_width),
                act(),
                conv3x3(stem_width, stem_width),
                norm(stem_width),
                act(),
                conv3x3(stem_width, inplanes),
            )
        elif small_input:
            self.conv1 = conv3x3(in_chans, inplanes)
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        # a pre-activation net normalises in the blocks (the first block pre-activates its input)
        self.bn1 = nn.Identity() if preact else norm(inplanes)
        self.act1 = nn.Identity() if preact else act()
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        rates = drop_path_rates(sum(layers), drop_path_rate) if drop_path_rate > 0 else [0.0] * sum(layers)
        kwargs = _block_kwargs(act_layer, attn_layer, block_drop_rate)
        stages = []
        for i, (planes, num_blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            first = sum(layers[:i])
            stages.append(
                _make_stage(
                    block,
                    inplanes,
                    planes,
                    num_blocks,
                    1 if i == 0 else 2,
                    rates[first : first + num_blocks],
                    shortcut=shortcut,
                    shortcut_type=shortcut_type,
                    norm=norm,
                    groups=groups,
                    base_width=width_per_group,
                    block_kwargs=kwargs,
                )
            )
            inplanes = planes * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        self.num_features = inplanes
        self.bn_final = norm(inplanes) if preact else nn.Identity()
        self.act_final = act() if preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(inplanes, num_classes)

        _init_weights(self, zero_init_residual)
        set_input_constraints(self, in_chans=in_chans, min_input_size=1, small_input=small_input)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (N, num_features, H/32, W/32), after the final norm if any."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.act_final(self.bn_final(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, dropout, classifier."""
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class CifarResNet(nn.Module):
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
    changes nothing (the net records ``small_input=True``).
    """

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
        norm_layer: NormArg = None,
        act_layer: ActArg = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        block_drop_rate: float = 0.0,
        attn_layer: Callable[[int], nn.Module] | None = None,
        shortcut: bool = True,
        shortcut_type: str = "A",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        del small_input  # CIFAR nets are small-input nets by design; see the class docstring
        _check_block(block)
        widths = list(widths)
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"CifarResNet needs positive integer stage widths; got {widths}")
        layers = _check_layers(layers, len(widths), "CifarResNet")
        _check_head(num_classes, in_chans, drop_rate, drop_path_rate, "CifarResNet")
        if shortcut_type not in ("A", "B"):
            raise ValueError(
                f"shortcut_type must be 'A' (zero-padding) or 'B' (projection); got {shortcut_type!r}"
            )
        if stem_width < 1:
            raise ValueError(f"CifarResNet needs stem_width >= 1; got {stem_width}")
        if zero_init_residual and not shortcut:
            raise ValueError(
                "zero_init_residual=True with shortcut=False would zero the signal of a plain net"
            )
        norm = get_norm_layer(norm_layer or "batch")
        act = get_act(act_layer or "relu")
        preact = bool(getattr(block, "preact", False))
        self.preact = preact

        self.conv1 = conv3x3(in_chans, stem_width)
        self.bn1 = nn.Identity() if preact else norm(stem_width)
        self.act1 = nn.Identity() if preact else act()

        rates = drop_path_rates(sum(layers), drop_path_rate) if drop_path_rate > 0 else [0.0] * sum(layers)
        kwargs = _block_kwargs(act_layer, attn_layer, block_drop_rate)
        inplanes = stem_width
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
                norm=norm,
                groups=1,
                base_width=64,
                block_kwargs=kwargs,
            )
            self.add_module(f"layer{i + 1}", stage)
            inplanes = planes * block.expansion
        self.num_stages = len(widths)

        self.num_features = inplanes
        self.bn_final = norm(inplanes) if preact else nn.Identity()
        self.act_final = act() if preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(inplanes, num_classes)

        _init_weights(self, zero_init_residual)
        set_input_constraints(self, in_chans=in_chans, min_input_size=1, small_input=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, after the final norm if any."""
        x = self.act1(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.act_final(self.bn_final(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, dropout, classifier."""
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------- private builders


def _force(builder: str, kwargs: dict[str, Any], **forced: Any) -> dict[str, Any]:
    """Add the arguments a builder fixes; a conflicting value from the caller raises."""
    for key, value in forced.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(
                f"{builder} fixes {key}={value!r}; got {key}={kwargs[key]!r} "
                f"(build ResNet(...) directly for another {key})"
            )
        kwargs[key] = value
    return kwargs


def _imagenet(
    builder: str,
    depth: int,
    *,
    preact: bool = False,
    num_classes: int,
    in_chans: int,
    small_input: bool,
    **kwargs: Any,
) -> ResNet:
    bottleneck = depth >= 50
    block: type[ResidualBlock]
    if preact:
        block = PreActBottleneck if bottleneck else PreActBasicBlock
    else:
        block = Bottleneck if bottleneck else BasicBlock
    if "block" in kwargs or "layers" in kwargs:
        raise ValueError(
            f"{builder} fixes block and layers; build ResNet(block, layers, ...) directly for others"
        )
    return ResNet(
        block,
        IMAGENET_STAGES[depth],
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        **kwargs,
    )


def _cifar(
    builder: str,
    block: type[ResidualBlock],
    blocks_per_stage: int,
    widths: Sequence[int],
    *,
    num_classes: int,
    in_chans: int,
    small_input: bool,
    **kwargs: Any,
) -> CifarResNet:
    if "block" in kwargs or "layers" in kwargs or "widths" in kwargs:
        raise ValueError(
            f"{builder} fixes block, layers and widths; build CifarResNet(...) directly for others"
        )
    return CifarResNet(
        block,
        [blocks_per_stage] * len(widths),
        widths=widths,
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        **kwargs,
    )


def _he_cifar(builder: str, depth: int, **kwargs: Any) -> CifarResNet:
    # 6n + 2 layers: the stem, 3 stages of n two-layer blocks, the classifier (He et al. sec. 4.2)
    return _cifar(builder, BasicBlock, (depth - 2) // 6, (16, 32, 64), **kwargs)


def _wrn(builder: str, depth: int, k: int, **kwargs: Any) -> CifarResNet:
    # WRN-d-k: (d - 4) / 6 pre-activation basic blocks per stage, widths 16k, 32k, 64k
    # (Zagoruyko & Komodakis, table 1); 1x1 projections where widths change, as their code.
    kwargs.setdefault("shortcut_type", "B")
    return _cifar(builder, PreActBasicBlock, (depth - 4) // 6, (16 * k, 32 * k, 64 * k), **kwargs)


# ---------------------------------------------------------------------------- public builders
# Parameter counts are at num_classes=1000 (ImageNet nets) or 10 (CIFAR nets), as measured by
# tests/models/test_resnet.py, beside the published figure they are checked against.


@register_model(torchvision="resnet18")
def resnet18(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNet-18 (He et al. 2016, table 1): 11,689,512 parameters, equal to torchvision's ``resnet18``."""
    return _imagenet(
        "resnet18", 18, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model(torchvision="resnet34")
def resnet34(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNet-34 (He et al. 2016, table 1): 21,797,672 parameters, equal to torchvision's ``resnet34``."""
    return _imagenet(
        "resnet34", 34, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model(torchvision="resnet50")
def resnet50(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNet-50 (He et al. 2016, table 1): 25,557,032 parameters, torchvision's ``resnet50``; the lecture's WRN table says 25.6M."""
    return _imagenet(
        "resnet50", 50, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model(torchvision="resnet101")
def resnet101(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNet-101 (He et al. 2016, table 1): 44,549,160 parameters, torchvision's ``resnet101``; the lecture's WRN table says 44.5M."""
    return _imagenet(
        "resnet101", 101, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model(torchvision="resnet152")
def resnet152(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNet-152 (He et al. 2016, table 1): 60,192,808 parameters, torchvision's ``resnet152``; the lecture's WRN table says 60.2M."""
    return _imagenet(
        "resnet152", 152, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


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
    kwargs = _force("plain18", kwargs, shortcut=False)
    return _imagenet(
        "plain18", 18, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model()
def plain34(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Plain-34 (He et al. 2016, table 1 and fig. 4 left): ResNet-34 without shortcuts.

    21,623,848 parameters, those of ``resnet34(shortcut_type="A")`` (see :func:`plain18`),
    173,824 fewer than torchvision's ``resnet34``.
    """
    kwargs = _force("plain34", kwargs, shortcut=False)
    return _imagenet(
        "plain34", 34, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model()
def preresnet18(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-18 (He et al. 2016b): 11,687,720 parameters.

    Norms sit on the block inputs, none on the stem or the bare 1x1 projections, one after the
    last stage, so the count differs slightly from ResNet-18's 11,689,512.
    """
    return _imagenet(
        "preresnet18",
        18,
        preact=True,
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        **kwargs,
    )


@register_model()
def preresnet34(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-34 (He et al. 2016b): 21,795,880 parameters."""
    return _imagenet(
        "preresnet34",
        34,
        preact=True,
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        **kwargs,
    )


@register_model()
def preresnet50(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-50 (He et al. 2016b): 25,549,352 parameters."""
    return _imagenet(
        "preresnet50",
        50,
        preact=True,
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        **kwargs,
    )


@register_model()
def preresnet101(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-101 (He et al. 2016b): 44,541,480 parameters."""
    return _imagenet(
        "preresnet101",
        101,
        preact=True,
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        **kwargs,
    )


@register_model()
def preresnet152(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-152 (He et al. 2016b): 60,185,128 parameters."""
    return _imagenet(
        "preresnet152",
        152,
        preact=True,
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        **kwargs,
    )


@register_model()
def preresnet200(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """Pre-activation ResNet-200 (He et al. 2016b): 64,666,152 parameters; the lecture's WRN table (pre-ResNet-200) says 64.7M."""
    return _imagenet(
        "preresnet200",
        200,
        preact=True,
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        **kwargs,
    )


@register_model(torchvision="wide_resnet50_2")
def wide_resnet50_2(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """WRN-50-2-bottleneck (Zagoruyko & Komodakis 2016, ImageNet results): bottleneck 3x3 convolutions twice as wide.

    68,883,240 parameters, torchvision's ``wide_resnet50_2``; the lecture's WRN table says 68.9M.
    Fixes ``width_per_group=128``.
    """
    kwargs = _force("wide_resnet50_2", kwargs, width_per_group=128)
    return _imagenet(
        "wide_resnet50_2", 50, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model(torchvision="wide_resnet101_2")
def wide_resnet101_2(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """WRN-101-2-bottleneck (Zagoruyko & Komodakis 2016): 126,886,696 parameters, torchvision's ``wide_resnet101_2``.

    Fixes ``width_per_group=128``.
    """
    kwargs = _force("wide_resnet101_2", kwargs, width_per_group=128)
    return _imagenet(
        "wide_resnet101_2", 101, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model(torchvision="resnext50_32x4d")
def resnext50_32x4d(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNeXt-50 (32x4d) (Xie et al. 2017, table 1): cardinality 32, 4 channels per path.

    25,028,904 parameters, torchvision's ``resnext50_32x4d`` (the paper's table 1 says 25.0M).
    Fixes ``groups=32, width_per_group=4``.
    """
    kwargs = _force("resnext50_32x4d", kwargs, groups=32, width_per_group=4)
    return _imagenet(
        "resnext50_32x4d", 50, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model(torchvision="resnext101_32x8d")
def resnext101_32x8d(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNeXt-101 (32x8d) (Xie et al. 2017, table 5): 88,791,336 parameters, torchvision's ``resnext101_32x8d``.

    Fixes ``groups=32, width_per_group=8``.
    """
    kwargs = _force("resnext101_32x8d", kwargs, groups=32, width_per_group=8)
    return _imagenet(
        "resnext101_32x8d", 101, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model(torchvision="resnext101_64x4d")
def resnext101_64x4d(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> ResNet:
    """ResNeXt-101 (64x4d) (Xie et al. 2017, table 5): 83,455,272 parameters, torchvision's ``resnext101_64x4d``.

    Fixes ``groups=64, width_per_group=4``.
    """
    kwargs = _force("resnext101_64x4d", kwargs, groups=64, width_per_group=4)
    return _imagenet(
        "resnext101_64x4d", 101, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model()
def wrn_16_4(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """WRN-16-4 (Zagoruyko & Komodakis 2016): 2,748,890 parameters at 10 classes; the paper's CIFAR table says 2.7M."""
    return _wrn(
        "wrn_16_4", 16, 4, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model()
def wrn_28_10(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """WRN-28-10 (Zagoruyko & Komodakis 2016): 36,479,194 parameters at 10 classes; the paper's CIFAR table says 36.5M."""
    return _wrn(
        "wrn_28_10", 28, 10, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model()
def wrn_40_4(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """WRN-40-4 (Zagoruyko & Komodakis 2016): 8,949,210 parameters at 10 classes; the paper's CIFAR table says 8.9M."""
    return _wrn(
        "wrn_40_4", 40, 4, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model()
def resnet20(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """CIFAR ResNet-20 (He et al. 2016, sec. 4.2, n=3): 269,722 parameters at 10 classes; table 6 says 0.27M."""
    return _he_cifar(
        "resnet20", 20, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model()
def resnet32(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """CIFAR ResNet-32 (He et al. 2016, sec. 4.2, n=5): 464,154 parameters at 10 classes; table 6 says 0.46M."""
    return _he_cifar(
        "resnet32", 32, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model()
def resnet44(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """CIFAR ResNet-44 (He et al. 2016, sec. 4.2, n=7): 658,586 parameters at 10 classes; table 6 says 0.66M."""
    return _he_cifar(
        "resnet44", 44, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model()
def resnet56(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """CIFAR ResNet-56 (He et al. 2016, sec. 4.2, n=9): 853,018 parameters at 10 classes; table 6 says 0.85M."""
    return _he_cifar(
        "resnet56", 56, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model()
def resnet110(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> CifarResNet:
    """CIFAR ResNet-110 (He et al. 2016, sec. 4.2, n=18): 1,727,962 parameters at 10 classes; table 6 says 1.7M."""
    return _he_cifar(
        "resnet110", 110, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )
