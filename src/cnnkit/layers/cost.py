"""Parameters and mult-adds of the convolution variants (the lecture's "Depthwise Separable
Convolution" slides; Howard et al. 2017, "MobileNets", sec. 3.1, eqs. 1-5).

With M input channels, N output channels, a D_K x D_K kernel and a D_F x D_F output map:

================================  ===============================  =========================================
``kind``                          parameters (no bias)             mult-adds
================================  ===============================  =========================================
``"standard"``                    D_K D_K M N                      D_K D_K M N D_F D_F
``"grouped"`` (G groups)          D_K D_K (M/G) N                  D_K D_K (M/G) N D_F D_F
``"depthwise"`` (N = c M)         D_K D_K N                        D_K D_K N D_F D_F
``"depthwise_separable"``         D_K D_K M + M N                  D_K D_K M D_F D_F + M N D_F D_F
================================  ===============================  =========================================

The lecture's example (M = N = 128, D_K = 3, D_F = 64): a standard conv has 147,456
parameters and 603,979,776 mult-adds, a depthwise separable one 71,827,456 mult-adds, a
fraction 1/N + 1/D_K^2 of the standard cost. One mult-add is a multiplication and an
addition; FLOP counters that count both report twice these numbers. Biases add
parameters (N per convolution; M + N for the separable pair, as
:class:`cnnkit.layers.conv.DepthwiseSeparableConv2d` has) but no multiplications, so
they are left out of the mult-adds, as in the MobileNet paper.

``groups`` is implied by ``kind`` and may be left ``None``: 1 for standard and
separable, M for depthwise; ``"grouped"`` needs it. A value that contradicts ``kind``
raises. Kernel and output sizes are an int (square) or an (H, W) pair.
"""

from __future__ import annotations

__all__ = ["CONV_KINDS", "conv_mult_adds", "conv_params"]

CONV_KINDS: tuple[str, ...] = ("standard", "grouped", "depthwise", "depthwise_separable")

IntPair = int | tuple[int, int]


def _positive(v: object, name: str, who: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{who}: {name} must be an int >= 1; got {name}={v!r}")
    return v


def _area(v: IntPair, name: str, who: str) -> int:
    if isinstance(v, tuple):
        if len(v) != 2:
            raise ValueError(f"{who}: {name} must be an int or an (H, W) pair; got {v!r}")
        return _positive(v[0], name, who) * _positive(v[1], name, who)
    return _positive(v, name, who) ** 2


def _weights_per_output(m: int, n: int, groups: int | None, kind: str, who: str) -> int:
    """Input channels each output channel sees, M / G, after checking ``kind`` and ``groups``."""
    _positive(m, "in_channels", who)
    _positive(n, "out_channels", who)
    if kind not in CONV_KINDS:
        raise ValueError(f"{who}: unknown kind={kind!r}; choose from {', '.join(CONV_KINDS)}")
    if kind in ("standard", "depthwise_separable"):
        if groups not in (None, 1):
            raise ValueError(f"{who}: kind={kind!r} has groups=1; got groups={groups!r} (use kind='grouped')")
        return m
    if kind == "depthwise":
        if groups not in (None, m):
            raise ValueError(f"{who}: kind='depthwise' has groups=in_channels={m}; got groups={groups!r}")
        if n % m:
            raise ValueError(
                f"{who}: a depthwise conv needs out_channels a multiple of in_channels={m}; got out_channels={n}"
            )
        return 1
    if groups is None:
        raise ValueError(f"{who}: kind='grouped' needs groups=G")
    _positive(groups, "groups", who)
    if m % groups or n % groups:
        raise ValueError(f"{who}: groups={groups} must divide in_channels={m} and out_channels={n}")
    return m // groups


def conv_params(
    in_channels: int,
    out_channels: int,
    kernel_size: IntPair,
    *,
    groups: int | None = None,
    bias: bool = False,
    kind: str = "standard",
) -> int:
    """Number of parameters of a convolution of the given ``kind`` (see the module table).

    >>> conv_params(128, 128, 3)
    147456
    >>> conv_params(128, 128, 3, kind="depthwise_separable")
    17536
    """
    who = "conv_params"
    k2 = _area(kernel_size, "kernel_size", who)
    per_output = _weights_per_output(in_channels, out_channels, groups, kind, who)
    if kind == "depthwise_separable":
        return k2 * in_channels + in_channels * out_channels + (in_channels + out_channels if bias else 0)
    return k2 * per_output * out_channels + (out_channels if bias else 0)


def conv_mult_adds(
    in_channels: int,
    out_channels: int,
    kernel_size: IntPair,
    out_size: IntPair,
    *,
    groups: int | None = None,
    kind: str = "standard",
) -> int:
    """Multiply-accumulate operations of one forward pass of one image (see the module table).

    ``out_size`` is D_F, the spatial size of the output map (of both convs for
    ``"depthwise_separable"``, whose stride sits in the depthwise conv).

    >>> conv_mult_adds(128, 128, 3, 64)
    603979776
    >>> conv_mult_adds(128, 128, 3, 64, kind="depthwise_separable")
    71827456
    """
    who = "conv_mult_adds"
    k2 = _area(kernel_size, "kernel_size", who)
    f2 = _area(out_size, "out_size", who)
    per_output = _weights_per_output(in_channels, out_channels, groups, kind, who)
    if kind == "depthwise_separable":
        return k2 * in_channels * f2 + in_channels * out_channels * f2
    return k2 * per_output * out_channels * f2
