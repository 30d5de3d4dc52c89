"""ResNet family against outside definitions: torchvision's models, the papers' parameter counts and layouts.

- torchvision: equal parameter count, state_dict keys and shapes, and outputs after loading its weights;
- He et al. 2016 (table 6): CIFAR ResNet-20..110 parameter counts; sec. 4.2: 6n+2 layers, 16/32/64 maps;
- Zagoruyko & Komodakis 2016: WRN-16-4, WRN-40-4, WRN-28-10 counts; the lecture's WRN table:
  ResNet-50/101/152, WRN-50-2-bottleneck, pre-ResNet-200;
- He et al. 2016, fig. 4 / the lecture: plain nets have the parameters of residual nets with
  parameter-free (option A) shortcuts.
"""

from functools import partial

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import resnet as tv_resnet

import cnnkit
from cnnkit.layers.drop import DropPath
from cnnkit.layers.residual import (
    BasicBlock,
    Bottleneck,
    PadShortcut,
    PreActBasicBlock,
    PreActBottleneck,
)
from cnnkit.layers.se import SqueezeExcite
from cnnkit.models import resnet as R
from cnnkit.models.registry import get_model_info


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(fn, **kwargs):  # type: ignore[no-untyped-def]
    """Build on the meta device: shapes and counts without allocating or initialising weights."""
    with torch.device("meta"):
        return fn(**kwargs)


TV_FAST = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2"]
TV_SLOW = ["resnet34", "resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2"]
TV_PARAMS = [*TV_FAST, *(pytest.param(n, marks=pytest.mark.slow) for n in TV_SLOW)]


# ------------------------------------------------------------------ torchvision equality


@pytest.mark.parametrize("name", TV_PARAMS)
def test_equals_torchvision(name: str) -> None:
    assert get_model_info(name).torchvision == name
    tv = getattr(torchvision.models, name)().eval()
    # resnet18 is built as users build it; the others on the meta device, since every tensor is
    # replaced by torchvision's anyway (their random initialisation would take most of the time)
    ours = cnnkit.create_model(name) if name == "resnet18" else on_meta(cnnkit.create_model, name=name)
    assert n_params(ours) == n_params(tv)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in tv.state_dict().items()
    ]
    # non-trivial BN statistics, so that eval mode exercises them
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    ours.load_state_dict(tv.state_dict(), strict=True, assign=name != "resnet18")
    ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = tv(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)
    assert expected.abs().max() > 1e-3  # not a trivially zero output


# ------------------------------------------------------------------ parameter counts vs publications

# (builder, published count in millions, decimals given, source); CIFAR nets at 10 classes.
PUBLISHED = [
    ("resnet20", 0.27, 2, "He et al. 2016, table 6"),
    ("resnet32", 0.46, 2, "He et al. 2016, table 6"),
    ("resnet44", 0.66, 2, "He et al. 2016, table 6"),
    ("resnet56", 0.85, 2, "He et al. 2016, table 6"),
    ("resnet110", 1.7, 1, "He et al. 2016, table 6"),
    ("wrn_16_4", 2.7, 1, "Zagoruyko & Komodakis 2016"),
    ("wrn_40_4", 8.9, 1, "Zagoruyko & Komodakis 2016"),
    ("wrn_28_10", 36.5, 1, "Zagoruyko & Komodakis 2016"),
    ("resnet50", 25.6, 1, "lecture WRN table"),
    ("resnet101", 44.5, 1, "lecture WRN table"),
    ("resnet152", 60.2, 1, "lecture WRN table"),
    ("wide_resnet50_2", 68.9, 1, "lecture WRN table (WRN-50-2-bottleneck)"),
    ("preresnet200", 64.7, 1, "lecture WRN table (pre-ResNet-200)"),
    ("resnext50_32x4d", 25.0, 1, "Xie et al. 2017, table 1"),
]


