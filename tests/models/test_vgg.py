"""VGG against torchvision's VGG and the lecture's VGG-16 parameter table."""

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models import vgg as cnnkit_vgg
from cnnkit.models.registry import load_torchvision_weights
from cnnkit.models.vgg import VGG, make_layers, vgg11_bn, vgg16, vgg16_bn

NAMES = ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]

# The lecture's VGG-16 table ("not counting biases"): conv 3x3 layers, then the three FC layers.
LECTURE_VGG16_WEIGHTS = [
    1_728, 36_864,
    73_728, 147_456,
    294_912, 589_824, 589_824,
    1_179_648, 2_359_296, 2_359_296,
    2_359_296, 2_359_296, 2_359_296,
    102_760_448, 16_777_216, 4_096_000,
]  # fmt: skip


def _n(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _tv_num_params(name: str) -> int:
    enum = getattr(torchvision.models, f"{name.upper()}_Weights")
    return enum.IMAGENET1K_V1.meta["num_params"]


@pytest.mark.parametrize("name", NAMES)
def test_structure_equals_torchvision(name: str) -> None:
    """Same keys, shapes and parameter count as torchvision (built on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        ours, tv = getattr(cnnkit_vgg, name)(), getattr(torchvision.models, name)()
    a, b = ours.state_dict(), tv.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert _n(ours) == _n(tv) == _tv_num_params(name)


def test_vgg16_matches_lecture_table() -> None:
    with torch.device("meta"):
        m = vgg16()
    assert _n(m) == 138_357_544  # torchvision's VGG16_Weights meta; the lecture's "138M"
    weights = [x.weight.numel() for x in m.modules() if isinstance(x, nn.Conv2d | nn.Linear)]
    assert weights == LECTURE_VGG16_WEIGHTS
    biases = sum(x.bias.numel() for x in m.modules() if isinstance(x, nn.Conv2d | nn.Linear))
    assert sum(LECTURE_VGG16_WEIGHTS) + biases == 138_357_544


def _check_equal_outputs(name: str, size: int) -> None:
    tv = getattr(torchvision.models, name)()
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = getattr(cnnkit_vgg, name)()
    assert load_torchvision_weights(ours, tv.state_dict(), strict=True) == []
    ours.eval(), tv.eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


@pytest.mark.parametrize("name", ["vgg16", "vgg11_bn"])
def test_loaded_torchvision_weights_give_equal_outputs(name: str) -> None:
    _check_equal_outputs(name, 32)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg19", "vgg13_bn", "vgg16_bn", "vgg19_bn"])
def test_loaded_torchvision_weights_give_equal_outputs_224(name: str) -> None:
    _check_equal_outputs(name, 224)


@pytest.mark.parametrize("small_input", [False, True])
def test_min_input_size_is_exact(small_input: bool) -> None:
    """Five 2x2 pools need 32x32 (torchvision's meta: min_size (32, 32)); without the first pool, 16x16."""
    m = vgg11_bn(num_classes=3, small_input=small_input).eval()
    s = m.min_input_size
    assert s == (16 if small_input else 32)
    with torch.no_grad():
        assert m(torch.randn(1, 3, s, s)).shape == (1, 3)
        with pytest.raises(ValueError, match=f"at least {s}x{s}"):
            m(torch.randn(1, 3, s - 1, s))
        m._forward_pre_hooks.clear()
        with pytest.raises(RuntimeError):
            m(torch.randn(1, 3, s - 1, s - 1))


@pytest.mark.parametrize("name", ["vgg11", "vgg16_bn"])
def test_small_input_forward_backward(name: str) -> None:
    m = getattr(cnnkit_vgg, name)(num_classes=10, in_chans=1, small_input=True).train()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert m.features(x).shape == (2, 512, 1, 1)
    out = m(x)
    assert out.shape == (2, 10)
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_small_input_drops_first_pool_and_keeps_names() -> None:
    with torch.device("meta"):
        big, small = vgg16(), vgg16(small_input=True)
    pools = [
        type(small.features[i]).__name__ for i, x in enumerate(big.features) if isinstance(x, nn.MaxPool2d)
    ]
    assert pools == ["Identity", "MaxPool2d", "MaxPool2d", "MaxPool2d", "MaxPool2d"]
    a, b = big.state_dict(), small.state_dict()
    assert list(a) == list(b)
    assert [k for k in a if a[k].shape != b[k].shape] == ["classifier.0.weight"]
    assert small.classifier[0].in_features == 512


def test_norm_and_act_options() -> None:
    with torch.device("meta"):
        m = vgg16_bn(norm_layer="gn", act_layer="silu", drop_rate=0.2, num_classes=7)
    assert sum(isinstance(x, nn.GroupNorm) for x in m.modules()) == 13
    assert not any(isinstance(x, nn.BatchNorm2d | nn.ReLU) for x in m.modules())
    assert all(d.p == 0.2 for d in m.modules() if isinstance(d, nn.Dropout))
    assert m.classifier[-1].out_features == 7


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: vgg16(norm_layer="batch"), "no norm layers"),
        (lambda: vgg16_bn(norm_layer="none"), "norm after every conv"),
        (lambda: vgg16(cfg=[64, "M"]), "fixes the layer table"),
        (lambda: vgg16(drop_rate=-0.1), "drop_rate"),
        (lambda: make_layers([64, "P"]), "'M'"),
        (lambda: VGG(["M"]), "at least one convolution"),
    ],
)
def test_invalid_arguments_raise(build: object, match: str) -> None:
    with torch.device("meta"), pytest.raises(ValueError, match=match):
        build()  # type: ignore[operator]


def test_custom_cfg_is_data() -> None:
    m = VGG([8, "M", 16, "M"], num_classes=4, in_chans=2).eval()
    assert m.min_input_size == 4
    with torch.no_grad():
        assert m(torch.randn(1, 2, 4, 4)).shape == (1, 4)
