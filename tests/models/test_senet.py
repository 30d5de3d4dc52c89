"""SE-ResNets / SE-ResNeXt / SENet-154 against the paper's figures, Cadene's port and torchvision's ResNets."""

import pytest
import torch
import torchvision
from torch import nn

import cnnkit
from cnnkit.layers.se import SqueezeExcite
from cnnkit.models import resnet, senet


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def senet154() -> senet.SENet:
    """Built once: 115M parameters take a few seconds to initialise."""
    return senet.senet154().eval()


# name -> (paper's figure in millions: Hu et al. 2018 table 2 / sec. 6.2 and the issue for SENet-154,
#          Cadene's pretrainedmodels n_params, the port of the authors' Caffe models)
PAPER_AND_CADENE = {
    "seresnet50": (28.1, 28_088_024),
    "seresnet101": (49.3, 49_326_872),
    "seresnet152": (66.8, 66_821_848),
    "seresnext50_32x4d": (27.6, 27_559_896),
    "senet154": (115.1, 115_088_984),
}


@pytest.mark.parametrize("name", list(PAPER_AND_CADENE))
def test_parameter_counts_match_paper_and_cadene(name: str, senet154: senet.SENet) -> None:
    paper_millions, cadene = PAPER_AND_CADENE[name]
    n = _n_params(senet154 if name == "senet154" else getattr(senet, name)())
    assert round(n / 1e6, 1) == paper_millions
    assert n == cadene


def _se_params(channels: int, r: int = 16) -> int:
    return 2 * channels * channels // r + channels // r + channels  # 2C^2/r weights + biases


def test_seresnet50_adds_about_2_5m_to_resnet50() -> None:
    """Paper sec. 4: the SE blocks of SE-ResNet-50 add (2/r) sum_s N_s C_s^2 ~ 2.5M weights (25.6M -> 28.1M)."""
    extra = _n_params(senet.seresnet50()) - _n_params(torchvision.models.resnet50())
    stages = [
        (3, 256),
        (4, 512),
        (6, 1024),
        (3, 2048),
    ]  # (blocks N_s, output channels C_s), He et al. table 1
    weights = sum(2 * n * c * c // 16 for n, c in stages)
    assert weights == 2_514_944
    assert extra == sum(n * _se_params(c) for n, c in stages)
    assert round(extra / 1e6, 1) == 2.5


@pytest.mark.parametrize(
    ("name", "base", "stages"),
    [
        ("seresnet18", "resnet18", [(2, 64), (2, 128), (2, 256), (2, 512)]),
        ("seresnet34", "resnet34", [(3, 64), (4, 128), (6, 256), (3, 512)]),
    ],
)
def test_basic_block_se_resnets_add_one_se_per_block(
    name: str, base: str, stages: list[tuple[int, int]]
) -> None:
    extra = _n_params(getattr(senet, name)()) - _n_params(getattr(torchvision.models, base)())
    assert extra == sum(n * _se_params(c) for n, c in stages)


def _saturate_se(model: nn.Module, bias: float) -> None:
    """Make every SE gate constant: fc2 weight 0, bias ``bias``, so s = sigmoid(bias) for every channel."""
    for m in model.modules():
        if isinstance(m, SqueezeExcite):
            nn.init.zeros_(m.fc2.weight)
            nn.init.constant_(m.fc2.bias, bias)


@pytest.mark.parametrize(
    ("name", "tv_name"), [("seresnet18", "resnet18"), ("seresnext50_32x4d", "resnext50_32x4d")]
)
def test_se_resnet_with_open_gates_is_torchvision_resnet(name: str, tv_name: str) -> None:
    """With every gate at sigmoid(40) = 1 the SE blocks are the identity, so the net is torchvision's ResNet."""
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, tv_name)().eval()
    ours = getattr(senet, name)().eval()
    ours_sd = ours.state_dict()
    # torchvision's keys are exactly ours minus the SE blocks'
    assert sorted(k for k in ours_sd if ".se." not in k) == sorted(theirs.state_dict())
    missing, unexpected = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert not unexpected and all(".se." in k for k in missing)
    _saturate_se(ours, 40.0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
        # a half-open gate halves every residual branch (SE acts before the addition, paper fig. 3),
        # which changes the output: the SE blocks are really on the branches
        _saturate_se(ours, 0.0)
        assert not torch.allclose(ours(x), theirs(x), rtol=1e-3, atol=1e-3)


def test_se_sits_on_the_branch_before_the_addition() -> None:
    """Block output = relu(bn3(conv3(...)) * s + shortcut): check one bottleneck against that formula."""
    torch.manual_seed(0)
    block = senet.seresnet50().layer2[1].eval()
    x = torch.randn(2, block.conv1.in_channels, 6, 6)
    with torch.no_grad():
        branch = block.bn3(
            block.conv3(block.act2(block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x)))))))
        )
        z = branch.mean((2, 3))
        s = torch.sigmoid(
            torch.relu(z @ block.se.fc1.weight.flatten(1).T + block.se.fc1.bias)
            @ block.se.fc2.weight.flatten(1).T
            + block.se.fc2.bias
        )
        expected = torch.relu(branch * s[:, :, None, None] + x)
        torch.testing.assert_close(block(x), expected)