@pytest.mark.parametrize(("name", "millions", "decimals", "source"), PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_parameter_count_matches_publication(name: str, millions: float, decimals: int, source: str) -> None:
    num_classes = (
        10
        if name.startswith("wrn") or (name[6:].isdigit() and int(name[6:]) in (20, 32, 44, 56, 110))
        else 1000
    )
    count = n_params(on_meta(getattr(R, name), num_classes=num_classes))
    assert round(count / 1e6, decimals) == millions, f"{name}: {count:,} vs {millions}M ({source})"


@pytest.mark.parametrize("depth", [18, 34])
def test_plain_nets_have_the_parameters_of_option_a_resnets(depth: int) -> None:
    """Lecture / He et al. fig. 4: "no extra parameter compared to their plain counterparts" (option A)."""
    plain = on_meta(getattr(R, f"plain{depth}"))
    option_a = on_meta(getattr(R, f"resnet{depth}"), shortcut_type="A")
    assert n_params(plain) == n_params(option_a)
    # and torchvision's (option B) ResNet has exactly its projections more
    tv = on_meta(getattr(torchvision.models, f"resnet{depth}"))
    projections = sum(
        n_params(m.downsample) for m in tv.modules() if getattr(m, "downsample", None) is not None
    )
    assert projections == 173_824
    assert n_params(plain) == n_params(tv) - projections
    blocks = [m for m in plain.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == sum(R.IMAGENET_STAGES[depth])
    assert all(not b.has_shortcut and b.downsample is None for b in blocks)


def test_plain18_has_no_shortcut_and_rejects_one() -> None:
    with pytest.raises(ValueError, match="plain18 fixes shortcut=False"):
        R.plain18(shortcut=True)


# ------------------------------------------------------------------ forced arguments


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("resnext50_32x4d", {"groups": 16}, "fixes groups=32"),
        ("resnext101_32x8d", {"width_per_group": 4}, "fixes width_per_group=8"),
        ("resnext101_64x4d", {"groups": 32}, "fixes groups=64"),
        ("wide_resnet50_2", {"width_per_group": 64}, "fixes width_per_group=128"),
        ("wide_resnet101_2", {"width_per_group": 256}, "fixes width_per_group=128"),
    ],
)
def test_builders_reject_conflicting_forced_args(name: str, kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        on_meta(getattr(R, name), **kwargs)


def test_builders_accept_the_forced_value() -> None:
    model = on_meta(R.resnext50_32x4d, groups=32, width_per_group=4)
    assert model.layer1[0].conv2.groups == 32 and model.layer1[0].conv2.out_channels == 128


def test_grouped_basic_block_net_raises() -> None:
    with pytest.raises(ValueError, match="groups=1 and base_width=64"):
        on_meta(R.resnet18, groups=32)


# ------------------------------------------------------------------ CIFAR nets


@pytest.mark.parametrize(
    ("name", "n"), [("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9), ("resnet110", 18)]
)
def test_cifar_resnet_layout(name: str, n: int) -> None:
    """He et al. sec. 4.2: 6n+2 weighted layers, 2n per map size {32, 16, 8} with {16, 32, 64} filters, option A."""
    model = on_meta(getattr(R, name))
    weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(weighted) == 6 * n + 2 == int(name[6:])
    for stage, width in zip((model.layer1, model.layer2, model.layer3), (16, 32, 64), strict=True):
        assert len(stage) == n and all(
            isinstance(b, BasicBlock) and b.conv2.out_channels == width for b in stage
        )
    assert [type(m.downsample) for m in (model.layer2[0], model.layer3[0])] == [PadShortcut, PadShortcut]
    assert not hasattr(model, "maxpool")


def test_cifar_resnet_feature_map_sizes() -> None:
    model = R.resnet20().eval()
    sizes = []
    for stage in (model.layer1, model.layer2, model.layer3):
        stage.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    model(torch.randn(1, 3, 32, 32))
    assert sizes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]


@pytest.mark.parametrize(
    ("name", "depth", "k"), [("wrn_16_4", 16, 4), ("wrn_28_10", 28, 10), ("wrn_40_4", 40, 4)]
)
def test_wrn_layout(name: str, depth: int, k: int) -> None:
    """WRN-d-k: (d-4)/6 pre-activation basic blocks per stage, widths 16k, 32k, 64k, dropout between convs."""
    model = on_meta(getattr(R, name), block_drop_rate=0.3)
    n = (depth - 4) // 6
    for stage, width in zip(
        (model.layer1, model.layer2, model.layer3), (16 * k, 32 * k, 64 * k), strict=True
    ):
        assert len(stage) == n
        assert all(isinstance(b, PreActBasicBlock) and b.conv2.out_channels == width for b in stage)
        assert all(isinstance(b.dropout, nn.Dropout) and b.dropout.p == 0.3 for b in stage)
        assert isinstance(stage[0].downsample, nn.Conv2d) and stage[0].downsample.kernel_size == (1, 1)
    assert model.conv1.out_channels == 16 and isinstance(model.bn1, nn.Identity)
    assert isinstance(model.bn_final, nn.BatchNorm2d) and model.bn_final.num_features == 64 * k


def test_cifar_small_input_is_a_no_op() -> None:
    a, b = on_meta(R.resnet20, small_input=False), on_meta(R.resnet20, small_input=True)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [
        (k, v.shape) for k, v in b.state_dict().items()
    ]
    assert a.small_input and b.small_input


# ------------------------------------------------------------------ pre-activation ImageNet nets


@pytest.mark.parametrize(
    ("name", "block"), [("preresnet18", PreActBasicBlock), ("preresnet50", PreActBottleneck)]
)
def test_preresnet_layout(name: str, block: type) -> None:
    model = on_meta(getattr(R, name))
    depth = int(name[9:])
    blocks = [m for m in model.modules() if isinstance(m, block)]
    assert len(blocks) == sum(R.IMAGENET_STAGES[depth])
    # He et al. 2016b: the stem conv feeds the first block's pre-activation; BN-ReLU after the last block
    assert isinstance(model.bn1, nn.Identity) and isinstance(model.bn_final, nn.BatchNorm2d)
    # projections are bare 1x1 convs (no BN)
    assert all(isinstance(b.downsample, nn.Conv2d | type(None)) for b in blocks)


def test_preresnet200_depth() -> None:
    """200 weighted layers: 3 convs in each of 3+24+36+3 = 66 bottlenecks, the stem conv and fc."""
    model = on_meta(R.preresnet200)
    projections = {id(m.downsample) for m in model.modules() if getattr(m, "downsample", None) is not None}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and id(m) not in projections]
    assert len(projections) == 4
    assert len(convs) + 1 == 200


# ------------------------------------------------------------------ features


def test_small_input_stem() -> None:
    """small_input: 3x3/1 stem conv, no max-pool; layer1 keeps 28x28 (vs 7x7 with the ImageNet stem)."""
    small = cnnkit.create_model("resnet18", num_classes=10, in_chans=1, small_input=True).eval()
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    seen: list[tuple[int, ...]] = []
    small.layer1.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    small(torch.randn(1, 1, 28, 28))
    big = cnnkit.create_model("resnet18", num_classes=10, in_chans=1).eval()
    big.layer1.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    big(torch.randn(1, 1, 28, 28))
    assert seen == [(28, 28), (7, 7)]


@pytest.mark.parametrize("name", ["resnet18", "plain18", "preresnet18", "resnet20", "wrn_16_4"])
def test_small_input_forward_backward(name: str) -> None:
    model = cnnkit.create_model(
        name, num_classes=10, in_chans=1, small_input=True, drop_path_rate=0.0
    ).train()
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "build",
    [
        partial(R.resnet18),
        partial(R.resnet18, small_input=True),
        partial(R.resnet50, deep_stem=True),
        partial(R.preresnet18),
        partial(R.plain18),
        partial(R.resnet20),
        partial(R.wrn_16_4),
    ],
)
def test_min_input_size_is_one(build: partial) -> None:  # type: ignore[type-arg]
    model = build(num_classes=5).eval()
    assert model.min_input_size == 1
    with torch.no_grad():
        assert model(torch.randn(1, 3, 1, 1)).shape == (1, 5)
        assert model(torch.randn(1, 3, 1, 7)).shape == (1, 5)
    with pytest.raises(ValueError, match="at least 1x1"):
        model(torch.randn(1, 3, 0, 0))
    with pytest.raises(ValueError, match="3-channel"):
        model(torch.randn(1, 1, 8, 8))


