"""The convolution variants of the lecture ("Various Types of Convolutions" slides).

- pointwise (1x1) convolution: mixes channels, keeps the spatial size (Lin et al.
  2014, "Network in network"; the lecture's "1x1 Convolution" slide);
- spatially separable convolution: a k x k kernel that is an outer product u v^T
  runs as a k x 1 conv followed by a 1 x k conv (the lecture's Sobel and 3,6,9
  examples; Szegedy et al. 2016, "Rethinking the Inception architecture", sec. 3.2);
- flattened convolution (Jin et al. 2015, "Flattened convolutional neural networks
  for feedforward acceleration"): a C x k x k filter that is the outer product of a
  lateral (channel), a vertical and a horizontal 1D filter runs as a 1x1 conv, a
  k x 1 depthwise conv and a 1 x k depthwise conv;
- depthwise and depthwise separable convolution (Howard et al. 2017, "MobileNets"):
  one k x k filter per input channel, then a 1x1 conv across channels;
- grouped convolution (Krizhevsky et al. 2012, "AlexNet"; Xie et al. 2017, "ResNeXt"):
  the channels split into groups that are convolved independently;
- dilated convolution (Yu & Koltun 2016, "Multi-scale context aggregation by dilated
  convolutions"): taps spaced ``dilation`` apart, padded so the size is kept;
- transposed convolution (Dumoulin & Visin 2016, "A guide to convolution arithmetic
  for deep learning"): the adjoint of a convolution with the same weights.

Every single-kernel layer here *is* an ``nn.Conv2d`` (or ``nn.ConvTranspose2d``), so
torch's own kernels run and the weights load like any conv's; the composite layers
hold real ``nn.Conv2d`` children. All layers default to ``bias=False``, since in the
networks of the lecture a normalisation layer follows each convolution (and the
lecture's parameter counts, D_K D_K M N, leave biases out). Arguments are checked at
construction time. ``padding=None`` means "same" padding, ``dilation * (k - 1) // 2``,
which keeps the spatial size at stride 1 for odd kernels.

Size arithmetic (Dumoulin & Visin 2016, relationships 6 and 12; torch's ``Conv2d`` and
``ConvTranspose2d`` docs): :func:`conv_output_size` and :func:`transposed_conv_output_size`.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.layers.act import ActLayer, get_act
from cnnkit.layers.norm import NormLayer, get_norm_layer

__all__ = [
    "DepthwiseConv2d",
    "DepthwiseSeparableConv2d",
    "DilatedConv2d",
    "FlattenedConv2d",
    "GroupedConv2d",
    "PointwiseConv2d",
    "SpatialSeparableConv2d",
    "TransposedConv2d",
    "conv_output_size",
    "same_padding",
    "transposed_conv_output_size",
]

IntPair = int | tuple[int, int]


# ----------------------------------------------------------------------------- size arithmetic


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pair(v: IntPair, name: str, who: str) -> tuple[int, int]:
    if _is_int(v):
        return (v, v)  # type: ignore[return-value]
    if isinstance(v, tuple) and len(v) == 2 and all(_is_int(e) for e in v):
        return v
    raise ValueError(f"{who}: {name} must be an int or a pair of ints; got {v!r}")


def _check_min(v: IntPair, name: str, who: str, low: int) -> tuple[int, int]:
    pair = _pair(v, name, who)
    if min(pair) < low:
        raise ValueError(f"{who}: {name} must be >= {low}; got {name}={v!r}")
    return pair


def _check_sizes(who: str, **sizes: int) -> None:
    """Every size an int >= 1; paddings may be 0."""
    for name, v in sizes.items():
        low = 0 if name.endswith("padding") else 1
        if not _is_int(v) or v < low:
            raise ValueError(f"{who}: {name} must be an int >= {low}; got {v!r}")


def conv_output_size(
    in_size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution along one spatial axis.

    ``floor((in + 2 padding - dilation (kernel - 1) - 1) / stride) + 1`` (torch's
    ``Conv2d`` docs; Dumoulin & Visin 2016, relationship 15). Raises ValueError when
    the (padded) input is smaller than the dilated kernel.

    >>> conv_output_size(224, 3, stride=2, padding=1)
    112
    """
    who = "conv_output_size"
    _check_sizes(
        who, in_size=in_size, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation
    )
    span = dilation * (kernel_size - 1) + 1
    if in_size + 2 * padding < span:
        raise ValueError(
            f"{who}: the padded input ({in_size} + 2*{padding}) is smaller than the dilated kernel ({span}); "
            "use a larger input or more padding"
        )
    return (in_size + 2 * padding - span) // stride + 1


