"""VGGNet, the ILSVRC 2014 runner-up (lecture slides "VGGNet").

Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image
recognition" (ICLR), Table 1, configurations A (VGG-11), B (VGG-13), D (VGG-16)
and E (VGG-19): stacks of 3x3 stride-1 "same" convolutions, 2x2 stride-2 max-pools
between five stages of 64, 128, 256, 512, 512 channels, and three fully connected
layers (4096, 4096, 1000). The ``_bn`` variants put batch normalisation after
every convolution (Ioffe & Szegedy 2015; torchvision's ``vgg*_bn``).

Module names are torchvision's (``features``, ``avgpool``, ``classifier``), so its
ImageNet weights load with ``strict=True``. VGG-16 has 138,357,544 parameters,
the lecture's "138M": its per-layer weight counts (1,728 for the first conv up to
102,760,448 for the first FC layer, biases not counted) sum to 138,344,128 and the
13,416 biases make up the rest.

``small_input=True`` (for 28x28 to 32x32 inputs): the ImageNet net halves its input
five times and so needs at least 32x32 inputs. The small-input net drops the
*first* max-pool (it becomes an identity, so module indices stay the same), keeping
stage 2 at full resolution as the stride-1 stems of the other small-input models
do, and pools the last map globally: ``avgpool`` is ``AdaptiveAvgPool2d(1)`` and the
classifier keeps torchvision's three-layer structure on 512 inputs
(512 -> 4096 -> 4096 -> classes). With a 28x28 input the five stages run at 28, 28,
14, 7 and 3 pixels and the last pool leaves 1x1; the minimum input is 16x16.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.layers.act import ActLayer, get_act
from cnnkit.layers.norm import NormLayer, get_norm_layer
from cnnkit.models._utils import check_model_args, fc_classifier, set_input_constraints, torchvision_init
from cnnkit.models.api import ZooModel
from cnnkit.models.registry import register_model

__all__ = [
    "VGG",
    "cfgs",
    "make_layers",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]


# Simonyan & Zisserman 2015, Table 1: an int is a 3x3 conv with that many output channels
# (then norm, then activation), "M" a 2x2 stride-2 max-pool.
cfgs: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # A
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # B
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # D
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],  # E
}


def make_layers(
    cfg: Sequence[Any],
    *,
    in_chans: int = 3,
    norm_layer: NormLayer | None = None,
    act_layer: ActLayer = "relu",
    small_input: bool = False,
) -> nn.Sequential:
    """The ``features`` stack of a VGG config; ``norm_layer=None`` puts no norm after the convs.

    Convolutions keep their bias even with a norm layer, as torchvision's (so its
    ``vgg*_bn`` weights load). With ``small_input`` the first max-pool is an identity.
    """
    norm = None if norm_layer is None else get_norm_layer(norm_layer)
    act = get_act(act_layer)
    layers: list[nn.Module] = []
    c_in = in_chans
    first_pool = True
    for v in cfg:
        if v == "M":
            layers.append(nn.Identity() if small_input and first_pool else nn.MaxPool2d(2, stride=2))
            first_pool = False
        elif (isinstance(v, int) and not isinstance(v, bool) and v > 0) or (
            isinstance(v, tuple) and len(v) == 2 and all(isinstance(t, int) and t > 0 for t in v) and v[1] % 2
        ):
            width, k = (v, 3) if isinstance(v, int) else v
            layers.append(nn.Conv2d(c_in, width, k, padding=k // 2))
            if norm is not None:
                layers.append(norm(width))
            layers.append(act())
            c_in = width
        else:
            raise ValueError(
                "VGG cfg entries are positive ints (3x3 conv widths), (width, odd kernel) pairs or 'M' "
                f"(max-pool); got {v!r}"
            )
    return nn.Sequential(*layers)


def _last_width(cfg: Sequence[Any]) -> int:
    widths = [v if isinstance(v, int) else v[0] for v in cfg if v != "M"]
    if not widths:
        raise ValueError("a VGG cfg needs at least one convolution")
    return widths[-1]


class VGG(ZooModel):
    """VGG: ``features`` (from :func:`make_layers`), ``avgpool``, a three-layer ``classifier``."""

    def __init__(
        self,
        cfg: Sequence[int | str],
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        *,
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer = "relu",
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        check_model_args("VGG", num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
        c_last = _last_width(cfg)
        self.features = make_layers(
            cfg, in_chans=in_chans, norm_layer=norm_layer, act_layer=act_layer, small_input=small_input
        )
        pooled = 1 if small_input else 7  # ImageNet: 224 / 2^5 = 7
        self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self.classifier = fc_classifier(c_last * pooled * pooled, num_classes, get_act(act_layer), drop_rate)
        # torchvision's initialisation (He et al. 2015, fan_out) for convs, N(0, 0.01^2) for FCs
        torchvision_init(self, "vgg")
        num_pools = sum(isinstance(m, nn.MaxPool2d) for m in self.features)
        set_input_constraints(self, in_chans=in_chans, min_input_size=2**num_pools, small_input=small_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _vgg(name: str, num_classes: int, in_chans: int, small_input: bool, kwargs: dict[str, Any]) -> VGG:
    variant, batch_norm = name.removesuffix("_bn"), name.endswith("_bn")
    if "cfg" in kwargs:
        raise ValueError(f"{name} fixes the layer table; build VGG(cfg=...) directly for another one")
    norm = kwargs.pop("norm_layer", "batch" if batch_norm else None)
    if batch_norm and norm in (None, "none", "identity"):
        raise ValueError(
            f"{name} has a norm after every conv; use {variant} for none (got norm_layer={norm!r})"
        )
    if not batch_norm and norm not in (None, "none", "identity"):
        raise ValueError(f"{variant} has no norm layers; use {variant}_bn(norm_layer={norm!r}) instead")
    norm = norm if batch_norm else None
    return VGG(
        cfgs[variant],
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        norm_layer=norm,
        **kwargs,
    )


@register_model(torchvision="vgg11")
def vgg11(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any) -> VGG:
    """VGG-11, configuration A (Simonyan & Zisserman 2015). 132,863,336 parameters (torchvision)."""
    return _vgg("vgg11", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="vgg13")
def vgg13(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any) -> VGG:
    """VGG-13, configuration B (Simonyan & Zisserman 2015). 133,047,848 parameters (torchvision)."""
    return _vgg("vgg13", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="vgg16")
def vgg16(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any) -> VGG:
    """VGG-16, configuration D (Simonyan & Zisserman 2015). 138,357,544 parameters (torchvision, lecture: 138M)."""
    return _vgg("vgg16", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="vgg19")
def vgg19(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any) -> VGG:
    """VGG-19, configuration E (Simonyan & Zisserman 2015). 143,667,240 parameters (torchvision)."""
    return _vgg("vgg19", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="vgg11_bn")
def vgg11_bn(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any) -> VGG:
    """VGG-11 with batch norm after every conv (``norm_layer`` may name another norm). 132,868,840 parameters (torchvision)."""
    return _vgg("vgg11_bn", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="vgg13_bn")
def vgg13_bn(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any) -> VGG:
    """VGG-13 with batch norm after every conv (``norm_layer`` may name another norm). 133,053,736 parameters (torchvision)."""
    return _vgg("vgg13_bn", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="vgg16_bn")
def vgg16_bn(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any) -> VGG:
    """VGG-16 with batch norm after every conv (``norm_layer`` may name another norm). 138,365,992 parameters (torchvision)."""
    return _vgg("vgg16_bn", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="vgg19_bn")
def vgg19_bn(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any) -> VGG:
    """VGG-19 with batch norm after every conv (``norm_layer`` may name another norm). 143,678,248 parameters (torchvision)."""
    return _vgg("vgg19_bn", num_classes, in_chans, small_input, kwargs)


class StageNet(ZooModel):
    """A 3x3 stem to ``width`` channels, three VGG stages at that width, global average pool, linear
    classifier: a small net for 28x28 inputs whose stages each see ``field`` x ``field`` pixels,
    either through ``(field - 1) / 2`` stacked 3x3 convolutions (``stacked``, VGG's choice:
    Simonyan & Zisserman 2015, sec. 2.3) or through one ``field`` x ``field`` convolution. Each conv
    is followed by batch norm and ReLU, each stage by a 2x2 max-pool. The width is the same in and
    out of every stage, as in the lecture's count: a stage's weights are 18 C^2 stacked against
    25 C^2 for field 5, 27 C^2 against 49 C^2 for field 7."""

    def __init__(
        self,
        *,
        field: int = 5,
        stacked: bool = True,
        width: int = 64,
        num_classes: int = 10,
        in_chans: int = 1,
        small_input: bool = True,
        norm_layer: NormLayer = "batch",
        act_layer: ActLayer = "relu",
    ) -> None:
        super().__init__()
        if field < 3 or field % 2 == 0 or width < 1:
            raise ValueError(
                f"StageNet needs an odd field >= 3 and width >= 1; got field={field}, width={width}"
            )
        check_model_args("StageNet", num_classes=num_classes, in_chans=in_chans)
        cfg: list[Any] = [(width, 3)]
        for _ in range(3):
            cfg += [(width, 3)] * ((field - 1) // 2) if stacked else [(width, field)]
            cfg.append("M")
        self.features = make_layers(cfg, in_chans=in_chans, norm_layer=norm_layer, act_layer=act_layer)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        set_input_constraints(self, in_chans=in_chans, min_input_size=8, small_input=small_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model()
def stagenet(
    *, num_classes: int = 10, in_chans: int = 1, small_input: bool = True, **kwargs: Any
) -> StageNet:
    """Three VGG stages of a given receptive field, stacked 3x3 or single (``field``, ``stacked``,
    ``width``); the lab's net for VGG's claim that two 3x3 convolutions beat one 5x5."""
    return StageNet(num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs)
