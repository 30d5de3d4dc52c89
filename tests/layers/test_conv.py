"""Convolution variants against their definitions (lecture "Various Types of Convolutions").

References are written independently of the layers: explicit outer-product kernels fed to
``F.conv2d``, loops over groups and channels, inner products for the adjoint, the torch
docs' size formulas, and an empirical receptive field.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.layers.conv import (
    DepthwiseConv2d,
    DepthwiseSeparableConv2d,
    DilatedConv2d,
    FlattenedConv2d,
    GroupedConv2d,
    PointwiseConv2d,
    SpatialSeparableConv2d,
    TransposedConv2d,
    conv_output_size,
    same_padding,
    transposed_conv_output_size,
)


@pytest.fixture(autouse=True)
def _double() -> object:
    """Double precision, so that equalities hold to 1e-12 (restored after each test)."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64)


def _fill(module: nn.Module, seed: int = 0) -> None:
    g = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


# ----------------------------------------------------------------------------- size arithmetic


def test_conv_output_size_matches_torch() -> None:
    for n, k, s, p, d in itertools.product((5, 8, 13), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        if n + 2 * p < d * (k - 1) + 1:
            with pytest.raises(ValueError, match="smaller than the dilated kernel"):
                conv_output_size(n, k, s, p, d)
            continue
        y = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
        assert conv_output_size(n, k, s, p, d) == y.shape[-1], (n, k, s, p, d)


def test_same_padding_keeps_size_for_odd_kernels() -> None:
    for k, d in itertools.product((1, 3, 5, 7), (1, 2, 3)):
        pad = same_padding(k, d)
        assert conv_output_size(17, k, 1, pad[0], d) == 17
    assert same_padding((3, 5), (1, 2)) == (1, 4)


# ----------------------------------------------------------------------------- pointwise


def test_pointwise_is_a_matrix_product_at_every_pixel() -> None:
    conv = PointwiseConv2d(5, 7, bias=True)
    _fill(conv)
    x = _randn(2, 5, 4, 6, seed=1)
    w, b = conv.weight[:, :, 0, 0], conv.bias
    assert b is not None
    ref = torch.einsum("nm,bmhw->bnhw", w, x) + b[None, :, None, None]
    torch.testing.assert_close(conv(x), ref)
    assert sum(p.numel() for p in conv.parameters()) == 5 * 7 + 7
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)


def test_grouped_pointwise_parameter_count() -> None:
    conv = PointwiseConv2d(12, 24, groups=3)
    assert conv.weight.numel() == 12 // 3 * 24 and conv.bias is None


# ----------------------------------------------------------------------------- spatially separable