def test_senet154_layout_follows_the_appendix(senet154: senet.SENet) -> None:
    model = senet154
    # (2) three 3x3 convolutions in the stem, 64-64-128 channels, the first one strided
    stem_convs = [m for m in model.conv1 if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in stem_convs] == [(3, 3)] * 3
    assert [c.out_channels for c in stem_convs] == [64, 64, 128]
    assert stem_convs[0].stride == (2, 2)
    # (1) ResNeXt-152 64x4d (blocks 3-8-36-3, 64 groups) with the first 1x1 convolution halved
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 8, 36, 3]
    for stage, planes in ((model.layer1, 64), (model.layer2, 128), (model.layer3, 256), (model.layer4, 512)):
        for block in stage:
            assert block.conv1.out_channels == 2 * planes  # half of the 64x4d width 4 * planes
            assert block.conv2.groups == 64 and block.conv2.out_channels == 4 * planes
            assert block.conv3.out_channels == 4 * planes
            assert block.se.hidden_channels == 4 * planes // 16
    # (3) 3x3 stride-2 projections where the resolution halves; layer1's stride-1 projection stays 1x1
    assert model.layer1[0].downsample[0].kernel_size == (1, 1)
    for stage in (model.layer2, model.layer3, model.layer4):
        proj = stage[0].downsample[0]
        assert proj.kernel_size == (3, 3) and proj.stride == (2, 2)
    # (4) dropout 0.2 before the classifier
    assert model.dropout.p == 0.2
    assert model.fc.in_features == 2048


def test_senet_bottleneck_forward_shape_and_validation() -> None:
    torch.manual_seed(0)
    down = nn.Sequential(nn.Conv2d(128, 256, 3, 2, 1, bias=False), nn.BatchNorm2d(256))
    block = senet.SENetBottleneck(128, 64, 2, down, groups=64, base_width=4, attn_layer=SqueezeExcite).eval()
    x = torch.randn(1, 128, 8, 8)
    with torch.no_grad():
        assert block(x).shape == (1, 256, 4, 4)
    with pytest.raises(ValueError, match="downsample"):
        senet.SENetBottleneck(128, 64, 2, None, groups=64, base_width=4)
    with pytest.raises(ValueError, match="groups"):
        senet.SENetBottleneck(192, 48, groups=2, base_width=4)  # width 6: 3 channels do not split in 2


@pytest.mark.parametrize("name", ["seresnet50", "senet154"])
def test_min_input_size_is_one(name: str, senet154: senet.SENet) -> None:
    """Every downsampling step is padded (convolutions, max-pool), so a 1x1 image runs."""
    model = senet154 if name == "senet154" else cnnkit.create_model(name).eval()
    assert model.min_input_size == 1
    with torch.no_grad():
        assert model(torch.randn(1, 3, 1, 1)).shape == (1, 1000)
    with pytest.raises(ValueError, match="3-channel"):
        model(torch.randn(1, 1, 8, 8))


@pytest.mark.parametrize(
    "name", ["seresnet18", "seresnext50_32x4d", pytest.param("senet154", marks=pytest.mark.slow)]
)
def test_small_input_forward_backward(name: str) -> None:
    model = cnnkit.create_model(name, num_classes=10, in_chans=1, small_input=True, drop_path_rate=0.1)
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # the small-input stem keeps a 28x28 map until the first strided stage
    assert model.forward_features(torch.randn(1, 1, 28, 28)).shape[-1] == 4


def test_se_reduction_and_options() -> None:
    model = senet.seresnet18(se_reduction=8, norm_layer="gn", act_layer="silu")
    assert model.layer1[0].se.hidden_channels == 8 and model.layer4[0].se.hidden_channels == 64
    assert isinstance(model.layer1[0].act1, nn.SiLU)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    net = senet.SENet(senet.SENetBottleneck, (1, 1, 1, 1), groups=64, width_per_group=4, num_classes=5)
    assert isinstance(net.dropout, nn.Identity) and net.fc.out_features == 5
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: senet.seresnext50_32x4d(groups=16), "groups=32"),
        (lambda: senet.seresnet50(attn_layer=nn.Identity), "attn_layer"),
        (lambda: senet.seresnet50(se_reduction=0), "se_reduction"),
        (lambda: senet.senet154(width_per_group=8), "width_per_group=4"),
        (lambda: senet.senet154(block=resnet.Bottleneck), "block"),
        (lambda: senet.SENet(senet.SENetBottleneck, (3, 4, 6)), "4 integer block counts"),
        (
            lambda: senet.SENet(senet.SENetBottleneck, (1, 1, 1, 1), downsample_kernel_size=2),
            "downsample_kernel_size",
        ),
        (lambda: senet.SENet(resnet.PreActBottleneck, (1, 1, 1, 1)), "post-activation"),
        (lambda: senet.SENet(senet.SENetBottleneck, (1, 1, 1, 1), drop_rate=1.0), "drop_rate"),
    ],
)
def test_bad_arguments_raise(build, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        build()
