"""Receptive-field arithmetic (lecture slides "Dilated Convolution" and "Receptive Fields").

A receptive field is described per spatial axis by three numbers, after Dumoulin &
Visin 2016 ("A guide to convolution arithmetic for deep learning") and Araujo, Norris
& Sim 2019 ("Computing receptive fields of convolutional neural networks", Distill):

* ``size``  r: how many input pixels one output unit sees;
* ``jump``  j: the distance, in input pixels, between two adjacent output units
  (the product of the strides so far);
* ``start`` s: the centre of the first output unit's field, in input pixel
  coordinates (pixel ``i`` spans ``[i, i + 1)``, so the input itself starts at 0.5).

A convolution or pooling with kernel k, stride t, padding p and dilation d maps
(r, j, s) to ``k_eff = d (k - 1) + 1``, ``r' = r + (k_eff - 1) j``, ``j' = j t`` and
``s' = s + ((k_eff - 1) / 2 - p) j``: the lecture's dilated stack (3x3 kernels with
dilation 1, 2, 4) grows 3, 7, 15.

Where branches merge (residual addition, Inception concatenation) the output sees
the union of what its inputs see; :func:`merge` keeps the largest field. When the
spatial layout ends (flatten, global pooling to a vector) :func:`collapse` returns
the union over all positions and ``jump`` becomes ``None``.

Fields are reported along the *spatial path*: a branch without a spatial layout
that gates or is added to a feature map (a squeeze-and-excitation gate, a global
context vector) makes every unit depend on the whole input, but does not change
the local field. Such a merge keeps the spatial field and sets ``global_context``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "ReceptiveField",
    "adaptive_pool_rf",
    "collapse",
    "conv_rf",
    "input_rf",
    "merge",
    "pad_rf",
    "resample_rf",
    "transposed_conv_rf",
]


def _num(x: float) -> int | float:
    """An int where the value is integral (JSON and tables read better), else the float."""
    return int(x) if float(x).is_integer() else float(x)


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a tensor's units, one entry per spatial axis (H, W for images).

    ``size`` and ``start`` are in input pixels; ``jump`` is ``None`` once the spatial
    layout has ended (after a flatten), when every unit sees the same region.
    """

    size: tuple[float, ...]
    jump: tuple[float, ...] | None
    start: tuple[float, ...]
    global_context: bool = False  # a layout-free branch (SE gate, attention) also reaches these units

    @property
    def spatial(self) -> bool:
        """True while the tensor still has a spatial layout (units at ``jump`` pixels apart)."""
        return self.jump is not None

    @property
    def max_size(self) -> float:
        """The largest size over the axes (the field of a square input for square nets)."""
        return max(self.size) if self.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": [_num(v) for v in self.size],
            "jump": None if self.jump is None else [_num(v) for v in self.jump],
            "start": [_num(v) for v in self.start],
            "global_context": self.global_context,
        }

    def __str__(self) -> str:
        def fmt(v: Sequence[float]) -> str:
            vals = [_num(x) for x in v]
            parts = [f"{x:g}" if isinstance(x, float) else str(x) for x in vals]
            return parts[0] if len(set(parts)) == 1 else "x".join(parts)

        jump = "-" if self.jump is None else fmt(self.jump)
        return f"{fmt(self.size)}{'*' if self.global_context else ''}/{jump}/{fmt(self.start)}"


def input_rf(ndim: int) -> ReceptiveField:
    """The field of the input pixels themselves: size 1, jump 1, start 0.5 on each of ``ndim`` axes."""
    return ReceptiveField((1.0,) * ndim, (1.0,) * ndim, (0.5,) * ndim)


def _jumps(rf: ReceptiveField) -> tuple[float, ...]:
    # A field without a spatial layout is treated as unit jumps by layers that still slide over
    # something (e.g. a 1x1 conv on an SE vector): they add nothing for k = 1.
    return rf.jump if rf.jump is not None else (1.0,) * len(rf.size)


def _per_axis(rf: ReceptiveField, step: Callable[[int, float], tuple[float, float, float]]) -> ReceptiveField:
    """The field after a layer whose ``step(axis, jump_in)`` gives that axis's (size, jump, start).
    A field without a spatial layout keeps its start and stays without: nothing to slide over, the
    union stays the union."""
    j = _jumps(rf)
    axes = [step(ax, j[ax]) for ax in range(len(rf.size))]
    size = tuple(a[0] for a in axes)
    if rf.jump is None:
        return ReceptiveField(size, None, rf.start, rf.global_context)
    return ReceptiveField(size, tuple(a[1] for a in axes), tuple(a[2] for a in axes), rf.global_context)