def transposed_conv_output_size(
    in_size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output length of a transposed convolution along one spatial axis.

    ``(in - 1) stride - 2 padding + dilation (kernel - 1) + output_padding + 1``
    (torch's ``ConvTranspose2d`` docs; Dumoulin & Visin 2016, relationship 14). It
    inverts :func:`conv_output_size`: a conv maps this size back to ``in_size``, and
    ``output_padding`` in ``[0, stride)`` picks which of the ``stride`` input sizes
    that a strided conv maps to the same output is produced.

    >>> transposed_conv_output_size(112, 3, stride=2, padding=1, output_padding=1)
    224
    """
    who = "transposed_conv_output_size"
    _check_sizes(who, in_size=in_size, kernel_size=kernel_size, stride=stride, padding=padding)
    _check_sizes(who, output_padding=output_padding, dilation=dilation)
    if output_padding >= max(stride, dilation):
        raise ValueError(
            f"{who}: output_padding must be smaller than stride or dilation; got output_padding={output_padding} "
            f"with stride={stride}, dilation={dilation}"
        )
    out = (in_size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if out < 1:
        raise ValueError(
            f"{who}: padding={padding} is too large for in_size={in_size}; the output would be {out}"
        )
    return out


def same_padding(kernel_size: IntPair, dilation: IntPair = 1) -> tuple[int, int]:
    """``dilation (k - 1) // 2`` per axis: keeps the spatial size at stride 1 for odd kernels."""
    k = _check_min(kernel_size, "kernel_size", "same_padding", 1)
    d = _check_min(dilation, "dilation", "same_padding", 1)
    return (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2)


def _check_conv_args(
    who: str,
    in_channels: int,
    out_channels: int,
    kernel_size: IntPair,
    stride: IntPair,
    padding: IntPair | None,
    dilation: IntPair,
    groups: int,
) -> tuple[int, int]:
    """Validate the arguments shared by all convs; return the padding to use."""
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if not _is_int(v) or v < 1:
            raise ValueError(f"{who}: {name} must be an int >= 1; got {name}={v!r}")
    _check_min(kernel_size, "kernel_size", who, 1)
    _check_min(stride, "stride", who, 1)
    _check_min(dilation, "dilation", who, 1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"{who}: groups={groups} must divide both in_channels={in_channels} and out_channels={out_channels}"
        )
    if padding is None:
        return same_padding(kernel_size, dilation)
    return _check_min(padding, "padding", who, 0)


# ----------------------------------------------------------------------------- single convolutions


class _CheckedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that checks its arguments first (the errors name the subclass); ``padding=None``
    is "same" padding. The base of the single-kernel convolutions below."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair | None = None,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        who = type(self).__name__
        pad = _check_conv_args(who, in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=pad,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )


class PointwiseConv2d(_CheckedConv2d):
    """1x1 convolution: a linear map across channels at every pixel.

    ``groups > 1`` gives ShuffleNet's pointwise group convolution (Zhang et al. 2018).
    Parameters: ``in_channels / groups * out_channels`` (+ ``out_channels`` bias).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: IntPair = 1, groups: int = 1, bias: bool = False
    ) -> None:
        super().__init__(in_channels, out_channels, 1, stride, 0, 1, groups, bias)


class DepthwiseConv2d(_CheckedConv2d):
    """Depthwise convolution: one k x k filter per input channel (Howard et al. 2017, fig. 2b).

    A grouped convolution with ``groups = in_channels``. ``depth_multiplier`` filters per
    channel give ``in_channels * depth_multiplier`` outputs (as TensorFlow's
    ``DepthwiseConv2D``); output channel ``c * depth_multiplier + j`` sees input channel ``c``
    only. Parameters: ``D_K D_K M`` for ``depth_multiplier=1``.
    """

    def __init__(
        self,
        in_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair | None = None,
        dilation: IntPair = 1,
        bias: bool = False,
        depth_multiplier: int = 1,
    ) -> None:
        if not _is_int(depth_multiplier) or depth_multiplier < 1:
            raise ValueError(
                f"DepthwiseConv2d: depth_multiplier must be an int >= 1; got {depth_multiplier!r}"
            )
        if not _is_int(in_channels) or in_channels < 1:
            raise ValueError(
                f"DepthwiseConv2d: in_channels must be an int >= 1; got in_channels={in_channels!r}"
            )
        out_channels = in_channels * depth_multiplier
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, in_channels, bias)
        self.depth_multiplier = depth_multiplier


class GroupedConv2d(_CheckedConv2d):
    """Grouped convolution (AlexNet's two-GPU split; ResNeXt's cardinality).

    The input channels split into ``groups`` groups of ``in_channels / groups``; group
    ``g`` produces output channels ``[g N/G, (g+1) N/G)`` from its own inputs only.
    Parameters: ``D_K D_K (M / G) N``, a factor G fewer than a standard convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        groups: int = 2,
        stride: IntPair = 1,
        padding: IntPair | None = None,
        dilation: IntPair = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)


class DilatedConv2d(_CheckedConv2d):
    """Dilated (atrous) convolution with the padding that keeps the spatial size at stride 1.

    Taps are ``dilation`` pixels apart, so a k x k kernel spans ``dilation (k - 1) + 1``
    pixels with k^2 weights (Yu & Koltun 2016). Stacking 3x3 layers with dilation
    1, 2, 4 grows the receptive field to 3, 7, 15 (the lecture's F_1, F_2, F_3).
    The padding is ``dilation (k - 1) / 2``, so ``dilation (k - 1)`` must be even.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        dilation: IntPair = 2,
        stride: IntPair = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        who = "DilatedConv2d"
        _check_conv_args(who, in_channels, out_channels, kernel_size, stride, None, dilation, groups)
        k, d = _pair(kernel_size, "kernel_size", who), _pair(dilation, "dilation", who)
        if any(di * (ki - 1) % 2 for ki, di in zip(k, d, strict=True)):
            raise ValueError(
                f"{who}: dilation * (kernel_size - 1) must be even to keep the size; got kernel_size={kernel_size!r}, "
                f"dilation={dilation!r} (use an odd kernel_size)"
            )
        super().__init__(in_channels, out_channels, kernel_size, stride, None, dilation, groups, bias)


class TransposedConv2d(nn.ConvTranspose2d):
    """Transposed convolution: the adjoint of ``Conv2d`` with the same weight tensor.

    For a ``Conv2d(out_channels, in_channels, ...)`` with weight W (note the swapped
    channel counts), ``<conv(x), y> = <x, convT(y)>`` when both use W. The output size is
    :func:`transposed_conv_output_size`, also available as :meth:`output_size`.
    ``output_padding`` (in ``[0, max(stride, dilation))``) adds rows/columns at the bottom/right.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        output_padding: IntPair = 0,
        groups: int = 1,
        bias: bool = False,
        dilation: IntPair = 1,
    ) -> None:
        who = "TransposedConv2d"
        pad = _check_conv_args(who, in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        op = _check_min(output_padding, "output_padding", who, 0)
        s, d = _pair(stride, "stride", who), _pair(dilation, "dilation", who)
        if any(o >= max(si, di) for o, si, di in zip(op, s, d, strict=True)):
            raise ValueError(
                f"{who}: output_padding must be smaller than stride or dilation; got output_padding={output_padding!r}, "
                f"stride={stride!r}, dilation={dilation!r}"
            )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=pad,
            output_padding=op,
            groups=groups,
            bias=bias,
            dilation=dilation,
        )

    def output_size(self, in_size: IntPair) -> tuple[int, int]:
        """(H_out, W_out) for an input of spatial size ``in_size`` (an int or (H, W))."""
        h, w = _check_min(in_size, "in_size", "TransposedConv2d.output_size", 1)
        return tuple(  # type: ignore[return-value]
            transposed_conv_output_size(n, k, s, p, o, d)
            for n, k, s, p, o, d in zip(
                (h, w),
                self.kernel_size,
                self.stride,
                self.padding,
                self.output_padding,
                self.dilation,
                strict=True,
            )
        )


