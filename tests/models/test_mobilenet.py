"""MobileNet v1 against Howard et al. 2017 (tables 1, 4, 6, 7) and the lecture's table 4.

Mult-adds are what torch's FLOP counter measures on the real modules (run on the meta
device, so no arithmetic is done): FLOPs / 2, convolutions and the classifier.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnkit
from cnnkit.layers.conv import DepthwiseConv2d, DepthwiseSeparableConv2d
from cnnkit.models.mobilenet import MobileNetV1, mobilenet_v1, mobilenet_v1_conv


def _mult_adds(model: nn.Module, size: int = 224) -> int:
    model = model.eval().to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, model.in_chans, size, size, device="meta"))  # type: ignore[arg-type]
    return counter.get_total_flops() // 2


def _paper_params(model: nn.Module) -> int:
    """Weights of the convolutions and classifier and the classifier's bias (no BN scales/shifts)."""
    return sum(
        p.numel() for name, p in model.named_parameters() if p.dim() > 1 or name.startswith("classifier")
    )


def _millions_1dp(n: int) -> float:
    return round(n / 1e6, 1)


# paper table 4 (the lecture's table): (builder, params in M, mult-adds in M)
TABLE_4 = [(mobilenet_v1, 4.2, 569), (mobilenet_v1_conv, 29.3, 4866)]


@pytest.mark.parametrize(("builder", "params_m", "mult_adds_m"), TABLE_4)
def test_table_4_parameters_and_mult_adds(builder: object, params_m: float, mult_adds_m: int) -> None:
    model = builder()  # type: ignore[operator]
    # the paper gives one decimal: both with and without BN's scales and shifts round to it
    assert _millions_1dp(_paper_params(model)) == params_m
    assert _millions_1dp(sum(p.numel() for p in model.parameters())) == params_m
    # the paper rounds to whole millions; 0.1% covers that (0.3M at 569M) and Conv MobileNet's
    # 1.3M (0.03%) above 4866M, which the paper's own count evidently rounded differently
    assert _mult_adds(model) == pytest.approx(mult_adds_m * 1e6, rel=1e-3)


def test_separable_saves_what_the_lecture_says() -> None:
    """Per block the cost ratio is 1/N + 1/D_K^2; over the net Conv MobileNet costs ~8.6x more."""
    ratio = _mult_adds(mobilenet_v1_conv()) / _mult_adds(mobilenet_v1())
    assert 8 < ratio < 9  # paper: 4866 / 569 = 8.55


@pytest.mark.parametrize(
    ("width_mult", "params_m", "mult_adds_m"),
    [(0.75, 2.6, 325), (0.5, 1.3, 149), (0.25, 0.5, 41)],  # paper table 6 (MobileNet-224)
)
def test_table_6_width_multiplier(width_mult: float, params_m: float, mult_adds_m: int) -> None:
    model = mobilenet_v1(width_mult=width_mult)
    assert _millions_1dp(_paper_params(model)) == params_m
    assert round(_mult_adds(model) / 1e6) == mult_adds_m


@pytest.mark.parametrize(("size", "mult_adds_m"), [(224, 569), (192, 418), (160, 290), (128, 186)])
def test_table_7_resolution_multiplier(size: int, mult_adds_m: int) -> None:
    # within the paper's rounding (1M); 160 counts 290.7M, which the paper lists as 290
    assert abs(_mult_adds(mobilenet_v1(), size) / 1e6 - mult_adds_m) < 1.0


def test_table_1_feature_map_sizes_and_channels() -> None:
    """Each block's output size and width at 224x224 (table 1's input-size column of the next row)."""
    model = mobilenet_v1().eval()
    shapes: list[tuple[int, ...]] = []
    hooks = [
        blk.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for blk in model.features
    ]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    for h in hooks:
        h.remove()
    expected = [(32, 112), (64, 112), (128, 56), (128, 56), (256, 28), (256, 28), (512, 14)]
    expected += [(512, 14)] * 5 + [(1024, 7), (1024, 7)]
    assert [(c, h) for c, h, w in shapes] == expected
    assert all(h == w for _, h, w in shapes)
    blocks = list(model.features)[1:]
    assert all(isinstance(b.conv, DepthwiseSeparableConv2d) for b in blocks)
    assert isinstance(model.features[0].conv, nn.Conv2d) and model.features[0].conv.kernel_size == (3, 3)


def test_conv_mobilenet_has_only_full_convolutions() -> None:
    model = mobilenet_v1_conv()
    assert not any(isinstance(m, DepthwiseConv2d | DepthwiseSeparableConv2d) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 14 and all(c.kernel_size == (3, 3) and c.groups == 1 for c in convs)


def test_resolution_independent_forward_shapes() -> None:
    model = mobilenet_v1(num_classes=7, width_mult=0.25).eval()
    with torch.no_grad():
        for size in (32, 97, 160):
            assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
        assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 256, 2, 2)


def test_min_input_size_is_one() -> None:
    for small in (False, True):
        model = mobilenet_v1(num_classes=5, small_input=small, width_mult=0.25).eval()
        assert model.min_input_size == 1
        with torch.no_grad():
            assert model(torch.randn(1, 3, 1, 1)).shape == (1, 5)
        with pytest.raises(ValueError, match="at least 1x1"):
            model(torch.randn(1, 3, 0, 0))


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v1_conv"])
def test_small_input_28x28_forward_backward(name: str) -> None:
    model = cnnkit.create_model(name, num_classes=10, in_chans=1, small_input=True, width_mult=0.25)
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # the stride-1 stem keeps 28x28 (then 14, 7, 4, 2) instead of 14x14
    assert model.forward_features(torch.randn(1, 1, 28, 28)).shape[-2:] == (2, 2)


def test_norm_act_and_dropout_are_injected() -> None:
    model = mobilenet_v1(width_mult=0.25, norm_layer="gn", act_layer=nn.SiLU, drop_rate=0.2)
    assert not any(isinstance(m, nn.BatchNorm2d | nn.ReLU) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    block = model.features[1]
    assert isinstance(block.conv.norm, nn.GroupNorm) and isinstance(block.conv.act, nn.SiLU)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.2


def test_builders_and_validation() -> None:
    assert isinstance(cnnkit.create_model("mobilenet_v1"), MobileNetV1)
    with pytest.raises(ValueError, match="mobilenet_v1_conv"):
        mobilenet_v1(separable=False)
    with pytest.raises(ValueError, match="mobilenet_v1"):
        mobilenet_v1_conv(separable=True)
    assert mobilenet_v1_conv(separable=False, width_mult=0.25).separable is False
    with pytest.raises(ValueError, match="width_mult"):
        mobilenet_v1(width_mult=0)
    with pytest.raises(ValueError, match="drop_rate"):
        mobilenet_v1(drop_rate=1.0)
    with pytest.raises(TypeError):
        mobilenet_v1(no_such_argument=1)
    # width rounding: TF-slim's max(8, int(alpha * d))
    model = mobilenet_v1(width_mult=0.1)
    assert model.features[0].conv.out_channels == 8 and model.num_features == 102
