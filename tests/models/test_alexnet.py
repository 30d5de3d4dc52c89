"""AlexNet (torchvision and the paper's two towers) and ZFNet against torchvision and the papers."""

import functools

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models.alexnet import AlexNet, alexnet, alexnet_grouped, lrn_paper, zfnet
from cnnkit.models.registry import load_torchvision_weights

BUILDERS = {"alexnet": alexnet, "alexnet_grouped": alexnet_grouped, "zfnet": zfnet}


@functools.cache
def _default(name: str) -> AlexNet:
    """One shared ImageNet-configured model per variant, for the tests that only inspect it."""
    return BUILDERS[name]().eval()


def _n(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _hand_count(convs: list[tuple[int, int, int, int]], c_last: int) -> int:
    """Paper layer list (c_in, c_out, kernel, groups) -> k*k*c_in/g*c_out + c_out, plus the three FC layers."""
    total = sum(k * k * (c_in // g) * c_out + c_out for c_in, c_out, k, g in convs)
    fcs = [(c_last * 6 * 6, 4096), (4096, 4096), (4096, 1000)]
    return total + sum(i * o + o for i, o in fcs)


def _map_sizes(m: AlexNet, size: int = 224) -> list[int]:
    """Spatial size after each conv and each pool of ``features``."""
    x, sizes = torch.zeros(1, 3, size, size), []
    with torch.no_grad():
        for layer in m.features:
            x = layer(x)
            if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
                sizes.append(x.shape[-1])
    return sizes


def test_alexnet_equals_torchvision() -> None:
    tv = torchvision.models.alexnet()
    ours = alexnet()
    num_params = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["num_params"]
    assert _n(ours) == _n(tv) == num_params == 61_100_840
    a, b = ours.state_dict(), tv.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert load_torchvision_weights(ours, b, strict=True) == []
    ours.eval(), tv.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


def test_alexnet_grouped_param_count_from_paper() -> None:
    """Krizhevsky et al. 2012, fig. 2: 96/256/384/384/256 with two towers (groups=2 in conv2, 4, 5); ~60M."""
    paper = [(3, 96, 11, 1), (96, 256, 5, 2), (256, 384, 3, 1), (384, 384, 3, 2), (384, 256, 3, 2)]
    hand = _hand_count(paper, 256)
    m = _default("alexnet_grouped")
    assert _n(m) == hand == 60_965_224
    assert abs(_n(m) - 60e6) / 60e6 < 0.02  # the paper: "60 million parameters"
    convs = [c for c in m.features if isinstance(c, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert convs[0].kernel_size == (11, 11) and convs[0].stride == (4, 4)


def test_alexnet_grouped_towers_are_independent() -> None:
    """conv2 is two towers: output maps of tower 1 do not depend on input maps of tower 2 (paper fig. 2)."""
    conv2 = [c for c in _default("alexnet_grouped").features if isinstance(c, nn.Conv2d)][1]
    x = torch.randn(1, 96, 13, 13)
    y = x.clone()
    y[:, 48:] += torch.randn(1, 48, 13, 13)
    with torch.no_grad():
        a, b = conv2(x), conv2(y)
    torch.testing.assert_close(a[:, :128], b[:, :128])
    assert not torch.allclose(a[:, 128:], b[:, 128:])


def test_alexnet_grouped_layout_and_map_sizes() -> None:
    """Paper sec. 3.3-3.5: LRN after the ReLUs of conv1 and conv2, pools after both LRNs and conv5; maps 55/27/13/6."""
    m = _default("alexnet_grouped")
    kinds = [type(x).__name__ for x in m.features]
    assert kinds == [
        "Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d",
        "Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d",
        "Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d",
    ]  # fmt: skip
    assert _map_sizes(m) == [55, 27, 27, 13, 13, 13, 13, 6]


def test_lrn_matches_paper_formula() -> None:
    """b_i = a_i / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta, sec. 3.3, written with loops."""
    n, alpha, beta, k = 5, 1e-4, 0.75, 2.0
    a = torch.randn(2, 7, 3, 4) * 30  # large activations, so the normalisation is not ~identity
    b = torch.empty_like(a)
    channels = a.shape[1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        b[:, i] = a[:, i] / (k + alpha * (a[:, lo : hi + 1] ** 2).sum(dim=1)) ** beta
    torch.testing.assert_close(lrn_paper()(a), b)
    assert not torch.allclose(b, a / k**beta)  # the sum term matters at this scale
    lrn = next(x for x in _default("alexnet_grouped").features if isinstance(x, nn.LocalResponseNorm))
    torch.testing.assert_close(lrn(a), b)


def test_zfnet_layout_from_paper_fig_3() -> None:
    """Zeiler & Fergus 2014, fig. 3: 7x7/2 conv1, 5x5/2 conv2, 3x3/2 pools; maps 110, 55, 26, 13, 13, 13, 13, 6."""
    m = _default("zfnet")
    convs = [c for c in m.features if isinstance(c, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert convs[0].kernel_size == (7, 7) and convs[0].stride == (2, 2)
    assert all(c.groups == 1 for c in convs)  # dense connections in layers 3-5 (sec. 3)
    assert all(p.kernel_size == 3 and p.stride == 2 for p in m.features if isinstance(p, nn.MaxPool2d))
    assert _map_sizes(m) == [110, 55, 26, 13, 13, 13, 13, 6]
    paper = [(3, 96, 7, 1), (96, 256, 5, 1), (256, 384, 3, 1), (384, 384, 3, 1), (384, 256, 3, 1)]
    assert _n(m) == _hand_count(paper, 256) == 62_357_608


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("small_input", [False, True])
def test_min_input_size_is_exact(name: str, small_input: bool) -> None:
    m = BUILDERS[name](num_classes=3, small_input=small_input).eval()
    s = m.min_input_size
    expected = {"alexnet": (63, 7), "alexnet_grouped": (63, 7), "zfnet": (53, 5)}[name][small_input]
    assert s == expected  # torchvision's AlexNet meta: min_size (63, 63)
    with torch.no_grad():
        assert m(torch.randn(1, 3, s, s)).shape == (1, 3)
        with pytest.raises(ValueError, match=f"at least {s}x{s}"):
            m(torch.randn(1, 3, s, s - 1))
        m._forward_pre_hooks.clear()
        with pytest.raises(RuntimeError):
            m(torch.randn(1, 3, s - 1, s - 1))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_small_input_forward_backward(name: str) -> None:
    m = BUILDERS[name](num_classes=10, in_chans=1, small_input=True).train()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert m.features(x).shape[-2:] == (6, 6)  # the head sees a real 6x6 map, as at 224 in ImageNet
    out = m(x)
    assert out.shape == (2, 10)
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    first = m.features[0]
    assert first.kernel_size == (3, 3) and first.stride == (1, 1)


def test_small_input_keeps_torchvision_keys() -> None:
    """Only the stem's weight changes shape, so ImageNet weights load into every other layer."""
    m = alexnet(small_input=True)
    skipped = load_torchvision_weights(m, torchvision.models.alexnet().state_dict(), strict=False)
    assert skipped == ["features.0.weight"]


@pytest.mark.parametrize("kwargs", [{"drop_rate": 1.0}, {"num_classes": 0}, {"act_layer": "nope"}])
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        alexnet_grouped(**kwargs)


def test_builder_rejects_cfg_and_lrn_rejects_even_size() -> None:
    with pytest.raises(ValueError, match="fixes the layer table"):
        zfnet(cfg=[])
    with pytest.raises(ValueError, match="odd"):
        lrn_paper(size=4)


def test_act_layer_and_drop_rate_are_used() -> None:
    m = alexnet(act_layer="gelu", drop_rate=0.1)
    assert sum(isinstance(x, nn.GELU) for x in m.modules()) == 7 and not any(
        isinstance(x, nn.ReLU) for x in m.modules()
    )
    assert all(d.p == 0.1 for d in m.modules() if isinstance(d, nn.Dropout))
