"""Receptive fields against the lecture, hand computations and brute force (autograd).

The brute-force field of a unit is the set of input pixels its gradient reaches when
all weights are positive: its extent is the field size and its centre, in pixel
coordinates (pixel i spans [i, i + 1)), is ``start + index * jump``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.analysis import build_on_meta, summarize
from cnnkit.analysis.rf import ReceptiveField, conv_rf, input_rf, merge, transposed_conv_rf


def _positive(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.1)
    return net.double().eval()


def brute_force_rf(net: nn.Module, channels: int, size: int, unit: tuple[int, int]) -> tuple[int, float]:
    """(extent along H, centre along H) of the input pixels that reach output unit ``unit``."""
    x = torch.ones(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    y = net(x)
    y[0, :, unit[0], unit[1]].sum().backward()
    rows = (x.grad[0].abs().sum(0).sum(1) > 0).nonzero().flatten()
    lo, hi = int(rows.min()), int(rows.max())
    return hi - lo + 1, (lo + hi + 1) / 2


def rf_after(net: nn.Module, channels: int, size: int) -> ReceptiveField:
    s = summarize(net, (channels, size, size))
    f = s.layers[-1].receptive_field if s.layers[-1].receptive_field is not None else None
    # the last row with a field (containers' own rows may come last)
    for r in reversed(s.layers):
        if r.receptive_field is not None:
            f = r.receptive_field
            break
    assert f is not None
    return f


def test_dilated_stack_grows_3_7_15() -> None:
    """Lecture slide "Receptive Fields": F1 = conv(l=1), F2 = dilated(l=2), F3 = dilated(l=4) -> 3, 7, 15."""
    stack = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1, dilation=1),
        nn.Conv2d(1, 1, 3, padding=2, dilation=2),
        nn.Conv2d(1, 1, 3, padding=4, dilation=4),
    )
    s = summarize(stack, (1, 32, 32))
    assert [r.receptive_field.size for r in s.layers] == [(3, 3), (7, 7), (15, 15)]
    assert all(r.receptive_field.jump == (1, 1) for r in s.layers)
    extent, _ = brute_force_rf(_positive(stack), 1, 33, (16, 16))
    assert extent == 15


BRUTE_NETS = {
    "conv_pool_stride": lambda: nn.Sequential(
        nn.Conv2d(2, 3, 5, stride=2, padding=2),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Conv2d(3, 2, 3, padding=1),
    ),
    "dilated_after_stride": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2), nn.Conv2d(2, 2, 3, dilation=3)
    ),
    "transposed": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ConvTranspose2d(2, 1, 4, stride=2, padding=1)
    ),
    "transposed_k3_s2": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ConvTranspose2d(2, 1, 3, stride=2)
    ),
    "no_padding_valid": lambda: nn.Sequential(
        nn.Conv2d(1, 1, 4, stride=3), nn.Conv2d(1, 1, 2, stride=1, padding="valid")
    ),
}


@pytest.mark.parametrize("name", list(BRUTE_NETS))
def test_field_size_and_centre_match_brute_force(name: str) -> None:
    net = _positive(BRUTE_NETS[name]())
    channels = net[0].in_channels
    size = 41
    f = rf_after(net, channels, size)
    out_h = net(torch.zeros(1, channels, size, size, dtype=torch.float64)).shape[-1]
    # the widest field over a few neighbouring units (transposed convs differ by position)
    extents, ok_centres = [], []
    for u in range(out_h // 2 - 2, out_h // 2 + 2):
        extent, centre = brute_force_rf(net, channels, size, (u, u))
        extents.append(extent)
        if extent == f.size[0]:
            ok_centres.append(abs(centre - (f.start[0] + u * f.jump[0])) < 1e-9)
    assert max(extents) == f.size[0]
    if "transposed" not in name:
        assert all(ok_centres) and ok_centres


def test_transposed_rule_k_equals_stride_adds_nothing() -> None:
    f = transposed_conv_rf(ReceptiveField((5.0,), (4.0,), (2.5,)), [2], [2], [0], [1])
    assert f.size == (5.0,) and f.jump == (2.0,)


def test_vgg16_field_per_layer_and_212_at_pool5() -> None:
    """Hand computation: 3x3/1 convs add 2 x jump; 2x2/2 pools add 1 x jump and double it.

    stage 1 (jump 1): 3, 5, pool 6; stage 2 (jump 2): 10, 14, pool 16; stage 3 (jump 4):
    24, 32, 40, pool 44; stage 4 (jump 8): 60, 76, 92, pool 100; stage 5 (jump 16): 132,
    164, 196, pool 212 (jump 32).
    """
    import torchvision

    s = summarize(build_on_meta(torchvision.models.vgg16))
    fields = [int(r.receptive_field.size[0]) for r in s.layers if r.type in ("Conv2d", "MaxPool2d")]
    assert fields == [3, 5, 6, 10, 14, 16, 24, 32, 40, 44, 60, 76, 92, 100, 132, 164, 196, 212]
    pool5 = next(r for r in s.layers if r.name == "features.30")
    assert pool5.receptive_field.size == (212, 212) and pool5.receptive_field.jump == (32, 32)
    assert s.final_receptive_field.size == (212, 212)


def test_resnet50_last_conv_layer_field_427() -> None:
    """Hand computation for torchvision's ResNet-50 (v1.5: the stride is on the 3x3 conv).

    conv1 7x7/2: r = 7, j = 2. maxpool 3x3/2: r = 7 + 2*2 = 11, j = 4. layer1, 3 blocks with
    one 3x3/1 each: r = 11 + 3 * 2*4 = 35. layer2: first 3x3/2 adds 2*4 -> 43, j = 8; 3 more
    blocks add 3 * 2*8 -> 91. layer3: 3x3/2 adds 2*8 -> 107, j = 16; 5 more add 5 * 2*16 -> 267.
    layer4: 3x3/2 adds 2*16 -> 299, j = 32; 2 more add 2 * 2*32 -> 427 (1x1 convs add nothing,
    and the identity/downsample branch is always smaller, so the residual merge keeps the main path).
    """
    import torchvision

    s = summarize(build_on_meta(torchvision.models.resnet50))
    last_conv = [r for r in s.layers if r.type == "Conv2d" and r.name.startswith("layer4.2.")][-1]
    assert last_conv.receptive_field.size == (427, 427)
    assert last_conv.receptive_field.jump == (32, 32)
    assert s.final_receptive_field.size == (427, 427)
    downsample = next(r for r in s.layers if r.name == "layer4.0.downsample.0")
    assert downsample.receptive_field.size[0] < 427


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))
        self.skip = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class _Inception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(2, 2, 1)
        self.b3 = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 3, padding=1))
        self.b5 = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 5, padding=2))
        self.pool = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), nn.Conv2d(2, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], 1)


@pytest.mark.parametrize(("cls", "expected"), [(_Residual, 5), (_Inception, 5)])
def test_branches_merge_to_the_largest_field(cls: type[nn.Module], expected: int) -> None:
    net = cls()
    s = summarize(net, (2, 21, 21))
    merged = [r for r in s.layers if r.own_ops][-1]  # the module's own add / cat
    assert merged.name == "(root)"
    assert merged.receptive_field.size == (expected, expected)
    extent, _ = brute_force_rf(_positive(net), 2, 21, (10, 10))
    assert extent == expected


def test_merge_keeps_spatial_path_and_flags_global_context() -> None:
    local = ReceptiveField((7.0, 7.0), (2.0, 2.0), (0.5, 0.5))
    gate = ReceptiveField((100.0, 100.0), None, (50.0, 50.0))
    m = merge([local, gate])
    assert m.size == (7.0, 7.0) and m.jump == (2.0, 2.0) and m.global_context
    assert merge([local, ReceptiveField((9.0, 9.0), (2.0, 2.0), (0.5, 0.5))]).size == (9.0, 9.0)


def test_conv_rule_is_the_lecture_formula() -> None:
    f = conv_rf(input_rf(1), [3], [2], [1], [2])  # k_eff = 5
    assert f.size == (5.0,) and f.jump == (2.0,) and f.start == (0.5 + (2 - 1) * 1,)