def test_drop_path_rates_decay_linearly() -> None:
    """Huang et al. 2016, eq. 4: block l of L drops with p_l = l / L * p_L."""
    model = on_meta(R.resnet50, drop_path_rate=0.2)
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    total = sum(R.IMAGENET_STAGES[50])
    assert rates == pytest.approx([0.2 * (i + 1) / total for i in range(total)])
    cifar = on_meta(R.resnet20, drop_path_rate=0.5)
    assert [m.p for m in cifar.modules() if isinstance(m, DropPath)] == pytest.approx(
        [0.5 * i / 9 for i in range(1, 10)]
    )


def test_zero_init_residual_matches_torchvision() -> None:
    """The same weights are zeroed as by torchvision's zero_init_residual (last BN of every branch)."""
    for block, tv_block in ((BasicBlock, tv_resnet.BasicBlock), (Bottleneck, tv_resnet.Bottleneck)):
        tv = tv_resnet.ResNet(tv_block, [2, 1, 1, 1], zero_init_residual=True)
        ours = R.ResNet(block, [2, 1, 1, 1], zero_init_residual=True)
        tv_zero = {k for k, v in tv.state_dict().items() if k.endswith("weight") and not v.any()}
        ours_zero = {k for k, v in ours.state_dict().items() if k.endswith("weight") and not v.any()}
        assert ours_zero == tv_zero and len(tv_zero) == 5
    with pytest.raises(ValueError, match="plain net"):
        on_meta(R.plain18, zero_init_residual=True)