# ----------------------------------------------------------------------------- factorised convolutions


def _check_factorised(
    who: str, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int | None
) -> tuple[int, int]:
    """The checks of the factorised convolutions (integer kernel and stride); returns the padding pair."""
    pad = _check_conv_args(who, in_channels, out_channels, kernel_size, stride, padding, 1, 1)
    if not _is_int(kernel_size) or not _is_int(stride):
        raise ValueError(f"{who}: kernel_size and stride must be ints; got {kernel_size!r}, {stride!r}")
    return pad


def _vertical_horizontal(
    in_channels: int,
    mid_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    pad: tuple[int, int],
    *,
    groups: int,
    bias: bool,
) -> tuple[nn.Conv2d, nn.Conv2d]:
    """A k x 1 convolution, then a 1 x k one. Zero padding commutes with the factorisation: rows
    are padded for the vertical conv, columns for the horizontal one, and the result equals the
    full k x k conv. Only the horizontal conv may have a bias."""
    vertical = nn.Conv2d(
        in_channels, mid_channels, (kernel_size, 1), (stride, 1), (pad[0], 0), groups=groups, bias=False
    )
    horizontal = nn.Conv2d(
        mid_channels, out_channels, (1, kernel_size), (1, stride), (0, pad[1]), groups=groups, bias=bias
    )
    return vertical, horizontal


