"""GoogLeNet (Inception v1), the ILSVRC 2014 winner (lecture slides "GoogLeNet").

Szegedy et al. 2015, "Going deeper with convolutions" (CVPR), Table 1 and fig. 3:
a stem (7x7/2 conv, 3x3/2 max-pool, 1x1 and 3x3 convs, 3x3/2 max-pool), nine
Inception modules with dimensionality reduction (:class:`cnnkit.layers.inception.Inception`)
in three stages separated by max-pools, global average pooling, dropout and one
linear layer. Two auxiliary classifiers on inception(4a) and (4d) add their
losses (weight 0.3 in the paper) during training only.

Module names and shapes are torchvision's ``GoogLeNet`` (``conv1`` ...
``inception5b``, ``aux1``, ``aux2``, ``fc``), so its ImageNet weights load with
``strict=True``. Like torchvision's port this one has batch normalisation
(``eps=1e-3``) after every convolution and bias-free convolutions, a 3x3 kernel in
the "5x5" branch (``branch3_kernel_size=5`` gives the paper's), 2x2 max-pool before
stage 5, and auxiliary heads that pool adaptively to 4x4 (the paper: 5x5 average
pool with stride 3, which gives 4x4 on the 14x14 maps of a 224 input).

Parameter counts at 1000 classes: 6,624,904 without auxiliary heads (torchvision's
``GoogLeNet_Weights.IMAGENET1K_V1`` meta), 13,004,888 with them. The paper's
Table 1 sums to about 6.8M, in units of K = 1024 (inception(3a)'s "159K" is its
163,328 weights). With the paper's 5x5 branch this net has 6,990,272 conv and
linear weights (6,826 Ki); torchvision's 3x3 "5x5" branch removes 16 * ch5x5red *
ch5x5 per module, 380,928 in all, and the batch norms (14,560 scales and shifts)
and the classifier bias (1,000) add 15,560: 6,990,272 - 380,928 + 15,560 =
6,624,904 (checked in ``tests/models/test_googlenet.py``).

:class:`MiniGoogLeNet` (``googlenet_mini``, ``googlenet_mini_naive``) is a small net of three
modules for 28x28 inputs, naive (fig. 2a) or with reductions (fig. 2b) at equal widths: the lab's
test of what the 1x1 reductions save.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.layers.act import ActLayer, get_act
from cnnkit.layers.inception import BasicConv2d, Inception, InceptionNaive
from cnnkit.layers.norm import NormLayer
from cnnkit.models._utils import check_model_args, set_input_constraints, torchvision_init
from cnnkit.models.api import ZooModel
from cnnkit.models.registry import register_model

__all__ = [
    "INCEPTION_WIDTHS",
    "MINI_INCEPTION_CFG",
    "GoogLeNet",
    "GoogLeNetOutputs",
    "InceptionAux",
    "MiniGoogLeNet",
    "googlenet",
    "googlenet_mini",
    "googlenet_mini_naive",
]

# Szegedy et al. 2015, Table 1. Columns: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
# Each module's input width is the previous module's output width (192 after the stem).
INCEPTION_WIDTHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}

# The lab's small Inception net (MiniGoogLeNet): "M" is a 2x2/2 max-pool, a tuple an Inception module.
# Columns: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5 (Table 1's, without "pool proj": the pool
# branch's width is the module's input width in both forms, see MiniGoogLeNet). The reductions
# are about a third (3x3) and a tenth (5x5) of the input width, as in inception(3a): 96 and 16 of 192.
MINI_INCEPTION_CFG: tuple[str | tuple[int, int, int, int, int], ...] = (
    "M",
    (16, 16, 32, 8, 16),  # in 32 -> out 96, at 14x14 for a 28x28 input
    (32, 32, 48, 8, 16),  # in 96 -> out 192
    "M",
    (48, 48, 96, 16, 32),  # in 192 -> out 368, at 7x7
)
_MINI_STEM = 32  # channels of the stem convolution

# The true smallest square input, found by shrinking the input until the network fails
# (tests/models/test_googlenet.py checks min works and min - 1 fails without the input check).
_MIN_INPUT_SIZE = {False: 15, True: 2}  # keyed by small_input
_MINI_MIN_INPUT_SIZE = {False: 15, True: 4}  # MiniGoogLeNet's, found the same way


class GoogLeNetOutputs(NamedTuple):
    """What :class:`GoogLeNet` returns in training mode with ``aux_logits=True`` (torchvision's field order)."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor
    aux_logits1: torch.Tensor


class InceptionAux(nn.Module):
    """Auxiliary classifier (Szegedy et al. 2015, sec. 5): pool to 4x4, 1x1 conv to 128, FC 1024, dropout, FC."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        drop_rate: float = 0.7,
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer = "relu",
    ) -> None:
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"InceptionAux drop_rate must be in [0, 1); got {drop_rate}")
        self.conv = BasicConv2d(in_channels, 128, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = get_act(act_layer)()
        self.dropout = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
        x = self.dropout(self.act(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


class GoogLeNet(ZooModel):
    """GoogLeNet / Inception v1 with torchvision's module names.

    ``forward`` returns the logits, except in training mode with ``aux_logits=True``,
    where it returns :class:`GoogLeNetOutputs` ``(logits, aux_logits2, aux_logits1)``
    (a named tuple, as torchvision); the paper trains on ``loss(logits) + 0.3 *
    (loss(aux_logits1) + loss(aux_logits2))``.

    ``small_input=True`` replaces the stem's 7x7/2 convolution by a 3x3/1 one and drops
    the two stem max-pools, so a 28x28 input reaches inception(3a) at 28x28 (where a
    224 input reaches it in the ImageNet net) and the head pools a 7x7 map.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        *,
        aux_logits: bool = False,
        branch3_kernel_size: int = 3,
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer = "relu",
        drop_rate: float = 0.2,
        aux_drop_rate: float = 0.7,
    ) -> None:
        super().__init__()
        check_model_args("GoogLeNet", num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
        conv = partial(BasicConv2d, norm_layer=norm_layer, act_layer=act_layer)
        self.aux_logits = aux_logits

        if small_input:
            self.conv1 = conv(in_chans, 64, 3, padding=1)
            self.maxpool1: nn.Module = nn.Identity()
        else:
            self.conv1 = conv(in_chans, 64, 7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = conv(64, 64, 1)
        self.conv3 = conv(64, 192, 3, padding=1)
        self.maxpool2: nn.Module = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, ceil_mode=True)

        inception = partial(
            Inception, branch3_kernel_size=branch3_kernel_size, norm_layer=norm_layer, act_layer=act_layer
        )
        widths = iter(INCEPTION_WIDTHS.values())
        self.inception3a = inception(192, *next(widths))
        self.inception3b = inception(self.inception3a.out_channels, *next(widths))
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = inception(self.inception3b.out_channels, *next(widths))
        self.inception4b = inception(self.inception4a.out_channels, *next(widths))
        self.inception4c = inception(self.inception4b.out_channels, *next(widths))
        self.inception4d = inception(self.inception4c.out_channels, *next(widths))
        self.inception4e = inception(self.inception4d.out_channels, *next(widths))
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = inception(self.inception4e.out_channels, *next(widths))
        self.inception5b = inception(self.inception5a.out_channels, *next(widths))

        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits:
            aux = partial(InceptionAux, drop_rate=aux_drop_rate, norm_layer=norm_layer, act_layer=act_layer)
            self.aux1 = aux(self.inception4a.out_channels, num_classes)
            self.aux2 = aux(self.inception4d.out_channels, num_classes)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.inception5b.out_channels, num_classes)

        # torchvision's initialisation: truncated N(0, 0.01^2) weights, norms as identity
        torchvision_init(self, "googlenet")

        set_input_constraints(
            self, in_chans=in_chans, min_input_size=_MIN_INPUT_SIZE[small_input], small_input=small_input
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if aux1 is not None and aux2 is not None:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


class MiniGoogLeNet(ZooModel):
    """A small Inception net for 28x28 inputs, in the naive or the reduced form (the lab's
    "bottleneck" experiment; Szegedy et al. 2015, fig. 2a against 2b).

    A stem (3x3 conv to 32 channels; without ``small_input`` GoogLeNet's 7x7/2 conv and 3x3/2
    max-pool), the modules and max-pools of :data:`MINI_INCEPTION_CFG`, global average pool,
    dropout and a linear classifier. ``reduction=False`` builds every module as
    :class:`~cnnkit.layers.inception.InceptionNaive` (1x1, 3x3 and 5x5 convolutions and a 3x3
    max-pool on the full input); ``reduction=True`` as :class:`~cnnkit.layers.inception.Inception`
    with the paper's 5x5 kernel (1x1 reductions before the 3x3 and 5x5 convolutions, a 1x1
    projection after the pool). The projection keeps the input width, so both forms have the same
    width at every layer and differ only in the 1x1 reductions: the naive pool branch passes its
    input through and cannot be narrowed.

    Why it saves, in the lecture's worked example (inception(3a)'s 5x5 branch on a 28x28x192 input,
    32 output channels): a direct 5x5 convolution costs 28*28*32*5*5*192 = 120,422,400 mult-adds;
    a 1x1 reduction to 16 channels first costs 28*28*16*192 = 2,408,448, and the 5x5 convolution
    on 16 channels 28*28*32*5*5*16 = 10,035,200: 12,443,648 in all, about a tenth. At 1x28x28 this
    net costs 37,008,480 mult-adds naive and 14,228,576 reduced, 61.6% fewer (counted by
    :func:`cnnkit.analysis.summary.summarize`; both checked in ``tests/lab/test_lab_bottleneck.py``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        small_input: bool = True,
        *,
        reduction: bool = True,
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer = "relu",
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        check_model_args("MiniGoogLeNet", num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
        conv = partial(BasicConv2d, norm_layer=norm_layer, act_layer=act_layer)
        # the paper's 5x5 kernel in the reduced module's third branch, as in the naive one
        inception = partial(Inception, branch3_kernel_size=5, norm_layer=norm_layer, act_layer=act_layer)
        naive = partial(InceptionNaive, norm_layer=norm_layer, act_layer=act_layer)
        layers: list[nn.Module] = (
            [conv(in_chans, _MINI_STEM, 3, padding=1)]
            if small_input
            else [
                conv(in_chans, _MINI_STEM, 7, stride=2, padding=3),
                nn.MaxPool2d(3, stride=2, ceil_mode=True),
            ]
        )
        width = _MINI_STEM
        for item in MINI_INCEPTION_CFG:
            if isinstance(item, str):  # "M"
                layers.append(nn.MaxPool2d(2, stride=2))
                continue
            ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5 = item
            module: Inception | InceptionNaive = (
                inception(width, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, width)
                if reduction
                else naive(width, ch1x1, ch3x3, ch5x5)
            )
            layers.append(module)
            width = module.out_channels
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(width, num_classes)
        self.reduction = reduction
        # He initialisation (not GoogLeNet's N(0, 0.01^2)): every conv is followed by batch norm,
        # and He's scale keeps the first layers' outputs well above the norm's eps of 1e-3
        torchvision_init(self, "resnet")
        set_input_constraints(
            self, in_chans=in_chans, min_input_size=_MINI_MIN_INPUT_SIZE[small_input], small_input=small_input
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(self.features(x)), 1)))


def _drop_missing_aux(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The registry's ``remap_state_dict`` hook: torchvision's checkpoint carries the auxiliary
    heads; a model built without them drops their tensors."""
    own = model.state_dict()
    return {k: v for k, v in state_dict.items() if k in own or not k.startswith(("aux1.", "aux2."))}


def _googlenet(*, num_classes: int, in_chans: int, small_input: bool, **kwargs: Any) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs)


