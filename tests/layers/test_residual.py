"""Residual blocks against their definitions (He et al. 2016 a/b, Zagoruyko & Komodakis 2016, Xie et al. 2017).

Each block's output is recomputed by hand with torch.nn.functional and the block's own weights,
in the order the paper gives; the post-activation blocks are also checked against torchvision's.
"""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from cnnkit.layers.drop import DropPath
from cnnkit.layers.residual import (
    BasicBlock,
    Bottleneck,
    PadShortcut,
    PreActBasicBlock,
    PreActBottleneck,
)
from cnnkit.layers.se import SqueezeExcite


def _randomise_norms(module: nn.Module) -> None:
    """Give every BN non-trivial affine parameters and running statistics, so eval mode tests them."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) + 0.5
            m.bias.data = torch.randn(c, generator=g)
            m.running_mean = torch.randn(c, generator=g)
            m.running_var = torch.rand(c, generator=g) + 0.5


def bn(x: torch.Tensor, m: nn.Module) -> torch.Tensor:
    assert isinstance(m, nn.BatchNorm2d)
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def conv(x: torch.Tensor, m: nn.Module) -> torch.Tensor:
    assert isinstance(m, nn.Conv2d) and m.bias is None
    return F.conv2d(x, m.weight, None, m.stride, m.padding, m.dilation, m.groups)


def _projection(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


# ------------------------------------------------------------------ post-activation blocks


def test_basic_block_is_relu_of_branch_plus_identity() -> None:
    """He et al. 2016, eq. 1 and fig. 2: y = relu(bn2(conv2(relu(bn1(conv1 x)))) + x)."""
    block = BasicBlock(8, 8).eval()
    _randomise_norms(block)
    x = torch.randn(2, 8, 9, 9)
    expected = F.relu(bn(conv(F.relu(bn(conv(x, block.conv1), block.bn1)), block.conv2), block.bn2) + x)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_basic_block_projection_shortcut() -> None:
    """Option B (sec. 3.3): y = relu(F(x) + W_s x) when the shape changes."""
    block = BasicBlock(4, 8, stride=2, downsample=_projection(4, 8, 2)).eval()
    _randomise_norms(block)
    x = torch.randn(2, 4, 9, 9)
    branch = bn(conv(F.relu(bn(conv(x, block.conv1), block.bn1)), block.conv2), block.bn2)
    assert block.downsample is not None
    shortcut = bn(conv(x, block.downsample[0]), block.downsample[1])
    with torch.no_grad():
        out = block(x)
    assert out.shape == (2, 8, 5, 5)
    torch.testing.assert_close(out, F.relu(branch + shortcut))


def test_bottleneck_definition_strides_in_3x3_and_groups() -> None:
    """1x1 - 3x3 (strided, grouped: ResNeXt fig. 3c) - 1x1, relu after the addition."""
    block = Bottleneck(16, 8, stride=2, downsample=_projection(16, 32, 2), groups=4, base_width=16).eval()
    _randomise_norms(block)
    # width = int(planes * base_width / 64) * groups = int(8 * 16 / 64) * 4 = 8 (Xie et al. table 1 rule)
    assert block.conv1.out_channels == 8 and block.conv2.groups == 4 and block.conv3.out_channels == 32
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    x = torch.randn(2, 16, 8, 8)
    out = F.relu(bn(conv(x, block.conv1), block.bn1))
    out = F.relu(bn(conv(out, block.conv2), block.bn2))
    out = bn(conv(out, block.conv3), block.bn3)
    assert block.downsample is not None
    expected = F.relu(out + bn(conv(x, block.downsample[0]), block.downsample[1]))
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_bottleneck_dilation_keeps_size() -> None:
    block = Bottleneck(32, 8, dilation=2).eval()
    assert block.conv2.dilation == (2, 2) and block.conv2.padding == (2, 2)
    assert block(torch.randn(1, 32, 7, 7)).shape == (1, 32, 7, 7)


@pytest.mark.parametrize(
    ("ours", "theirs", "args"),
    [
        (BasicBlock, tv_resnet.BasicBlock, (16, 32, 2)),
        (Bottleneck, tv_resnet.Bottleneck, (64, 32, 2)),
        (Bottleneck, tv_resnet.Bottleneck, (128, 32, 1)),
    ],
)
def test_post_activation_blocks_equal_torchvision(
    ours: type, theirs: type, args: tuple[int, int, int]
) -> None:
    inplanes, planes, stride = args
    out = planes * ours.expansion
    assert ours.expansion == theirs.expansion
    groups, width = (1, 64) if ours is BasicBlock else (8, 8)
    ds = _projection(inplanes, out, stride) if (stride != 1 or inplanes != out) else None
    tv = theirs(inplanes, planes, stride, ds, groups, width).eval()
    _randomise_norms(tv)
    ds2 = _projection(inplanes, out, stride) if ds is not None else None
    mine = ours(inplanes, planes, stride, ds2, groups, width).eval()
    assert [(k, v.shape) for k, v in mine.state_dict().items()] == [
        (k, v.shape) for k, v in tv.state_dict().items()
    ]
    mine.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, inplanes, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), tv(x))


def test_plain_block_has_no_addition() -> None:
    """shortcut=False: y = relu(bn2(conv2(relu(bn1(conv1 x))))), the plain net of He et al. fig. 4."""
    block = BasicBlock(8, 8, shortcut=False).eval()
    _randomise_norms(block)
    x = torch.randn(2, 8, 6, 6)
    expected = F.relu(bn(conv(F.relu(bn(conv(x, block.conv1), block.bn1)), block.conv2), block.bn2))
    with torch.no_grad():
        out = block(x)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, F.relu(expected + x))  # the assertion above can tell the two apart
    # a plain block may change shape without any downsample
    plain = Bottleneck(16, 8, stride=2, shortcut=False)
    assert plain(torch.randn(2, 16, 6, 6)).shape == (2, 32, 3, 3)


def test_plain_block_rejects_shortcut_extras() -> None:
    with pytest.raises(ValueError, match="plain block"):
        BasicBlock(4, 8, stride=2, downsample=_projection(4, 8, 2), shortcut=False)
    with pytest.raises(ValueError, match="drop_path_rate"):
        BasicBlock(8, 8, drop_path_rate=0.1, shortcut=False)


# ------------------------------------------------------------------ pre-activation blocks


def test_preact_basic_block_ordering() -> None:
    """He et al. 2016b, fig. 4e: y = x + conv2(relu(bn2(conv1(relu(bn1 x))))); nothing after the addition."""
    block = PreActBasicBlock(8, 8).eval()
    _randomise_norms(block)
    x = torch.randn(2, 8, 7, 7)
    expected = x + conv(F.relu(bn(conv(F.relu(bn(x, block.bn1)), block.conv1), block.bn2)), block.conv2)
    with torch.no_grad():
        out = block(x)
    torch.testing.assert_close(out, expected)
    assert (out < 0).any()  # no ReLU after the addition


def test_preact_projection_takes_preactivated_input() -> None:
    """The 1x1 projection (bare conv) sees relu(bn1 x), as the authors' preresnet.lua and the WRN code."""
    proj = nn.Conv2d(4, 8, 1, 2, bias=False)
    block = PreActBasicBlock(4, 8, stride=2, downsample=proj).eval()
    _randomise_norms(block)
    x = torch.randn(2, 4, 9, 9)
    a = F.relu(bn(x, block.bn1))
    expected = conv(F.relu(bn(conv(a, block.conv1), block.bn2)), block.conv2) + conv(a, proj)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_preact_bottleneck_ordering() -> None:
    block = PreActBottleneck(32, 8).eval()
    _randomise_norms(block)
    x = torch.randn(2, 32, 5, 5)
    out = conv(F.relu(bn(x, block.bn1)), block.conv1)
    out = conv(F.relu(bn(out, block.bn2)), block.conv2)
    out = conv(F.relu(bn(out, block.bn3)), block.conv3)
    with torch.no_grad():
        torch.testing.assert_close(block(x), out + x)


