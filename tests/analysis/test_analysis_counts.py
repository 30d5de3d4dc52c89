"""Mult-adds against brute-force counts of the multiplications reference implementations do.

The references compute the layer with explicit loops over groups and kernel taps
(``unfold`` for convolutions, scatter-and-add for transposed convolutions), count
every scalar multiplication they perform, and are first checked to give PyTorch's
own output, so the count is the count of a correct implementation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.analysis import summarize
from cnnkit.analysis.op_math import einsum_mult_adds


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


def conv2d_unfold_reference(
    x: torch.Tensor, w: torch.Tensor, stride: int, padding: int, dilation: int, groups: int
) -> tuple[torch.Tensor, int]:
    """im2col (``unfold``) then one matrix product per group; returns (output, multiplications)."""
    n, _, h, wd = x.shape
    c_out, c_in_g, kh, kw = w.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # N, C_in*kh*kw, L
    per = c_in_g * kh * kw
    outs, mults = [], 0
    c_out_g = c_out // groups
    for g in range(groups):
        cg = cols[:, g * per : (g + 1) * per]  # N, per, L
        wg = w[g * c_out_g : (g + 1) * c_out_g].reshape(c_out_g, per)
        outs.append(torch.einsum("op,npl->nol", wg, cg))
        mults += n * c_out_g * per * cg.shape[-1]  # one product per (n, o, p, l)
    h_out = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    w_out = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    return torch.cat(outs, 1).reshape(n, c_out, h_out, w_out), mults


def conv_transpose2d_scatter_reference(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    output_padding: int,
) -> tuple[torch.Tensor, int]:
    """Each input pixel times each kernel tap, added into the (uncropped) output; then crop the padding."""
    n, c_in, h, wd = x.shape
    _, c_out_g, kh, kw = w.shape
    c_in_g = c_in // groups
    full_h = (h - 1) * stride + dilation * (kh - 1) + 1 + output_padding
    full_w = (wd - 1) * stride + dilation * (kw - 1) + 1 + output_padding
    full = x.new_zeros(n, c_out_g * groups, full_h, full_w)
    mults = 0
    for g in range(groups):
        xg = x[:, g * c_in_g : (g + 1) * c_in_g]
        for i in range(kh):
            for j in range(kw):
                wg = w[g * c_in_g : (g + 1) * c_in_g, :, i, j]  # C_in_g, C_out_g
                contrib = torch.einsum("nchw,co->nohw", xg, wg)
                mults += n * h * wd * c_in_g * c_out_g
                rows = slice(i * dilation, i * dilation + (h - 1) * stride + 1, stride)
                cols = slice(j * dilation, j * dilation + (wd - 1) * stride + 1, stride)
                full[:, g * c_out_g : (g + 1) * c_out_g, rows, cols] += contrib
    h_out = (h - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1
    w_out = (wd - 1) * stride - 2 * padding + dilation * (kw - 1) + output_padding + 1
    return full[:, :, padding : padding + h_out, padding : padding + w_out], mults


CONV_CASES = [
    # (name, c_in, c_out, k, stride, padding, dilation, groups, size)
    ("ordinary", 3, 8, 3, 1, 1, 1, 1, 9),
    ("strided", 4, 6, 5, 2, 2, 1, 1, 11),
    ("grouped", 8, 12, 3, 1, 1, 1, 4, 7),
    ("depthwise", 6, 6, 3, 2, 1, 1, 6, 10),
    ("depthwise_multiplier", 4, 8, 3, 1, 0, 1, 4, 8),
    ("dilated", 3, 5, 3, 1, 2, 2, 1, 12),
    ("dilated_grouped_strided", 6, 9, 3, 2, 3, 3, 3, 15),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_mult_adds_equal_unfold_reference(case: tuple) -> None:
    _, c_in, c_out, k, s, p, d, g, size = case
    conv = nn.Conv2d(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=g).double()
    x = torch.randn(2, c_in, size, size + 1, dtype=torch.float64)
    ref, mults = conv2d_unfold_reference(x, conv.weight, s, p, d, g)
    torch.testing.assert_close(ref + conv.bias.view(1, -1, 1, 1), conv(x))  # the reference is right
    summary = summarize(conv, (c_in, size, size + 1), batch_size=2, dtype=torch.float64)
    assert summary.total_mult_adds * 2 == mults  # per image, batch of 2
    assert summary.layers[0].output_shape == tuple(ref.shape)


TRANSPOSED_CASES = [
    # (name, c_in, c_out, k, stride, padding, dilation, groups, output_padding, size)
    ("stride2_k4_p1", 4, 3, 4, 2, 1, 1, 1, 0, 5),
    ("stride3_k3", 2, 5, 3, 3, 0, 1, 1, 0, 4),
    ("stride2_outpad", 3, 4, 3, 2, 1, 1, 1, 1, 6),
    ("grouped", 6, 4, 3, 2, 1, 1, 2, 0, 5),
    ("depthwise", 5, 5, 3, 2, 1, 1, 5, 1, 4),
    ("dilated", 3, 2, 3, 2, 2, 2, 1, 0, 5),
]


@pytest.mark.parametrize("case", TRANSPOSED_CASES, ids=[c[0] for c in TRANSPOSED_CASES])
def test_transposed_conv_counted_from_input_size(case: tuple) -> None:
    _, c_in, c_out, k, s, p, d, g, op, size = case
    deconv = nn.ConvTranspose2d(
        c_in, c_out, k, stride=s, padding=p, dilation=d, groups=g, output_padding=op
    ).double()
    x = torch.randn(2, c_in, size, size, dtype=torch.float64)
    ref, mults = conv_transpose2d_scatter_reference(x, deconv.weight, s, p, d, g, op)
    torch.testing.assert_close(ref + deconv.bias.view(1, -1, 1, 1), deconv(x))
    summary = summarize(deconv, (c_in, size, size), batch_size=2, dtype=torch.float64)
    assert summary.total_mult_adds * 2 == mults
    # counting it like a convolution from the output size would give stride^2 times too many
    out_h, out_w = ref.shape[-2:]
    from_output = out_h * out_w * c_in * (c_out // g) * k * k
    if s > 1:
        assert summary.total_mult_adds != from_output


def test_linear_matmul_and_attention_counts() -> None:
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(16, 48)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).reshape(x.shape[0], x.shape[1], 3, 2, 8).permute(2, 0, 3, 1, 4)
            scores = (q @ k.transpose(-2, -1)).softmax(-1)  # (N, heads, L, L)
            a = torch.einsum("nhls,nhsd->nhld", scores, v)
            b = F.scaled_dot_product_attention(q, k, v)
            return a + b

    n, length = 2, 10
    summary = summarize(Attention(), (length, 16), batch_size=n)
    linear = length * 16 * 48  # per token: in x out
    qk = 2 * length * length * 8  # heads x L x S x head_dim
    av = 2 * length * length * 8
    sdpa = qk + av
    assert summary.total_mult_adds == linear + qk + av + sdpa


def test_einsum_rule_matches_pairwise_products() -> None:
    assert einsum_mult_adds("ij,jk->ik", [(3, 4), (4, 5)]) == 3 * 4 * 5
    assert einsum_mult_adds("bij,bjk", [(2, 3, 4), (2, 4, 5)]) == 2 * 3 * 4 * 5
    assert einsum_mult_adds("...ij,...jk->...ik", [(7, 3, 4), (7, 4, 5)]) == 7 * 3 * 4 * 5
    # left to right: (2x3 @ 3x4) then (2x4 @ 4x5)
    assert einsum_mult_adds("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]) == 2 * 3 * 4 + 2 * 4 * 5
    assert einsum_mult_adds("ii->i", [(4, 4)]) == 0


def test_norms_activations_and_pooling_count_zero_but_are_known() -> None:
    net = nn.Sequential(
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AvgPool2d(2),
        nn.GELU(),
        nn.GroupNorm(1, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.LayerNorm(3),
        nn.Softmax(-1),
    )
    s = summarize(net, (3, 16, 16))
    assert s.total_mult_adds == 0
    assert s.unknown_layers == []
    assert [r.output_shape for r in s.layers][-1] == (1, 3)


@pytest.mark.parametrize(
    ("x", "w", "out", "transposed"),
    [
        ((2, 8, 9, 10), (12, 2, 3, 3), (2, 12, 9, 10), False),  # grouped (groups = 4)
        ((1, 6, 5, 5), (6, 1, 3, 3), (1, 6, 3, 3), False),  # depthwise, strided
        ((2, 4, 5, 6), (4, 3, 4, 4), (2, 3, 10, 12), True),  # transposed, stride 2
        ((1, 3, 4, 4, 4), (5, 3, 3, 3, 3), (1, 5, 2, 2, 2), False),  # 3-d
    ],
)
def test_conv_formula_is_flop_counters(x: tuple, w: tuple, out: tuple, transposed: bool) -> None:
    """The formula is torch.utils.flop_counter's (halved), written out so as not to import it."""
    from torch.utils.flop_counter import conv_flop_count

    from cnnkit.analysis.op_math import conv_shape_mult_adds

    assert 2 * conv_shape_mult_adds(x, w, out, transposed) == conv_flop_count(
        list(x), list(w), list(out), transposed
    )


