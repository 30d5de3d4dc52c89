"""Residual blocks of the lecture (slides "ResNet", "Wide Residual Networks", "ResNeXt").

- He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition"
  (CVPR, arXiv:1512.03385): the residual building block ``x_l = relu(F(x_{l-1}) + x_{l-1})``
  (the slide's ``x_l = H_l(x_{l-1}) + x_{l-1}``), as the two-layer ``BasicBlock`` (fig. 2) and
  the three-layer 1x1-3x3-1x1 ``Bottleneck`` (fig. 5); shortcut options A (zero-padding
  identity, :class:`PadShortcut`) and B (1x1 projection where dimensions change) of sec. 3.3,
  built by :func:`make_downsample`.
  With ``shortcut=False`` a block is its "plain" counterpart (no addition), used for the
  lecture's plain-vs-residual figure (paper fig. 4).
- He, Zhang, Ren & Sun 2016, "Identity mappings in deep residual networks" (ECCV,
  arXiv:1603.05027): full pre-activation ordering BN-ReLU-conv (fig. 4e),
  :class:`PreActBasicBlock` and :class:`PreActBottleneck`; nothing follows the addition.
- Zagoruyko & Komodakis 2016, "Wide residual networks" (BMVC): widths multiplied by k
  and dropout between the convolutions of a block (``drop_rate``).
- Xie, Girshick, Dollar, Tu & He 2017, "Aggregated residual transformations for deep
  neural networks" (CVPR): ResNeXt, the bottleneck's 3x3 convolution split into
  ``groups`` (the cardinality) paths of ``base_width`` channels each (fig. 3c).
- Huang et al. 2016, "Deep networks with stochastic depth" (slide "Stochastic Depth"):
  ``drop_path_rate`` drops the residual branch of whole samples.

The post-activation blocks follow torchvision's ``models/resnet.py``: the same
constructor, submodule names (``conv1, bn1, conv2, bn2, conv3, bn3, downsample``) and
``expansion``, so their ``state_dict`` is torchvision's. Like torchvision (ResNet "v1.5"),
the bottleneck strides in its 3x3 convolution, not in the first 1x1 as in the 2016 paper;
the pre-activation bottleneck does the same, as the authors' own code (fb.resnet.torch
``preresnet.lua``) does.

Extras, all off by default so that the ``state_dict`` stays torchvision's:
``act_layer`` (activation factory), ``attn_layer`` (a ``channels -> module`` factory, e.g.
``partial(SqueezeExcite, reduction=16)``, applied to the branch output before the
addition and stored as ``se``), ``drop_path_rate``, ``drop_rate`` (dropout before the last
convolution of the branch, as in wide ResNets), ``shortcut`` (``False`` = plain block) and
``reduce_first`` (the first convolution's width divisor: 2 in SENet-154's
:class:`SENetBottleneck`, Hu et al. 2018, appendix).

All blocks share one constructor, :class:`ResidualBlock`'s: the checks, the norm and
activation factories, the shortcut, SE, drop-path and zero-init handles; each block class
sets only its layout (``expansion``, ``preact``, ``num_convs``) and its ``forward``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.layers.act import ActLayer, get_act
from cnnkit.layers.drop import Dropout, DropPath
from cnnkit.layers.norm import NormLayer, get_norm_layer

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PadShortcut",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResidualBlock",
    "SENetBottleneck",
    "conv1x1",
    "conv3x3",
    "make_downsample",
]

AttnArg = Callable[[int], nn.Module] | None


def conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Conv2d:
    """3x3 convolution, "same" padding for stride 1, no bias (a norm follows or precedes it)."""
    return nn.Conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Parameter-free shortcut, option A of He et al. 2016 (sec. 3.3 and 4.2).

    "The shortcut still performs identity mapping, with extra zero entries padded for
    increasing dimensions": the input is subsampled with ``stride`` (``x[..., ::s, ::s]``,
    which has the ``ceil(H / s)`` rows of a strided 3x3 convolution with padding 1) and
    ``out_planes - in_planes`` zero channels are appended after the input's channels.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        if in_planes < 1 or out_planes < in_planes:
            raise ValueError(
                f"PadShortcut can only add channels: needs 1 <= in_planes <= out_planes; got "
                f"in_planes={in_planes}, out_planes={out_planes} (use a 1x1 projection, option B, to reduce)"
            )
        if stride < 1:
            raise ValueError(f"PadShortcut needs stride >= 1; got {stride}")
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dimensions first: (W left, W right, H top, H bottom, C front, C back)
        return F.pad(x, (0, 0, 0, 0, 0, self.out_planes - self.in_planes))

    def extra_repr(self) -> str:
        return f"{self.in_planes}, {self.out_planes}, stride={self.stride}"


def make_downsample(
    block: type[nn.Module],
    inplanes: int,
    out_planes: int,
    stride: int = 1,
    shortcut_type: str = "B",
    kernel_size: int = 1,
    norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
) -> nn.Module | None:
    """The shortcut of a block whose input and output shapes differ (He et al. 2016, sec. 3.3), else None.

    Option A: zero-padding identity (:class:`PadShortcut`, no parameters). Option B: 1x1
    projection; followed by a norm in post-activation nets (torchvision's ``downsample.0/1``),
    a bare convolution in pre-activation nets (the authors' ``preresnet.lua``, and the
    wide-ResNet code), whose input is already normalised. ``kernel_size=3`` makes the
    stride-2 projections 3x3 convolutions (SENet-154, Hu et al. 2018, appendix); stride-1
    projections stay 1x1, as in the authors' model.
    """
    if stride == 1 and inplanes == out_planes:
        return None
    if shortcut_type == "A":
        return PadShortcut(inplanes, out_planes, stride)
    if kernel_size == 3 and stride > 1:
        proj = conv3x3(inplanes, out_planes, stride)
    else:
        proj = conv1x1(inplanes, out_planes, stride)
    if getattr(block, "preact", False):
        return proj
    return nn.Sequential(proj, norm(out_planes))


def _check_common(
    who: str,
    inplanes: int,
    planes: int,
    stride: int,
    groups: int,
    base_width: int,
    dilation: int,
    drop_path_rate: float,
    drop_rate: float,
) -> None:
    for arg, value in (
        ("inplanes", inplanes),
        ("planes", planes),
        ("stride", stride),
        ("groups", groups),
        ("base_width", base_width),
        ("dilation", dilation),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{who} needs an integer {arg} >= 1; got {arg}={value!r}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"{who} needs drop_path_rate in [0, 1); got {drop_path_rate} (e.g. 0.1)")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"{who} needs drop_rate in [0, 1); got {drop_rate} (e.g. 0.3 as in wide ResNets)")


def _check_basic(
    who: str, groups: int, base_width: int, dilation: int, for_groups: str, for_dilation: str
) -> None:
    """Basic blocks (two 3x3 convs) have neither groups, width factors nor dilation."""
    if groups != 1 or base_width != 64:
        raise ValueError(
            f"{who} supports only groups=1 and base_width=64 (got groups={groups}, "
            f"base_width={base_width}); use {for_groups}"
        )
    if dilation > 1:
        raise ValueError(f"{who} supports no dilation (got dilation={dilation}); use {for_dilation}")


def _check_shortcut(
    who: str,
    inplanes: int,
    out_planes: int,
    stride: int,
    downsample: nn.Module | None,
    shortcut: bool,
    drop_path_rate: float,
) -> None:
    if shortcut:
        if downsample is None and (stride != 1 or inplanes != out_planes):
            raise ValueError(
                f"{who} with stride={stride} maps {inplanes} to {out_planes} channels, so the identity "
                f"shortcut does not fit: pass downsample= (a 1x1 projection or PadShortcut)"
            )
    else:
        if downsample is not None:
            raise ValueError(
                f"{who} with shortcut=False is a plain block and takes no downsample; got {downsample}"
            )
        if drop_path_rate > 0:
            raise ValueError(
                f"{who}: drop_path_rate={drop_path_rate} needs a shortcut (a dropped branch of a plain "
                f"block would zero the signal); use shortcut=True or drop_path_rate=0"
            )


def _first_width(who: str, width: int, groups: int, reduce_first: int) -> int:
    """Output channels of the first convolution: the branch width divided by ``reduce_first``."""
    if isinstance(reduce_first, bool) or not isinstance(reduce_first, int) or reduce_first < 1:
        raise ValueError(f"{who} needs an integer reduce_first >= 1; got reduce_first={reduce_first!r}")
    if reduce_first == 2 and (width % 2 or (width // 2) % groups):
        raise ValueError(
            f"{who}: the halved width {width}/2 must split into groups={groups}; "
            f"choose planes, base_width and groups with an even number of channels per group"
        )
    if width % reduce_first or (width // reduce_first) % groups:
        raise ValueError(
            f"{who}: the width {width}/{reduce_first} of the first convolution must split into "
            f"groups={groups}; choose planes, base_width and groups to fit"
        )
    return width // reduce_first


class ResidualBlock(nn.Module):
    """The constructor that the residual blocks share; subclasses set the layout and ``forward``.

    A block has ``num_convs`` convolutions ``conv1..convN`` (two 3x3 ones, or 1x1-3x3-1x1 in a
    bottleneck) with their norms ``bn1..bnN`` and activations ``act1..actN``, in torchvision's
    order: post-activation ``conv, bn, act`` (the last ``act`` after the addition),
    pre-activation ``bn, act, conv``. Then ``se`` (``attn_layer`` on the branch output, else an
    identity), ``drop_path`` and ``downsample``; ``dropout`` sits before the last convolution.

    Widths: a basic block has ``planes`` channels; a bottleneck ``width = int(planes *
    base_width / 64) * groups`` in its 3x3 convolution (ResNeXt's cardinality, the wide
    ResNets' doubled width) and ``planes * expansion`` at its output. ``reduce_first`` divides
    the output of the first convolution (SENet-154's halved first 1x1; timm's
    ``reduce_first``); ``None`` takes the class's value (1, or 2 for :class:`SENetBottleneck`).
    """

    expansion: ClassVar[int] = 1
    preact: ClassVar[bool] = False
    num_convs: ClassVar[int] = 2
    reduce_first: ClassVar[int] = 1
    # the class to name when a basic block gets groups / dilation
    grouped_alternative: ClassVar[tuple[str, str]] = ("Bottleneck", "Bottleneck")

    conv1: nn.Conv2d
    conv2: nn.Conv2d
    bn1: nn.Module
    bn2: nn.Module
    act1: nn.Module
    act2: nn.Module

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: NormLayer | None = None,
        *,
        act_layer: ActLayer | None = None,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        attn_layer: AttnArg = None,
        shortcut: bool = True,
        reduce_first: int | None = None,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        _check_common(who, inplanes, planes, stride, groups, base_width, dilation, drop_path_rate, drop_rate)
        reduce_first = type(self).reduce_first if reduce_first is None else reduce_first
        if self.num_convs == 2:
            _check_basic(who, groups, base_width, dilation, *self.grouped_alternative)
            first = _first_width(who, planes, 1, reduce_first)
            convs = [(inplanes, first, 3, stride, 1, 1), (first, planes, 3, 1, 1, 1)]
        else:
            width = int(planes * (base_width / 64.0)) * groups
            if reduce_first == 1 and width < groups:
                raise ValueError(
                    f"{who}: planes={planes} and base_width={base_width} give fewer than one channel per "
                    f"group; raise planes or base_width"
                )
            first = _first_width(who, width, groups, reduce_first)
            convs = [
                (inplanes, first, 1, 1, 1, 1),
                (first, width, 3, stride, groups, dilation),
                (width, planes * self.expansion, 1, 1, 1, 1),
            ]
        out_planes = planes * self.expansion
        _check_shortcut(who, inplanes, out_planes, stride, downsample, shortcut, drop_path_rate)
        norm = get_norm_layer(norm_layer or "batch")
        act = get_act(act_layer or "relu")
        last = len(convs)
        for i, (cin, cout, k, s, g, d) in enumerate(convs, 1):
            if self.preact:  # bn, act, conv: each norm sees the input of its convolution
                self.add_module(f"bn{i}", norm(cin))
                self.add_module(f"act{i}", act())
            if i == last:
                self.dropout = Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
            self.add_module(f"conv{i}", conv3x3(cin, cout, s, g, d) if k == 3 else conv1x1(cin, cout, s))
            if not self.preact:  # conv, bn, act; the last act follows the addition
                self.add_module(f"bn{i}", norm(cout))
                if i < last:
                    self.add_module(f"act{i}", act())
        self.se = attn_layer(out_planes) if attn_layer is not None else nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.downsample = downsample
        if not self.preact:
            self.add_module(f"act{last}", act())
        self.stride = stride
        self.has_shortcut = shortcut

    def zero_init_last(self) -> None:
        """Zero the branch's last scale so the block starts as its shortcut (Goyal et al. 2017, sec. 5.1).

        That is the last norm's weight in a post-activation block; a pre-activation branch
        ends in a convolution (no norm), whose weight is zeroed.
        """
        last = getattr(self, f"{'conv' if self.preact else 'bn'}{self.num_convs}")
        weight = getattr(last, "weight", None)
        if weight is not None:
            nn.init.zeros_(weight)

    def _add_shortcut(
        self, out: torch.Tensor, x: torch.Tensor, projection_input: torch.Tensor
    ) -> torch.Tensor:
        """``drop_path(out) + shortcut``: the identity ``x`` or ``downsample(projection_input)``."""
        if not self.has_shortcut:
            return out
        return self.drop_path(out) + (x if self.downsample is None else self.downsample(projection_input))


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions, post-activation (He et al. 2016, fig. 2 left).

    ``out = act(drop_path(se(bn2(conv2(dropout(act(bn1(conv1(x)))))))) + shortcut(x))``;
    ``shortcut`` is ``downsample`` when given, else the identity; without ``shortcut`` the
    addition is left out (the plain block). As torchvision's, it supports only ``groups=1``
    and ``base_width=64`` and no dilation.
    """

    grouped_alternative = ("Bottleneck for ResNeXt and wide ResNets", "Bottleneck")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(self.dropout(out))))
        return self.act2(self._add_shortcut(out, x, x))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand (x4), post-activation (He et al. 2016, fig. 5 right).

    The 3x3 convolution has ``width = int(planes * base_width / 64) * groups`` channels in
    ``groups`` groups: ResNeXt's cardinality (Xie et al. 2017, fig. 3c; ``resnext50_32x4d`` has
    ``groups=32, base_width=4``) and the wide bottleneck (``base_width=128`` doubles the
    width: WRN-50-2). Strides in the 3x3 convolution (torchvision's "v1.5").
    """

    expansion = 4
    num_convs = 3

    conv3: nn.Conv2d
    bn3: nn.Module
    act3: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(self.dropout(out))))
        return self.act3(self._add_shortcut(out, x, x))


class PreActBasicBlock(ResidualBlock):
    """Two BN-ReLU-3x3 conv units, full pre-activation (He et al. 2016b, fig. 4e).

    ``out = drop_path(se(conv2(dropout(act(bn2(conv1(a)))))) + shortcut``, ``a = act(bn1(x))``.
    The identity shortcut carries the raw ``x`` (nothing on the shortcut path: the point of
    the paper); a projection ``downsample`` takes the pre-activated ``a``, as in the authors'
    code (fb.resnet.torch ``preresnet.lua``, "both_preact") and the official wide-ResNet code.
    ``drop_rate`` is the wide ResNets' dropout between the two convolutions (Zagoruyko &
    Komodakis 2016, sec. 2.4).
    """

    preact = True
    grouped_alternative = ("PreActBottleneck for grouped convolutions", "PreActBottleneck")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act1(self.bn1(x))
        out = self.act2(self.bn2(self.conv1(a)))
        out = self.se(self.conv2(self.dropout(out)))
        return self._add_shortcut(out, x, a)


class PreActBottleneck(ResidualBlock):
    """BN-ReLU-1x1, BN-ReLU-3x3 (strided, grouped), BN-ReLU-1x1 (x4) (He et al. 2016b, fig. 4e).

    Shortcut as in :class:`PreActBasicBlock`; width as in :class:`Bottleneck`.
    """

    expansion = 4
    preact = True
    num_convs = 3

    conv3: nn.Conv2d
    bn3: nn.Module
    act3: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act1(self.bn1(x))
        out = self.act2(self.bn2(self.conv1(a)))
        out = self.act3(self.bn3(self.conv2(out)))
        out = self.se(self.conv3(self.dropout(out)))
        return self._add_shortcut(out, x, a)


class SENetBottleneck(Bottleneck):
    """The SENet-154 bottleneck: ResNeXt's, with the first 1x1 convolution halved (Hu et al. 2018, appendix).

    ``conv1`` 1x1 ``inplanes -> width / 2``, ``conv2`` 3x3 (strided, ``groups`` groups)
    ``width / 2 -> width``, ``conv3`` 1x1 ``width -> 4 planes``, with ``width =
    int(planes * base_width / 64) * groups`` as in ResNeXt (64x4d: ``width = 4 planes``):
    :class:`Bottleneck` with ``reduce_first=2``, the same submodule names and forward.
    """

    reduce_first = 2
