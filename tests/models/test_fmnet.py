"""FMNet's options against their definitions: the mult-adds of a 3x3 convolution are
H_out x W_out x C_out x C_in x 9 (the lecture's formula), a 2x2 max-pool halves the map, and
a stride-2 convolution produces the same map size as convolution then pool at a quarter of
the mult-adds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.analysis import summarize
from cnnkit.models.fmnet import FMNet


def _conv_macs(h: int, c_out: int, c_in: int) -> int:
    return h * h * c_out * c_in * 9


def test_default_fmnet_mult_adds_follow_the_formula() -> None:
    net = FMNet()  # stem 16; widths 32/64/128 at 28, 14 -> 7 -> 3 after the pools
    convs = (
        _conv_macs(28, 16, 1)
        + _conv_macs(28, 32, 16) + _conv_macs(14, 32, 32)
        + _conv_macs(14, 64, 32) + _conv_macs(7, 64, 64)
        + _conv_macs(7, 128, 64) + _conv_macs(3, 128, 128)
    )  # fmt: skip
    assert summarize(net, (1, 28, 28)).total_mult_adds == convs + 128 * 10  # + the classifier


def test_strided_first_quarters_the_first_groups_conv_and_drops_its_pool() -> None:
    pooled, strided = FMNet(), FMNet(strided_first=True)
    g = strided.groups[0]
    assert g.conv1.stride == (2, 2) and isinstance(g.pool, nn.Identity)
    assert all(isinstance(grp.pool, nn.MaxPool2d) for grp in strided.groups[1:])
    x = torch.randn(2, 1, 28, 28)
    assert (
        strided.groups[0](strided.stem(x)).shape == pooled.groups[0](pooled.stem(x)).shape == (2, 32, 14, 14)
    )
    saved = summarize(pooled, (1, 28, 28)).total_mult_adds - summarize(strided, (1, 28, 28)).total_mult_adds
    assert saved == _conv_macs(28, 32, 16) - _conv_macs(14, 32, 16)


def test_stem_without_norm_is_conv_with_bias_then_act() -> None:
    net = FMNet(stem_norm=False, act_layer="relu")
    conv, norm, act = net.stem
    assert conv.bias is not None and isinstance(norm, nn.Identity) and isinstance(act, nn.ReLU)
    with_norm = FMNet()
    assert with_norm.stem[0].bias is None and isinstance(with_norm.stem[1], nn.BatchNorm2d)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_group_depth_three_adds_one_conv_per_group_and_a_residual() -> None:
    deep = FMNet(group_depth=3)
    extra = _conv_macs(14, 32, 32) + _conv_macs(7, 64, 64) + _conv_macs(3, 128, 128)
    assert (
        summarize(deep, (1, 28, 28)).total_mult_adds - summarize(FMNet(), (1, 28, 28)).total_mult_adds
        == extra
    )
    # the residual: with the third conv silenced, the group returns its first activation
    g = deep.groups[1].eval()
    nn.init.zeros_(g.conv3.weight)
    x = torch.randn(2, 32, 14, 14)
    first = g.act1(g.norm1(g.pool(g.conv1(x))))
    torch.testing.assert_close(g(x), first)  # a fresh norm maps zeros to zeros, act(0) = 0
    with pytest.raises(ValueError, match="2 or 3 convolutions"):
        FMNet(group_depth=4)