@register_model(torchvision="googlenet", remap_state_dict=_drop_missing_aux)
def googlenet(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    aux_logits: bool = False,
    **kwargs: Any,
) -> GoogLeNet:
    """GoogLeNet / Inception v1 (Szegedy et al. 2015, "Going deeper with convolutions").

    6,624,904 parameters at 1000 classes (torchvision's ``googlenet`` weights meta;
    the paper's Table 1: ~6.8M, see the module docstring). ``aux_logits=True`` adds
    the two auxiliary classifiers (13,004,888 parameters, torchvision's
    ``GoogLeNet(aux_logits=True)`` keys); in training mode ``forward`` then returns
    :class:`GoogLeNetOutputs`. Other options: ``branch3_kernel_size`` (3, or 5 for
    the paper), ``norm_layer`` (default BatchNorm eps=1e-3), ``act_layer``,
    ``drop_rate`` (0.2, torchvision; the paper used 0.4) and ``aux_drop_rate`` (0.7).
    There is no ``transform_input``: torchvision's ImageNet weights (ported from
    TensorFlow) expect inputs scaled per channel to [-1, 1], ``(x - 0.5) / 0.5`` for
    ``x`` in [0, 1], and its pretrained builder converts ImageNet-normalised inputs
    to that; with those weights here, scale the inputs that way yourself.
    """
    return _googlenet(
        num_classes=num_classes, in_chans=in_chans, small_input=small_input, aux_logits=aux_logits, **kwargs
    )