def test_attention_and_matmul_formulas_are_flop_counters() -> None:
    from torch.utils.flop_counter import bmm_flop, mm_flop, sdpa_flop_count

    from cnnkit.analysis.op_math import matmul_shape, sdpa_mult_adds

    assert 2 * sdpa_mult_adds((2, 4, 7, 16), (2, 4, 9, 16), (2, 4, 9, 8)) == sdpa_flop_count(
        (2, 4, 7, 16), (2, 4, 9, 16), (2, 4, 9, 8)
    )
    assert 2 * sdpa_mult_adds((2, 8, 7, 16), (2, 2, 9, 16), (2, 2, 9, 16)) == sdpa_flop_count(
        (2, 8, 7, 16), (2, 2, 9, 16), (2, 2, 9, 16)
    )
    assert 2 * matmul_shape((5, 3, 4), (5, 4, 6))[1] == bmm_flop((5, 3, 4), (5, 4, 6))
    assert 2 * matmul_shape((3, 4), (4, 6))[1] == mm_flop((3, 4), (4, 6))
    assert matmul_shape((2, 1, 3, 4), (5, 4, 6)) == ((2, 5, 3, 6), 2 * 5 * 3 * 4 * 6)  # broadcast batch
    assert matmul_shape((4,), (4, 6)) == ((6,), 24) and matmul_shape((3, 4), (4,)) == ((3,), 12)