def test_deep_stem() -> None:
    """SENet-154 / ResNet-C stem: three 3x3 convs (64, 64, 128), stride 2 in the first; layer1 takes 128 channels."""
    model = on_meta(R.resnet50, deep_stem=True)
    convs = [m for m in model.conv1 if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [
        ((3, 3), (2, 2), 64),
        ((3, 3), (1, 1), 64),
        ((3, 3), (1, 1), 128),
    ]
    assert model.bn1.num_features == 128 and model.layer1[0].conv1.in_channels == 128


def test_attn_layer_reaches_every_block() -> None:
    """SE-ResNet-50 (Hu et al. 2018): 2.5M extra parameters over ResNet-50 (paper sec. 4), with 2C^2/r per block."""
    plain = on_meta(R.resnet50)
    se = on_meta(R.resnet50, attn_layer=partial(SqueezeExcite, reduction=16))
    blocks = [m for m in se.modules() if isinstance(m, Bottleneck)]
    assert all(isinstance(b.se, SqueezeExcite) for b in blocks)
    extra = n_params(se) - n_params(plain)
    weights = sum(2 * c * c // 16 for c in (b.conv3.out_channels for b in blocks))
    assert round(weights / 1e6, 1) == 2.5
    assert extra == weights + sum(c // 16 + c for c in (b.conv3.out_channels for b in blocks))


def test_act_norm_and_dropout_options() -> None:
    model = R.resnet18(num_classes=3, act_layer="swish", norm_layer="gn", drop_rate=0.5)
    assert not any(isinstance(m, nn.ReLU | nn.BatchNorm2d) for m in model.modules())
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.5
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_bad_model_arguments() -> None:
    with pytest.raises(ValueError, match="4 integer block counts"):
        R.ResNet(BasicBlock, [2, 2, 2])
    with pytest.raises(ValueError, match="shortcut_type"):
        R.ResNet(BasicBlock, [1, 1, 1, 1], shortcut_type="C")
    with pytest.raises(ValueError, match="residual block class"):
        R.ResNet(nn.Conv2d, [1, 1, 1, 1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="drop_rate"):
        R.ResNet(BasicBlock, [1, 1, 1, 1], drop_rate=1.0)
    with pytest.raises(ValueError, match="fixes block, layers"):
        R.resnet20(layers=[1, 1, 1])