def _mini(
    num_classes: int, in_chans: int, small_input: bool, *, reduction: bool, kwargs: dict[str, Any]
) -> MiniGoogLeNet:
    if "reduction" in kwargs and kwargs["reduction"] != reduction:
        which = "googlenet_mini" if reduction else "googlenet_mini_naive"
        raise ValueError(f"{which} sets reduction={reduction}; got reduction={kwargs['reduction']}")
    kwargs.pop("reduction", None)
    return MiniGoogLeNet(
        num_classes=num_classes, in_chans=in_chans, small_input=small_input, reduction=reduction, **kwargs
    )


@register_model()
def googlenet_mini(
    *, num_classes: int = 10, in_chans: int = 1, small_input: bool = True, **kwargs: Any
) -> MiniGoogLeNet:
    """A small Inception net with dimensionality reduction (Szegedy et al. 2015, fig. 2b), the lab's
    reduced arm: :class:`MiniGoogLeNet` with ``reduction=True`` (1x1 convolutions before the 3x3 and
    5x5 ones). 14.2M mult-adds at 1x28x28 against 37.0M for :func:`googlenet_mini_naive`."""
    return _mini(num_classes, in_chans, small_input, reduction=True, kwargs=kwargs)


@register_model()
def googlenet_mini_naive(
    *, num_classes: int = 10, in_chans: int = 1, small_input: bool = True, **kwargs: Any
) -> MiniGoogLeNet:
    """:func:`googlenet_mini` with naive Inception modules (Szegedy et al. 2015, fig. 2a): the same
    widths, the 3x3 and 5x5 convolutions on the full input width."""
    return _mini(num_classes, in_chans, small_input, reduction=False, kwargs=kwargs)