@pytest.mark.parametrize(
    ("u", "v", "full"),
    [
        # the lecture's two examples, with the full kernels as printed on the slide
        ([3.0, 4.0, 5.0], [1.0, 2.0, 3.0], [[3, 6, 9], [4, 8, 12], [5, 10, 15]]),
        ([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    ],
)
def test_spatial_separable_equals_full_conv_with_outer_product(
    u: list[float], v: list[float], full: list[list[int]]
) -> None:
    kernel = torch.tensor(full, dtype=torch.float64)
    torch.testing.assert_close(torch.outer(torch.tensor(u), torch.tensor(v)), kernel)  # the slide's identity
    for stride, padding in ((1, 1), (1, 0), (2, 1)):
        conv = SpatialSeparableConv2d(1, 1, 3, stride=stride, padding=padding)
        with torch.no_grad():
            conv.vertical.weight.copy_(torch.tensor(u).view(1, 1, 3, 1))
            conv.horizontal.weight.copy_(torch.tensor(v).view(1, 1, 1, 3))
        x = _randn(2, 1, 9, 11, seed=3)
        ref = F.conv2d(x, kernel.view(1, 1, 3, 3), stride=stride, padding=padding)
        torch.testing.assert_close(conv(x), ref)


def test_spatial_separable_with_channels_equals_summed_outer_products() -> None:
    m, c, n, k = 3, 4, 5, 5
    conv = SpatialSeparableConv2d(m, n, k, mid_channels=c)
    _fill(conv)
    u = conv.vertical.weight[:, :, :, 0]  # (c, m, k)
    v = conv.horizontal.weight[:, :, 0, :]  # (n, c, k)
    kernel = torch.einsum("cmy,ncx->nmyx", u, v)
    x = _randn(2, m, 10, 8, seed=1)
    torch.testing.assert_close(conv(x), F.conv2d(x, kernel, padding=k // 2))
    assert sum(p.numel() for p in conv.parameters()) == k * m * c + k * c * n


# ----------------------------------------------------------------------------- flattened


@pytest.mark.parametrize(("stride", "padding"), [(1, None), (2, 1), (1, 0)])
def test_flattened_equals_3d_conv_with_rank_one_filters(stride: int, padding: int | None) -> None:
    m, n, k = 4, 6, 3
    conv = FlattenedConv2d(m, n, k, stride=stride, padding=padding, bias=True)
    _fill(conv)
    lateral = conv.lateral.weight[:, :, 0, 0]  # (n, m)
    vertical = conv.vertical.weight[:, 0, :, 0]  # (n, k)
    horizontal = conv.horizontal.weight[:, 0, 0, :]  # (n, k)
    # Jin et al. 2015, fig. 1: W_f = lateral_f (x) vertical_f (x) horizontal_f
    kernel = torch.einsum("fc,fy,fx->fcyx", lateral, vertical, horizontal)
    x = _randn(2, m, 9, 7, seed=2)
    pad = k // 2 if padding is None else padding
    ref = F.conv2d(x, kernel, conv.horizontal.bias, stride=stride, padding=pad)
    torch.testing.assert_close(conv(x), ref)
    assert sum(p.numel() for p in conv.parameters()) == m * n + 2 * k * n + n


# ----------------------------------------------------------------------------- grouped and depthwise


def _grouped_loop_reference(x: torch.Tensor, w: torch.Tensor, groups: int, **kw: int) -> torch.Tensor:
    """Split the channels, convolve each group with its own filters, concatenate."""
    m, n = x.shape[1], w.shape[0]
    outs = []
    for g in range(groups):
        xg = x[:, g * m // groups : (g + 1) * m // groups]
        wg = w[g * n // groups : (g + 1) * n // groups]
        outs.append(F.conv2d(xg, wg, **kw))
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize(
    ("m", "n", "groups", "stride"), [(4, 6, 2, 1), (6, 6, 3, 2), (8, 4, 4, 1), (4, 4, 1, 1)]
)
def test_grouped_equals_loop_over_groups(m: int, n: int, groups: int, stride: int) -> None:
    conv = GroupedConv2d(m, n, 3, groups=groups, stride=stride)
    _fill(conv)
    x = _randn(2, m, 7, 7, seed=4)
    torch.testing.assert_close(
        conv(x), _grouped_loop_reference(x, conv.weight, groups, stride=stride, padding=1)
    )
    assert conv.weight.numel() == 9 * (m // groups) * n


def test_grouped_output_depends_only_on_own_group() -> None:
    conv = GroupedConv2d(4, 4, 3, groups=2)
    _fill(conv)
    x = _randn(1, 4, 5, 5)
    x2 = x.clone()
    x2[:, 2:] += 1.0  # change only group 1's inputs
    y, y2 = conv(x), conv(x2)
    torch.testing.assert_close(y[:, :2], y2[:, :2])
    assert not torch.allclose(y[:, 2:], y2[:, 2:])


@pytest.mark.parametrize(("multiplier", "stride", "dilation"), [(1, 1, 1), (2, 2, 1), (3, 1, 2)])
def test_depthwise_equals_per_channel_convs(multiplier: int, stride: int, dilation: int) -> None:
    c = 3
    conv = DepthwiseConv2d(c, 3, stride=stride, dilation=dilation, depth_multiplier=multiplier)
    _fill(conv)
    x = _randn(2, c, 9, 9, seed=5)
    outs = []
    for ch in range(c):  # output channel ch * multiplier + j sees input channel ch only
        for j in range(multiplier):
            w = conv.weight[ch * multiplier + j : ch * multiplier + j + 1]  # (1, 1, 3, 3)
            outs.append(F.conv2d(x[:, ch : ch + 1], w, stride=stride, padding=dilation, dilation=dilation))
    torch.testing.assert_close(conv(x), torch.cat(outs, dim=1))
    assert conv.weight.numel() == 9 * c * multiplier
    if stride == 1:
        assert conv(x).shape[-2:] == x.shape[-2:]  # padding=None keeps the size


def test_depthwise_separable_is_depthwise_then_pointwise() -> None:
    m, n = 4, 6
    conv = DepthwiseSeparableConv2d(m, n, 3, stride=2)
    _fill(conv)
    assert [name for name, _ in conv.named_children()] == ["depthwise", "norm", "act", "pointwise"]
    assert isinstance(conv.norm, nn.Identity) and isinstance(conv.act, nn.Identity)
    x = _randn(2, m, 8, 8, seed=6)
    dw = torch.cat(
        [F.conv2d(x[:, c : c + 1], conv.depthwise.weight[c : c + 1], stride=2, padding=1) for c in range(m)],
        1,
    )
    ref = torch.einsum("nm,bmhw->bnhw", conv.pointwise.weight[:, :, 0, 0], dw)
    torch.testing.assert_close(conv(x), ref)
    assert sum(p.numel() for p in conv.parameters()) == 9 * m + m * n  # D_K D_K M + M N


def test_depthwise_separable_norm_and_act_between_the_convs() -> None:
    conv = DepthwiseSeparableConv2d(4, 6, norm_layer="bn", act_layer="relu")
    assert isinstance(conv.norm, nn.BatchNorm2d) and conv.norm.num_features == 4
    assert isinstance(conv.act, nn.ReLU)
    conv2 = DepthwiseSeparableConv2d(4, 6, norm_layer=lambda c: nn.GroupNorm(2, c), act_layer=nn.SiLU)
    assert isinstance(conv2.norm, nn.GroupNorm) and isinstance(conv2.act, nn.SiLU)
    # order: depthwise -> norm -> act -> pointwise. In eval mode a fresh BatchNorm divides by
    # sqrt(1 + eps) (running mean 0, var 1); the ReLU must act on the depthwise output.
    _fill(conv.depthwise)
    _fill(conv.pointwise, seed=1)
    conv.eval()
    x = _randn(1, 4, 5, 5, seed=2)
    dw = F.conv2d(x, conv.depthwise.weight, padding=1, groups=4) / (1 + conv.norm.eps) ** 0.5
    ref = F.conv2d(F.relu(dw), conv.pointwise.weight)
    torch.testing.assert_close(conv(x), ref)
    with pytest.raises(ValueError, match="unknown norm"):
        DepthwiseSeparableConv2d(4, 6, norm_layer="batchy")


def test_depthwise_separable_bias_on_both_convs() -> None:
    conv = DepthwiseSeparableConv2d(4, 6, bias=True)
    assert conv.depthwise.bias is not None and conv.pointwise.bias is not None
    assert sum(p.numel() for p in conv.parameters()) == 9 * 4 + 4 * 6 + 4 + 6


# ----------------------------------------------------------------------------- dilated


def test_dilated_keeps_size_and_spreads_taps() -> None:
    for d in (1, 2, 3, 4):
        conv = DilatedConv2d(2, 3, 3, dilation=d)
        _fill(conv)
        x = _randn(1, 2, 16, 12)
        y = conv(x)
        assert y.shape == (1, 3, 16, 12)
        torch.testing.assert_close(y, F.conv2d(x, conv.weight, padding=d, dilation=d))


def test_stacked_dilated_receptive_fields_3_7_15() -> None:
    """The lecture's F_1, F_2, F_3: 3x3 convs with dilation 1, 2, 4 see 3, 7, 15 pixels."""
    layers: list[nn.Module] = []
    fields = []
    size = 41
    for d in (1, 2, 4):
        conv = DilatedConv2d(1, 1, 3, dilation=d)
        nn.init.ones_(conv.weight)  # all-positive weights: no cancellations hide a tap
        layers.append(conv)
        x = torch.zeros(1, 1, size, size, requires_grad=True)
        y = nn.Sequential(*layers)(x)
        y[0, 0, size // 2, size // 2].backward()
        assert x.grad is not None
        rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
        cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
        assert int(rows[-1] - rows[0]) + 1 == int(cols[-1] - cols[0]) + 1
        fields.append(int(rows[-1] - rows[0]) + 1)
    assert fields == [3, 7, 15]


# ----------------------------------------------------------------------------- transposed


def _torch_docs_transposed_size(h: int, k: int, s: int, p: int, op: int, d: int) -> int:
    # https://pytorch.org/docs/stable/generated/torch.nn.ConvTranspose2d.html, "Shape"
    return (h - 1) * s - 2 * p + d * (k - 1) + op + 1


CASES = [
    # (h, w, kernel, stride, padding, dilation)
    (7, 7, 3, 1, 0, 1),
    (7, 6, 3, 1, 1, 1),
    (8, 9, 3, 2, 1, 1),
    (9, 8, 4, 2, 1, 1),
    (10, 11, 3, 3, 2, 1),
    (11, 10, 3, 2, 2, 2),
    (12, 12, 2, 1, 0, 3),
    (13, 12, 5, 3, 0, 2),
]


@pytest.mark.parametrize(("h", "w", "k", "s", "p", "d"), CASES)
def test_transposed_is_adjoint_of_conv(h: int, w: int, k: int, s: int, p: int, d: int) -> None:
    m, n = 3, 4  # the conv maps m -> n channels, its transpose n -> m
    conv = nn.Conv2d(m, n, k, stride=s, padding=p, dilation=d, bias=False)
    _fill(conv)
    x = _randn(2, m, h, w, seed=7)
    y_shape = conv(x).shape
    # output_padding recovers the sizes the strided conv rounds down
    op = tuple((size + 2 * p - d * (k - 1) - 1) % s for size in (h, w))
    convt = TransposedConv2d(n, m, k, stride=s, padding=p, output_padding=op, dilation=d)  # type: ignore[arg-type]
    with torch.no_grad():
        convt.weight.copy_(conv.weight)  # the same tensor: (n, m, k, k) for both
    y = _randn(*y_shape, seed=8)
    lhs = (conv(x) * y).sum()
    rhs = (x * convt(y)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    assert convt(y).shape[-2:] == (h, w)
    hw = (y_shape[-2], y_shape[-1])
    expected = tuple(_torch_docs_transposed_size(hw[i], k, s, p, op[i], d) for i in range(2))
    assert convt.output_size(hw) == expected == (h, w)
    assert tuple(transposed_conv_output_size(hw[i], k, s, p, op[i], d) for i in range(2)) == expected


def test_transposed_output_size_formula_sweep() -> None:
    for n, k, s, p, d in itertools.product((1, 3, 6), (1, 2, 3, 4), (1, 2, 3), (0, 1), (1, 2)):
        for op in range(max(s, d)):
            expected = _torch_docs_transposed_size(n, k, s, p, op, d)
            if expected < 1:
                with pytest.raises(ValueError, match="too large"):
                    transposed_conv_output_size(n, k, s, p, op, d)
                continue
            assert transposed_conv_output_size(n, k, s, p, op, d) == expected
            y = F.conv_transpose2d(
                torch.zeros(1, 1, n, n),
                torch.zeros(1, 1, k, k),
                stride=s,
                padding=p,
                output_padding=op,
                dilation=d,
            )
            assert y.shape[-1] == expected


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: PointwiseConv2d(0, 4), "in_channels"),
        (lambda: PointwiseConv2d(4, 6, groups=4), "groups=4"),
        (lambda: DepthwiseConv2d(4, kernel_size=0), "kernel_size"),
        (lambda: DepthwiseConv2d(4, depth_multiplier=0), "depth_multiplier"),
        (lambda: GroupedConv2d(6, 8, groups=4), "groups=4"),
        (lambda: GroupedConv2d(6, 6, stride=0), "stride"),
        (lambda: GroupedConv2d(6, 6, padding=-1), "padding"),
        (lambda: DilatedConv2d(2, 2, kernel_size=2, dilation=1), "even"),
        (lambda: DilatedConv2d(2, 2, dilation=0), "dilation"),
        (lambda: TransposedConv2d(2, 2, 3, stride=2, output_padding=2), "output_padding"),
        (lambda: SpatialSeparableConv2d(2, 2, kernel_size=(3, 3)), "kernel_size"),  # type: ignore[arg-type]
        (lambda: SpatialSeparableConv2d(2, 2, mid_channels=0), "mid_channels"),
        (lambda: FlattenedConv2d(2, -3), "out_channels"),
        (lambda: DepthwiseSeparableConv2d(4, 6, kernel_size=3.0), "kernel_size"),  # type: ignore[arg-type]
        (lambda: DepthwiseSeparableConv2d(4, 6, act_layer="relux"), "unknown activation"),
        (lambda: conv_output_size(0, 3), "in_size"),
        (lambda: transposed_conv_output_size(4, 3, stride=1, output_padding=1), "output_padding"),
    ],
)
def test_constructor_validation(build: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()  # type: ignore[operator]


def test_all_single_kernel_layers_are_real_convs() -> None:
    for layer in (PointwiseConv2d(2, 2), DepthwiseConv2d(2), GroupedConv2d(2, 2), DilatedConv2d(2, 2)):
        assert type(layer).forward is nn.Conv2d.forward
    assert isinstance(TransposedConv2d(2, 2, 3), nn.ConvTranspose2d)