def conv_rf(
    rf: ReceptiveField,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> ReceptiveField:
    """Field after a convolution or pooling window (per axis: kernel, stride, left padding, dilation)."""

    def step(ax: int, j: float) -> tuple[float, float, float]:
        k_eff = dilation[ax] * (kernel[ax] - 1) + 1
        return (
            rf.size[ax] + (k_eff - 1) * j,
            j * stride[ax],
            rf.start[ax] + ((k_eff - 1) / 2 - padding[ax]) * j,
        )

    return _per_axis(rf, step)


def transposed_conv_rf(
    rf: ReceptiveField,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> ReceptiveField:
    """Field after a transposed convolution (exact, the largest over output positions).

    Output ``o`` receives input ``i`` through kernel tap ``m`` when
    ``o = i * stride - padding + m * dilation``. For each residue of ``o + padding``
    modulo the stride, the taps that reach it span ``(m_max - m_min) * dilation / stride``
    input units; the field adds the widest span times the input jump. The output
    units are ``jump / stride`` apart.
    """

    def step(ax: int, j: float) -> tuple[float, float, float]:
        k, s, p, d = kernel[ax], stride[ax], padding[ax], dilation[ax]
        spans = []
        for rho in range(s):
            taps = [m for m in range(k) if (rho - m * d) % s == 0]
            if taps:
                spans.append((max(taps) - min(taps)) * d / s)
        taps0 = [m for m in range(k) if (p - m * d) % s == 0]
        # output 0 sees inputs (p - m d) / s for these taps: their mean is the centre (with no
        # tap, output 0 gets only the bias: use the continuous position)
        centre = (p - (max(taps0) + min(taps0)) * d / 2) / s if taps0 else (p - d * (k - 1) / 2) / s
        return rf.size[ax] + max(spans, default=0.0) * j, j / s, rf.start[ax] + centre * j

    return _per_axis(rf, step)


def adaptive_pool_rf(rf: ReceptiveField, in_size: Sequence[int], out_size: Sequence[int]) -> ReceptiveField:
    """Field after adaptive pooling: bin ``i`` covers ``[floor(i L / n), ceil((i + 1) L / n))``."""

    def step(ax: int, j: float) -> tuple[float, float, float]:
        L, n = in_size[ax], out_size[ax]
        widest = max(math.ceil((i + 1) * L / n) - (i * L) // n for i in range(n)) if n > 0 else 1
        first = math.ceil(L / n) if n > 0 else 1
        return rf.size[ax] + (widest - 1) * j, j * L / n if n > 0 else j, rf.start[ax] + (first - 1) / 2 * j

    return _per_axis(rf, step)


def resample_rf(
    rf: ReceptiveField, in_size: Sequence[int], out_size: Sequence[int], taps: int
) -> ReceptiveField:
    """Field after interpolation from ``in_size`` to ``out_size`` with ``taps`` input pixels per output
    (1 for nearest, 2 for (bi/tri)linear, 4 for bicubic): units get ``in / out`` times closer."""
    j = _jumps(rf)
    size = tuple(rf.size[ax] + (taps - 1) * j[ax] for ax in range(len(rf.size)))
    if rf.jump is None:
        return ReceptiveField(size, None, rf.start, rf.global_context)
    jump = tuple(j[ax] * in_size[ax] / out_size[ax] for ax in range(len(rf.size)))
    start = tuple(rf.start[ax] + (taps - 1) / 2 * j[ax] for ax in range(len(rf.size)))
    return ReceptiveField(size, jump, start, rf.global_context)


def pad_rf(rf: ReceptiveField, left: Sequence[int]) -> ReceptiveField:
    """Field after padding ``left[ax]`` pixels before each axis: the first unit moves out by that much."""
    if rf.jump is None:
        return rf
    start = tuple(rf.start[ax] - left[ax] * rf.jump[ax] for ax in range(len(rf.size)))
    return ReceptiveField(rf.size, rf.jump, start, rf.global_context)


def collapse(rf: ReceptiveField, extent: Sequence[int]) -> ReceptiveField:
    """The union of the fields of all ``extent`` positions: what a unit sees once the layout ends."""
    if rf.jump is None:
        return rf
    size = tuple(rf.size[ax] + (extent[ax] - 1) * rf.jump[ax] for ax in range(len(rf.size)))
    start = tuple(rf.start[ax] + (extent[ax] - 1) * rf.jump[ax] / 2 for ax in range(len(rf.size)))
    return ReceptiveField(size, None, start, rf.global_context)


def merge(fields: Sequence[ReceptiveField], *, spatial: bool = True) -> ReceptiveField:
    """Where branches meet, the output sees what its largest input sees.

    For an output with a spatial layout the largest *spatial* field is kept (ties:
    the first); inputs without a layout (an SE gate) only set ``global_context``.
    For an output without a layout, the largest field is kept.
    """
    if not fields:
        raise ValueError("merge needs at least one receptive field")
    context = any(f.global_context for f in fields)
    if spatial:
        local = [f for f in fields if f.jump is not None]
        if local:
            best = max(local, key=lambda f: f.max_size)
            context = context or len(local) < len(fields)
            return best if best.global_context == context else replace(best, global_context=context)
    best = max(fields, key=lambda f: f.max_size)
    out = best if best.jump is None else ReceptiveField(best.size, None, best.start, best.global_context)
    return out if out.global_context == context else replace(out, global_context=context)
