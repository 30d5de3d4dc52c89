"""ShuffleNet v1 against Zhang et al. 2018 (table 1, fig. 2) and a functional reference of its unit.

Mult-adds are what torch's FLOP counter measures on the real modules (on the meta device):
FLOPs / 2 of the convolutions and of the classifier.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnkit
from cnnkit.layers.drop import DropPath
from cnnkit.models.shufflenet import ShuffleNetV1, ShuffleUnit, shufflenet_v1_g3, stage_widths

GROUPS = (1, 2, 3, 4, 8)
# paper table 1, ShuffleNet 1x: groups -> (stage 2, 3, 4 output channels, complexity in MFLOPs = mult-adds)
TABLE_1 = {
    1: ((144, 288, 576), 143),
    2: ((200, 400, 800), 140),
    3: ((240, 480, 960), 137),
    4: ((272, 544, 1088), 133),
    8: ((384, 768, 1536), 137),
}


def _mult_adds_by_op(model: nn.Module, size: int = 224) -> dict[str, int]:
    model = model.eval().to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, model.in_chans, size, size, device="meta"))  # type: ignore[arg-type]
    return {str(op): flops // 2 for op, flops in counter.get_flop_counts()["Global"].items()}


def _reference_channel_shuffle(x: torch.Tensor, g: int) -> torch.Tensor:
    c = x.shape[1]
    return torch.stack([x[:, i * (c // g) + j] for j in range(c // g) for i in range(g)], dim=1)


@pytest.mark.parametrize("groups", GROUPS)
def test_table_1_widths_and_complexity(groups: int) -> None:
    widths, paper_m = TABLE_1[groups]
    model = cnnkit.create_model(f"shufflenet_v1_g{groups}")
    assert isinstance(model, ShuffleNetV1)
    for stage, width in zip((model.stage2, model.stage3, model.stage4), widths, strict=True):
        unit = stage[-1]
        assert unit.bn3.num_features == width and unit.conv1.out_channels == width // 4  # bottleneck = out/4
    assert [len(s) for s in (model.stage2, model.stage3, model.stage4)] == [4, 8, 4]
    assert model.conv1[0].out_channels == 24 and model.fc.in_features == widths[-1]

    counts = _mult_adds_by_op(model)
    assert set(counts) == {"aten.convolution", "aten.addmm"}
    # the convolutions round to the paper's whole MFLOPs for every g (its table leaves out the fc) ...
    assert round(counts["aten.convolution"] / 1e6) == paper_m
    # ... and with the classifier the count stays within 1.2% (the fc adds 0.6-1.5M)
    assert sum(counts.values()) == pytest.approx(paper_m * 1e6, rel=0.012)


def test_half_width_complexity_and_the_authors_widths() -> None:
    # paper table 2: ShuffleNet 0.5x is a 38 MFLOPs net; within 3% for g = 3
    assert sum(_mult_adds_by_op(ShuffleNetV1(groups=3, width_mult=0.5)).values()) == pytest.approx(
        38e6, rel=0.03
    )
    # the authors' ShuffleNet-Series code: 0.5x widths (stem, stage 2, 3, 4)
    assert stage_widths(3, 0.5) == (12, 120, 240, 480)
    assert stage_widths(8, 0.5) == (16, 192, 384, 768)
    assert stage_widths(3, 2.0) == (48, 480, 960, 1920)
    for g in GROUPS:
        assert stage_widths(g) == (24, *TABLE_1[g][0])


def test_parameters_of_g3_match_openmmlab() -> None:
    # mmpretrain's ShuffleNet v1 1.0x (group=3): 1.87M parameters
    assert round(sum(p.numel() for p in shufflenet_v1_g3().parameters()) / 1e6, 2) == 1.87


@pytest.mark.parametrize("groups", GROUPS)
def test_grouping_follows_the_paper(groups: int) -> None:
    model = ShuffleNetV1(groups=groups, width_mult=0.25)
    units = [u for s in (model.stage2, model.stage3, model.stage4) for u in s]
    first = units[0]
    assert first.conv1.groups == 1  # "we do not apply group convolution on the first pointwise layer"
    assert all(u.conv1.groups == groups for u in units[1:])
    assert all(u.conv3.groups == groups for u in units)
    assert all(u.conv2.groups == u.conv2.in_channels and u.conv2.kernel_size == (3, 3) for u in units)
    assert [u.stride for u in units] == [2, 1, 1, 1, 2, *[1] * 7, 2, 1, 1, 1]
    shuffles = [u for u in units if not isinstance(u.shuffle, nn.Identity)]
    assert len(shuffles) == (0 if groups == 1 else 15)


def _unit_reference(unit: ShuffleUnit, x: torch.Tensor, groups: int) -> torch.Tensor:
    """Fig. 2b/2c written out with functional ops (eval-mode BN)."""

    def bn(m: nn.Module, t: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    s = unit.stride
    out = F.relu(bn(unit.bn1, F.conv2d(x, unit.conv1.weight, groups=unit.conv1.groups)))
    if unit.conv1.groups > 1:
        out = _reference_channel_shuffle(out, groups)
    mid = out.shape[1]
    out = bn(unit.bn2, F.conv2d(out, unit.conv2.weight, stride=s, padding=1, groups=mid))
    out = bn(unit.bn3, F.conv2d(out, unit.conv3.weight, groups=groups))
    if s == 2:
        return F.relu(torch.cat([F.avg_pool2d(x, 3, 2, 1), out], dim=1))
    return F.relu(x + out)


@pytest.mark.parametrize(("stride", "first_grouped"), [(1, True), (2, True), (2, False)])
def test_unit_matches_figure_2(stride: int, first_grouped: bool) -> None:
    g, cin, cout = 3, (24 if stride == 1 else 12), 24
    unit = ShuffleUnit(
        cin, cout, stride, g, first_grouped=first_grouped, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in unit.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        for m in unit.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    unit.eval()
    x = torch.randn(2, cin, 9, 9, generator=gen)
    y = unit(x)
    assert y.shape == (2, cout, 9 if stride == 1 else 5, 9 if stride == 1 else 5)
    torch.testing.assert_close(y, _unit_reference(unit, x, g))


@pytest.mark.parametrize("groups", [2, 3, 8])
def test_shuffle_off_changes_nothing_but_the_permutation(groups: int) -> None:
    on = ShuffleNetV1(groups=groups, width_mult=0.25, num_classes=10).eval()
    off = ShuffleNetV1(groups=groups, width_mult=0.25, num_classes=10, use_shuffle=False).eval()
    assert {k: v.shape for k, v in on.state_dict().items()} == {
        k: v.shape for k, v in off.state_dict().items()
    }
    off.load_state_dict(on.state_dict())
    # the input of the depthwise conv of a grouped unit: shuffled (on) vs not (off), from the same input
    seen: dict[str, torch.Tensor] = {}
    on.stage2[1].conv2.register_forward_pre_hook(lambda m, a: seen.__setitem__("on", a[0]))
    off.stage2[1].conv2.register_forward_pre_hook(lambda m, a: seen.__setitem__("off", a[0]))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y_on, y_off = on(x), off(x)
    torch.testing.assert_close(seen["on"], _reference_channel_shuffle(seen["off"], groups), rtol=0, atol=0)
    assert not torch.allclose(y_on, y_off, atol=1e-4)  # the shuffle matters downstream


def test_shuffle_with_one_group_is_the_identity() -> None:
    on = ShuffleNetV1(groups=1, width_mult=0.25).eval()
    off = ShuffleNetV1(groups=1, width_mult=0.25, use_shuffle=False).eval()
    off.load_state_dict(on.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(on(x), off(x), rtol=0, atol=0)


def test_drop_path_decays_linearly_over_residual_units() -> None:
    model = ShuffleNetV1(groups=3, width_mult=0.25, drop_path_rate=0.32)
    units = [u for s in (model.stage2, model.stage3, model.stage4) for u in s]
    rates = [u.drop_path.p if isinstance(u.drop_path, DropPath) else 0.0 for u in units]
    assert rates == pytest.approx(
        [0.0 if u.stride == 2 else 0.32 * (i + 1) / 16 for i, u in enumerate(units)]
    )
    plain = ShuffleNetV1(groups=3, width_mult=0.25).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), plain(x))  # identity at test time


@pytest.mark.parametrize("groups", GROUPS)
def test_small_input_28x28_forward_backward(groups: int) -> None:
    model = cnnkit.create_model(
        f"shufflenet_v1_g{groups}", num_classes=10, in_chans=1, small_input=True, width_mult=0.25
    )
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.forward_features(torch.randn(2, 1, 28, 28)).shape[-2:] == (4, 4)


def test_forward_shapes_and_min_input_size() -> None:
    model = ShuffleNetV1(groups=3, width_mult=0.5, num_classes=11).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 11)
        assert model.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 480, 7, 7)
        for small in (False, True):
            m = ShuffleNetV1(groups=8, width_mult=0.25, small_input=small).eval()
            assert m.min_input_size == 1
            assert m(torch.randn(1, 3, 1, 1)).shape == (1, 1000)
            with pytest.raises(ValueError, match="at least 1x1"):
                m(torch.randn(1, 3, 0, 0))


def test_builders_and_validation() -> None:
    assert shufflenet_v1_g3(groups=3, width_mult=0.25).groups == 3
    with pytest.raises(ValueError, match="groups=3"):
        shufflenet_v1_g3(groups=8)
    with pytest.raises(ValueError, match="groups"):
        ShuffleNetV1(groups=5)
    with pytest.raises(ValueError, match="width_mult"):
        ShuffleNetV1(width_mult=-1.0)
    with pytest.raises(ValueError, match="drop_path_rate"):
        ShuffleNetV1(drop_path_rate=1.0)
    with pytest.raises(ValueError, match="multiple of 4"):
        ShuffleUnit(24, 30, 2, 3, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU)
    with pytest.raises(ValueError, match="must equal"):
        ShuffleUnit(24, 48, 1, 3, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU)
    model = ShuffleNetV1(groups=2, width_mult=0.25, norm_layer="gn", act_layer="silu", drop_rate=0.1)
    assert not any(isinstance(m, nn.BatchNorm2d | nn.ReLU) for m in model.modules())
    assert isinstance(model.dropout, nn.Dropout)


def test_zero_init_residual_starts_each_residual_unit_as_the_identity() -> None:
    # Goyal et al. 2017, sec. 5.1: the branch's last BN scale is 0, so a stride-1 unit returns
    # relu(x + 0) = x for the non-negative input it gets from the previous unit's ReLU
    torch.manual_seed(0)
    model = ShuffleNetV1(groups=3, num_classes=10, zero_init_residual=True).eval()
    unit = model.stage3[1]
    x = torch.rand(2, unit.conv1.in_channels, 8, 8)
    torch.testing.assert_close(unit(x), x)
    # the downsampling units concatenate their branch: it is left as built
    assert model.stage3[0].bn3.weight.abs().sum() > 0
    plain = ShuffleNetV1(groups=3, num_classes=10).eval()
    assert not torch.allclose(plain.stage3[1](x), x)
