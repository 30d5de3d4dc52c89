"""Parameter and mult-add formulas against the lecture's worked example and against what
the real modules hold and execute (torch's own FLOP counter, which counts 2 FLOPs per
mult-add for convolutions)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.layers.conv import DepthwiseConv2d, DepthwiseSeparableConv2d, GroupedConv2d
from cnnkit.layers.cost import CONV_KINDS, conv_mult_adds, conv_params

# the lecture's slide: M = N = 128 channels, D_K = 3, D_F = 64
M, N, DK, DF = 128, 128, 3, 64


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _executed_mult_adds(module: nn.Module, x: torch.Tensor) -> int:
    """Mult-adds torch actually runs for one image, from its FLOP counter (FLOPs / 2)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    flops = counter.get_total_flops()
    assert flops % (2 * x.shape[0]) == 0
    return flops // 2 // x.shape[0]


def test_lecture_example_from_the_formulas() -> None:
    assert conv_params(M, N, DK) == DK * DK * M * N == 147_456
    assert conv_mult_adds(M, N, DK, DF) == 603_979_776
    separable = conv_mult_adds(M, N, DK, DF, kind="depthwise_separable")
    assert separable == 71_827_456
    ratio = Fraction(separable, conv_mult_adds(M, N, DK, DF))
    assert ratio == Fraction(1, N) + Fraction(1, DK**2)  # exactly, as on the slide


def test_lecture_example_counted_on_the_real_modules() -> None:
    x = torch.randn(1, M, DF, DF)  # padding 1 keeps D_F = 64
    standard = nn.Conv2d(M, N, DK, padding=1, bias=False)
    separable = DepthwiseSeparableConv2d(M, N, DK)
    assert _n_params(standard) == 147_456 == conv_params(M, N, DK)
    assert _n_params(separable) == DK * DK * M + M * N == conv_params(M, N, DK, kind="depthwise_separable")
    assert _executed_mult_adds(standard, x) == 603_979_776
    assert _executed_mult_adds(separable, x) == 71_827_456


@pytest.mark.parametrize(
    ("m", "n", "k", "stride", "kind", "groups"),
    [
        (8, 12, 3, 1, "standard", None),
        (8, 12, 5, 2, "standard", 1),
        (8, 12, 3, 1, "grouped", 4),
        (6, 9, 3, 2, "grouped", 3),
        (8, 8, 3, 1, "depthwise", None),
        (4, 12, 5, 2, "depthwise", 4),
        (8, 12, 3, 1, "depthwise_separable", None),
        (6, 10, 5, 2, "depthwise_separable", None),
    ],
)
@pytest.mark.parametrize("bias", [False, True])
def test_formulas_match_modules(
    m: int, n: int, k: int, stride: int, kind: str, groups: int | None, bias: bool
) -> None:
    module: nn.Module
    if kind == "standard":
        module = nn.Conv2d(m, n, k, stride=stride, padding=k // 2, bias=bias)
    elif kind == "grouped":
        module = GroupedConv2d(m, n, k, groups=groups or 1, stride=stride, bias=bias)
    elif kind == "depthwise":
        module = DepthwiseConv2d(m, k, stride=stride, bias=bias, depth_multiplier=n // m)
    else:
        module = DepthwiseSeparableConv2d(m, n, k, stride=stride, bias=bias)
    x = torch.randn(2, m, 11, 11)
    out_size = module(x).shape[-1]
    assert conv_params(m, n, k, groups=groups, bias=bias, kind=kind) == _n_params(module)
    assert conv_mult_adds(m, n, k, out_size, groups=groups, kind=kind) == _executed_mult_adds(module, x)


def test_rectangular_sizes() -> None:
    conv = nn.Conv2d(3, 5, (3, 5), padding=(1, 2), bias=False)
    x = torch.randn(1, 3, 7, 9)
    assert conv_params(3, 5, (3, 5)) == _n_params(conv)
    assert conv_mult_adds(3, 5, (3, 5), (7, 9)) == _executed_mult_adds(conv, x)


def test_grouped_saves_a_factor_of_groups() -> None:
    for g in (1, 2, 4, 8):
        assert conv_params(64, 64, 3, groups=g, kind="grouped") * g == conv_params(64, 64, 3)
    assert conv_params(64, 64, 3, kind="depthwise") == conv_params(64, 64, 3, groups=64, kind="grouped")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: conv_params(8, 8, 3, kind="dilated"), "unknown kind"),
        (lambda: conv_params(8, 8, 3, groups=2), "kind='grouped'"),
        (lambda: conv_params(8, 8, 3, kind="grouped"), "needs groups"),
        (lambda: conv_params(8, 12, 3, groups=8, kind="grouped"), "must divide"),
        (lambda: conv_params(8, 12, 3, kind="depthwise"), "multiple of in_channels"),
        (lambda: conv_params(8, 8, 3, groups=2, kind="depthwise"), "groups=in_channels"),
        (lambda: conv_params(0, 8, 3), "in_channels"),
        (lambda: conv_mult_adds(8, 8, 3, 0), "out_size"),
        (lambda: conv_mult_adds(8, 8, (3, 3, 3), 4), "kernel_size"),  # type: ignore[arg-type]
    ],
)
def test_validation(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
    assert set(CONV_KINDS) == {"standard", "grouped", "depthwise", "depthwise_separable"}