class SpatialSeparableConv2d(nn.Module):
    """A k x k convolution factorised into a k x 1 (``vertical``) and a 1 x k (``horizontal``) conv.

    With one channel and weights u (k x 1) and v (1 x k) it equals the convolution with
    kernel u v^T: the lecture's Sobel filter ``[1, 2, 1]^T x [-1, 0, 1]``. With channels,
    ``vertical`` maps ``in_channels -> mid_channels`` (default ``out_channels``) and
    ``horizontal`` maps ``mid_channels -> out_channels``, as Inception-v3's asymmetric
    convolutions (Szegedy et al. 2016); the equivalent kernel is
    ``W[n, m] = sum_c v[n, c] * u[c, m]`` (outer products, summed over c).
    Parameters: ``k M C + k C N`` instead of ``k^2 M N``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = False,
        mid_channels: int | None = None,
    ) -> None:
        super().__init__()
        who = "SpatialSeparableConv2d"
        mid = out_channels if mid_channels is None else mid_channels
        if not _is_int(mid) or mid < 1:
            raise ValueError(
                f"{who}: mid_channels must be an int >= 1 (or None for out_channels); got {mid!r}"
            )
        pad = _check_factorised(who, in_channels, out_channels, kernel_size, stride, padding)
        self.vertical, self.horizontal = _vertical_horizontal(
            in_channels, mid, out_channels, kernel_size, stride, pad, groups=1, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.horizontal(self.vertical(x))


class FlattenedConv2d(nn.Module):
    """Flattened convolution (Jin et al. 2015): lateral 1x1, vertical k x 1, horizontal 1 x k.

    Each output filter f of the equivalent 3D convolution is the rank-one tensor
    ``W_f[c, y, x] = lateral[f, c] * vertical[f, y] * horizontal[f, x]`` (the paper's
    fig. 1): ``lateral`` is a 1x1 conv ``in_channels -> out_channels``, ``vertical`` and
    ``horizontal`` are depthwise 1D convs on the ``out_channels`` maps.
    Parameters: ``M N + 2 k N`` instead of ``k^2 M N``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        who = "FlattenedConv2d"
        pad = _check_factorised(who, in_channels, out_channels, kernel_size, stride, padding)
        n = out_channels
        self.lateral = nn.Conv2d(in_channels, n, 1, bias=False)
        # one bias at the end: the layers are linear, so earlier biases would only add constants
        self.vertical, self.horizontal = _vertical_horizontal(
            n, n, n, kernel_size, stride, pad, groups=n, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.horizontal(self.vertical(self.lateral(x)))


class DepthwiseSeparableConv2d(nn.Module):
    """MobileNet's depthwise separable convolution (Howard et al. 2017, sec. 3.1, fig. 3).

    ``depthwise`` (k x k, one filter per input channel), then ``norm`` and ``act``
    (``None`` -> ``nn.Identity``; names or callables, resolved by ``get_norm_layer`` /
    ``get_act``), then ``pointwise`` (1x1, ``in_channels -> out_channels``). The stride
    and dilation belong to the depthwise conv. MobileNet puts a second norm and
    activation after the pointwise conv; that is the model's job, not this layer's.
    ``bias=True`` gives both convolutions a bias.

    Parameters: ``D_K D_K M + M N``; mult-adds: ``D_K D_K M D_F D_F + M N D_F D_F``,
    a fraction ``1/N + 1/D_K^2`` of a standard convolution's (the lecture's slide).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair | None = None,
        dilation: IntPair = 1,
        bias: bool = False,
        *,
        norm_layer: NormLayer | None = None,
        act_layer: ActLayer | None = None,
    ) -> None:
        super().__init__()
        _check_conv_args(
            "DepthwiseSeparableConv2d", in_channels, out_channels, kernel_size, stride, padding, dilation, 1
        )
        self.depthwise = DepthwiseConv2d(in_channels, kernel_size, stride, padding, dilation, bias=bias)
        self.norm = nn.Identity() if norm_layer is None else get_norm_layer(norm_layer)(in_channels)
        self.act = nn.Identity() if act_layer is None else get_act(act_layer)()
        self.pointwise = PointwiseConv2d(in_channels, out_channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.act(self.norm(self.depthwise(x))))
