"""DenseNet models against torchvision (keys, shapes, outputs) and the paper's parameter counts."""

import pytest
import torch
import torchvision
from torch import nn

import cnnkit
from cnnkit.models import densenet


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomise_norms(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))


def _check_against_torchvision(name: str) -> None:
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None).eval()
    _randomise_norms(theirs)
    ours = getattr(densenet, name)().eval()
    assert _n_params(ours) == _n_params(theirs)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)  # same names, same order
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in theirs_sd.items()}
    ours.load_state_dict(theirs_sd, strict=True)
    cnnkit.load_torchvision_weights(ours, theirs_sd, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


def test_densenet121_equals_torchvision() -> None:
    _check_against_torchvision("densenet121")


def test_remap_legacy_keys_restores_torchvision_names() -> None:
    """torchvision's DenseNet checkpoints say ``denselayer1.norm.1.weight``; its models say ``norm1``."""
    theirs = torchvision.models.densenet121().state_dict()
    legacy = {}
    for key, value in theirs.items():
        if ".denselayer" in key:
            for name in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
                key = key.replace(f".{name}.", f".{name[:-1]}.{name[-1]}.")
        legacy[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    assert "features.transition1.norm.weight" in legacy  # transitions were never renamed
    remapped = densenet.remap_legacy_keys(legacy)
    assert list(remapped) == list(theirs)
    ours = densenet.densenet121()
    cnnkit.load_torchvision_weights(ours, remapped, strict=True)
    torch.testing.assert_close(
        ours.state_dict()["features.denseblock4.denselayer16.conv2.weight"],
        theirs["features.denseblock4.denselayer16.conv2.weight"],
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet161", "densenet169", "densenet201"])
def test_larger_densenets_equal_torchvision(name: str) -> None:
    _check_against_torchvision(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # torchvision's documented num_params for the ImageNet weights
        ("densenet121", 7_978_856),
        ("densenet161", 28_681_000),
        ("densenet169", 14_149_480),
        ("densenet201", 20_013_928),
    ],
)
def test_parameter_counts_equal_torchvision_docs(name: str, expected: int) -> None:
    assert _n_params(getattr(densenet, name)()) == expected


def test_densenet264_parameter_count() -> None:
    """Paper Table 1 (k=32, blocks 6-12-64-48): 33.3M, as commonly cited (no torchvision model)."""
    n = _n_params(densenet.densenet264())
    assert round(n / 1e6, 1) == 33.3
    assert n == 33_337_704


def test_densenet_bc_100_12_is_the_papers_cifar_model() -> None:
    """Paper sec. 4.2 / Table 2: DenseNet-BC, L=100, k=12 has 0.8M parameters (CIFAR, 10 classes)."""
    model = densenet.densenet_bc_100_12()  # defaults: 10 classes, CIFAR stem
    assert model.small_input and model.classifier.out_features == 10
    assert round(_n_params(model) / 1e6, 1) == 0.8
    blocks = [m for n, m in model.features.named_children() if n.startswith("denseblock")]
    assert [len(b) for b in blocks] == [16, 16, 16]  # (L - 4) / 6 bottleneck layers per block
    assert model.features.conv0.kernel_size == (3, 3) and model.features.conv0.out_channels == 24  # 2k
    # depth L counts the weighted layers: stem conv + 2 convs per bottleneck layer + 2 transitions + classifier
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 100
    # compression 0.5: 24 + 16*12 = 216 -> 108 -> 108 + 192 = 300 -> 150 -> 150 + 192 = 342
    assert model.features.transition1.conv.out_channels == 108
    assert model.features.transition2.conv.out_channels == 150
    assert model.classifier.in_features == 342


def test_small_input_stem_keeps_resolution() -> None:
    model = densenet.densenet121(small_input=True)
    assert "pool0" not in dict(model.features.named_children())
    assert model.features.conv0.stride == (1, 1) and model.features.conv0.kernel_size == (3, 3)
    # only conv0's shape differs from the ImageNet model's state_dict, so pretrained weights mostly load
    big = densenet.densenet121().state_dict()
    small = model.state_dict()
    assert list(small) == list(big)
    assert [k for k in big if big[k].shape != small[k].shape] == ["features.conv0.weight"]
    feats = model.eval().forward_features(torch.randn(1, 3, 32, 32))
    assert feats.shape == (1, 1024, 4, 4)  # 32 / 2^3 after three transitions


@pytest.mark.parametrize(
    ("name", "small_input", "expected"),
    [
        # ImageNet stem: conv /2, max pool /2, three transitions /2: 29 (torchvision's min_size for DenseNet)
        ("densenet121", False, 29),
        ("densenet121", True, 8),  # three 2x2 average pools
        ("densenet_bc_100_12", True, 4),  # two transitions
        ("densenet_bc_100_12", False, 13),
    ],
)
def test_min_input_size(name: str, small_input: bool, expected: int) -> None:
    model = cnnkit.create_model(name, num_classes=5, small_input=small_input).eval()
    assert model.min_input_size == expected
    with torch.no_grad():
        assert model(torch.randn(1, 3, expected, expected)).shape == (1, 5)
    with pytest.raises(ValueError, match=f"at least {expected}x{expected}"):
        model(torch.randn(1, 3, expected - 1, expected))
    model._forward_pre_hooks.clear()  # without the check the network itself fails one pixel below
    with pytest.raises(RuntimeError), torch.no_grad():
        model(torch.randn(1, 3, expected - 1, expected - 1))


@pytest.mark.parametrize("name", ["densenet121", "densenet_bc_100_12"])
def test_small_input_forward_backward(name: str) -> None:
    model = cnnkit.create_model(name, num_classes=10, in_chans=1, small_input=True, drop_rate=0.2)
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_drop_rates() -> None:
    torch.manual_seed(0)
    model = densenet.densenet_bc_100_12(num_classes=10, small_input=True, drop_rate=0.5, dense_drop_rate=0.2)
    assert model.dropout.p == 0.5
    assert model.features.denseblock2.denselayer7.drop_rate == 0.2
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # no dropout in eval
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))


def test_norm_act_and_memory_efficient_options() -> None:
    torch.manual_seed(0)
    model = densenet.densenet_bc_100_12(num_classes=3, small_input=True, norm_layer="gn", act_layer="silu")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert isinstance(model.features.transition1.relu, nn.SiLU) and isinstance(model.act, nn.SiLU)
    plain = densenet.densenet121(num_classes=3, small_input=True)
    ckpt = densenet.densenet121(num_classes=3, small_input=True, memory_efficient=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(plain(x), ckpt(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"growth_rate": 0}, "growth_rate"),
        ({"block_config": ()}, "block_config"),
        ({"block_config": (6, 0)}, "block_config"),
        ({"compression": 0.0}, "compression"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"dense_drop_rate": -0.1}, "drop_rate"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        densenet.DenseNet(**kwargs)