def test_preact_block_dropout_between_convs() -> None:
    """Wide ResNets (sec. 2.4): dropout after the first conv's BN-ReLU, before the second conv."""
    block = PreActBasicBlock(8, 8, drop_rate=0.3).eval()
    _randomise_norms(block)
    x = torch.randn(4, 8, 6, 6)
    h = F.relu(bn(conv(F.relu(bn(x, block.bn1)), block.conv1), block.bn2))
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + conv(h, block.conv2))  # eval: no dropout
        block.dropout.train()
        seen: list[torch.Tensor] = []
        block.conv2.register_forward_hook(lambda m, i, o: seen.append(i[0]))
        out = block(x)
    masked = seen[0]
    # inverted dropout: every unit is either 0 or h / (1 - p)
    kept = torch.isclose(masked, h / 0.7)
    assert bool((kept | (masked == 0)).all())
    dropped_frac = ((masked == 0) & (h > 0)).sum() / (h > 0).sum()
    assert 0.2 < float(dropped_frac) < 0.4
    torch.testing.assert_close(out, x + conv(masked, block.conv2))


# ------------------------------------------------------------------ shortcuts, drop-path, attention


def test_pad_shortcut_is_option_a() -> None:
    """Option A: identity on the subsampled input, zero channels appended; no parameters."""
    pad = PadShortcut(3, 8, stride=2)
    x = torch.randn(2, 3, 7, 7)
    out = pad(x)
    assert out.shape == (2, 8, 4, 4) and sum(p.numel() for p in pad.parameters()) == 0
    torch.testing.assert_close(out[:, :3], x[:, :, 0::2, 0::2])
    assert (out[:, 3:] == 0).all()
    with pytest.raises(ValueError, match="only add channels"):
        PadShortcut(8, 4)


def test_drop_path_zero_equals_no_drop() -> None:
    torch.manual_seed(0)
    plain = BasicBlock(8, 8)
    with_dp = BasicBlock(8, 8, drop_path_rate=0.0)
    with_dp.load_state_dict(plain.state_dict())
    x = torch.randn(4, 8, 5, 5)
    assert isinstance(with_dp.drop_path, nn.Identity)
    torch.testing.assert_close(with_dp.train()(x), plain.train()(x))
    # a nonzero rate changes nothing in eval mode
    dp = BasicBlock(8, 8, drop_path_rate=0.5)
    dp.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(dp.eval()(x), plain.eval()(x))


def test_drop_path_drops_whole_branch_per_sample() -> None:
    """Huang et al. 2016: a dropped sample leaves relu(shortcut) = relu(x); a kept one relu(x + F(x)/(1-p))."""
    block = BasicBlock(8, 8, drop_path_rate=0.5).eval()
    _randomise_norms(block)
    block.drop_path.train()  # BN in eval mode, drop-path active
    assert isinstance(block.drop_path, DropPath)
    x = torch.randn(64, 8, 4, 4)
    branch = bn(conv(F.relu(bn(conv(x, block.conv1), block.bn1)), block.conv2), block.bn2)
    with torch.no_grad():
        out = block(x)
    dropped = torch.isclose(out, F.relu(x), atol=1e-6).flatten(1).all(1)
    kept = torch.isclose(out, F.relu(x + branch / 0.5), atol=1e-5).flatten(1).all(1)
    assert bool((dropped ^ kept).all())
    assert 10 < int(dropped.sum()) < 54


def test_attn_layer_applies_to_branch_before_addition() -> None:
    """attn_layer(C) scales the branch output; a zero gate leaves relu(shortcut)."""

    class Zero(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.channels = channels

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0

    x = torch.randn(2, 32, 5, 5)
    block = Bottleneck(32, 8, attn_layer=Zero).eval()
    assert isinstance(block.se, Zero) and block.se.channels == 32
    torch.testing.assert_close(block(x), F.relu(x))
    pre = PreActBasicBlock(8, 8, attn_layer=Zero).eval()
    x8 = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(pre(x8), x8)


def test_se_attn_layer_stored_as_se() -> None:
    """SE-ResNet (Hu et al. 2018, fig. 3): SE on the branch; adds 2 C^2 / r weights + C/r + C biases."""
    base = Bottleneck(256, 64)
    se = Bottleneck(256, 64, attn_layer=partial(SqueezeExcite, reduction=16)).eval()
    assert isinstance(se.se, SqueezeExcite)
    extra = sum(p.numel() for p in se.parameters()) - sum(p.numel() for p in base.parameters())
    c = 256
    assert extra == 2 * c * c // 16 + c // 16 + c
    assert {k for k in se.state_dict() if not k.startswith("se.")} == set(base.state_dict())
    se = se.eval()
    _randomise_norms(se)
    x = torch.randn(2, 256, 4, 4)
    out = F.relu(bn(conv(x, se.conv1), se.bn1))
    out = F.relu(bn(conv(out, se.conv2), se.bn2))
    out = bn(conv(out, se.conv3), se.bn3)
    with torch.no_grad():
        torch.testing.assert_close(se(x), F.relu(se.se(out) + x))


def test_zero_init_last_makes_block_identity() -> None:
    x = torch.randn(2, 16, 5, 5)
    for block in (BasicBlock(16, 16), Bottleneck(16, 4)):
        block.zero_init_last()
        torch.testing.assert_close(block.eval()(x), F.relu(x))
    for block in (PreActBasicBlock(16, 16), PreActBottleneck(16, 4)):
        block.zero_init_last()
        torch.testing.assert_close(block.eval()(x), x)


def test_act_layer_and_norm_layer_by_name() -> None:
    block = BasicBlock(8, 8, norm_layer="gn", act_layer="swish")
    assert (
        isinstance(block.bn1, nn.GroupNorm)
        and isinstance(block.act1, nn.SiLU)
        and isinstance(block.act2, nn.SiLU)
    )
    assert block(torch.randn(2, 8, 4, 4)).shape == (2, 8, 4, 4)


# ------------------------------------------------------------------ argument checks


@pytest.mark.parametrize("cls", [BasicBlock, PreActBasicBlock])
def test_basic_blocks_reject_groups(cls: type) -> None:
    with pytest.raises(ValueError, match="groups=1 and base_width=64"):
        cls(64, 64, groups=32, base_width=4)
    with pytest.raises(ValueError, match="dilation"):
        cls(64, 64, dilation=2)


@pytest.mark.parametrize("cls", [BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck])
def test_bad_arguments_raise(cls: type) -> None:
    out = 16 * cls.expansion
    with pytest.raises(ValueError, match="planes >= 1"):
        cls(out, 0)
    with pytest.raises(ValueError, match="stride >= 1"):
        cls(out, 16, stride=0)
    with pytest.raises(ValueError, match="drop_path_rate"):
        cls(out, 16, drop_path_rate=1.0)
    with pytest.raises(ValueError, match="drop_rate"):
        cls(out, 16, drop_rate=-0.1)
    with pytest.raises(ValueError, match="pass downsample="):
        cls(out, 16, stride=2)
    with pytest.raises(ValueError, match="pass downsample="):
        cls(out + 1, 16)


def test_bottleneck_rejects_empty_groups() -> None:
    with pytest.raises(ValueError, match="fewer than one channel per group"):
        Bottleneck(256, 1, groups=64, base_width=4, downsample=nn.Identity())
