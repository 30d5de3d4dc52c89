"""DenseLayer / DenseBlock / Transition against the paper's definitions and torchvision's DenseNet parts."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import densenet as tv_densenet

from cnnkit.layers.dense import DenseBlock, DenseLayer, Transition


def _randomise_norms(module: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode outputs test them too."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g))


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    # eval-mode BN written out: (x - mu) / sqrt(var + eps) * gamma + beta, per channel
    shape = (1, -1, 1, 1)
    mu, var = bn.running_mean.view(shape), bn.running_var.view(shape)
    return (x - mu) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def _h_reference(layer: DenseLayer, inputs: list[torch.Tensor]) -> torch.Tensor:
    """H_l([x_0..x_{l-1}]) = conv3x3(relu(BN(conv1x1(relu(BN([x_0..x_{l-1}])))))), paper sec. 3 (DenseNet-B)."""
    x = torch.cat(inputs, 1)
    x = F.conv2d(F.relu(_bn(x, layer.norm1)), layer.conv1.weight)
    return F.conv2d(F.relu(_bn(x, layer.norm2)), layer.conv2.weight, padding=1)


def test_dense_layer_is_bottleneck_on_the_concatenation() -> None:
    torch.manual_seed(0)
    k0, k = 5, 3
    layer = DenseLayer(k0 + 2 * k, growth_rate=k, bn_size=4).eval()
    _randomise_norms(layer)
    xs = [torch.randn(2, k0, 6, 7), torch.randn(2, k, 6, 7), torch.randn(2, k, 6, 7)]
    with torch.no_grad():
        out = layer(xs)
        assert out.shape == (2, k, 6, 7)  # only the k new feature maps x_l
        torch.testing.assert_close(out, _h_reference(layer, xs))
        # a list [x_0, x_1, x_2] and the concatenated tensor give the same x_l
        torch.testing.assert_close(layer(torch.cat(xs, 1)), out)
    assert layer.conv1.out_channels == 4 * k  # bottleneck width bn_size * k


def test_dense_layer_matches_torchvision() -> None:
    torch.manual_seed(0)
    ours = DenseLayer(16, growth_rate=8, bn_size=4)
    theirs = tv_densenet._DenseLayer(16, growth_rate=8, bn_size=4, drop_rate=0.0)
    _randomise_norms(theirs)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in theirs_sd.items()}
    ours.load_state_dict(theirs_sd, strict=True)
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


def test_dense_layer_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    layer = DenseLayer(4, growth_rate=64, drop_rate=0.5)
    x = torch.randn(2, 4, 8, 8)
    layer.train()
    out = layer(x)
    zero_frac = (out == 0).float().mean().item()
    assert 0.35 < zero_frac < 0.75  # ~half dropped (plus nothing else is exactly zero)
    layer.eval()
    with torch.no_grad():
        assert (layer(x) == 0).float().mean().item() < 0.01


def test_dense_block_concatenates_every_earlier_output() -> None:
    """x_l = H_l([x_0, ..., x_{l-1}]); the block returns [x_0, ..., x_L] with k0 + L k channels."""
    torch.manual_seed(0)
    k0, k, n_layers = 6, 4, 5
    block = DenseBlock(n_layers, k0, growth_rate=k, bn_size=2).eval()
    _randomise_norms(block)
    x0 = torch.randn(2, k0, 5, 5)
    with torch.no_grad():
        out = block(x0)
        assert out.shape == (2, k0 + n_layers * k, 5, 5)
        assert block.out_channels == k0 + n_layers * k
        # slow loop reference with the paper's formula
        feats = [x0]
        for i in range(1, n_layers + 1):
            feats.append(_h_reference(block[f"denselayer{i}"], feats))
        torch.testing.assert_close(out, torch.cat(feats, 1))
        torch.testing.assert_close(out[:, :k0], x0, rtol=0, atol=0)  # x_0 is passed through unchanged
    # layer l reads l earlier outputs (x_0..x_{l-1}): sum_l l = L(L+1)/2 direct connections
    inputs_per_layer = [(block[f"denselayer{i}"].in_channels - k0) // k + 1 for i in range(1, n_layers + 1)]
    assert inputs_per_layer == list(range(1, n_layers + 1))
    assert sum(inputs_per_layer) == n_layers * (n_layers + 1) // 2


def test_dense_block_every_output_depends_on_every_earlier_one() -> None:
    """The L(L+1)/2 connections are real: x_l has a nonzero gradient w.r.t. each x_j, j < l."""
    torch.manual_seed(0)
    k0, k, n_layers = 3, 2, 4
    block = DenseBlock(n_layers, k0, growth_rate=k).eval()
    x0 = torch.randn(1, k0, 4, 4)
    with torch.no_grad():
        full = block(x0)
    feats = [x0.clone().requires_grad_(True)]
    for i in range(1, n_layers + 1):
        feats.append(block[f"denselayer{i}"](feats))
    torch.testing.assert_close(torch.cat(feats, 1).detach(), full)
    connections = 0
    for idx in range(1, n_layers + 1):
        grads = torch.autograd.grad(feats[idx].sum(), feats[:idx], retain_graph=True)
        connections += sum(int(g.abs().sum() > 0) for g in grads)
    assert connections == n_layers * (n_layers + 1) // 2


def test_dense_block_matches_torchvision() -> None:
    torch.manual_seed(0)
    ours = DenseBlock(3, 8, growth_rate=4, bn_size=4)
    theirs = tv_densenet._DenseBlock(3, 8, bn_size=4, growth_rate=4, drop_rate=0.0)
    _randomise_norms(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


def test_memory_efficient_gives_same_values_and_gradients() -> None:
    torch.manual_seed(0)
    plain = DenseBlock(3, 4, growth_rate=3)
    ckpt = DenseBlock(3, 4, growth_rate=3, memory_efficient=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 5, 5)
    outs = []
    for block in (plain, ckpt):
        out = block(x)
        out.pow(2).sum().backward()
        outs.append((out.detach(), [p.grad.clone() for p in block.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for g1, g2 in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize(
    ("m", "theta", "expected"), [(64, 0.5, 32), (65, 0.5, 32), (30, 1.0, 30), (10, 0.33, 3)]
)
def test_transition_compresses_to_floor_theta_m(m: int, theta: float, expected: int) -> None:
    trans = Transition(m, theta).eval()
    x = torch.randn(1, m, 8, 9)
    with torch.no_grad():
        out = trans(x)
    assert trans.out_channels == expected
    assert out.shape == (1, expected, 4, 4)  # 2x2/2 average pooling floors odd sizes


def test_transition_matches_definition_and_torchvision() -> None:
    torch.manual_seed(0)
    ours = Transition(12, 0.5)
    theirs = tv_densenet._Transition(12, 6)
    _randomise_norms(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 12, 6, 6)
    with torch.no_grad():
        expected = F.avg_pool2d(F.conv2d(F.relu(_bn(x, theirs.norm)), theirs.conv.weight), 2)
        torch.testing.assert_close(ours(x), expected)
        torch.testing.assert_close(ours(x), theirs(x))


def test_norm_and_act_layers_are_injected() -> None:
    layer = DenseLayer(8, 4, norm_layer="gn", act_layer="silu")
    assert isinstance(layer.norm1, nn.GroupNorm) and isinstance(layer.relu2, nn.SiLU)
    block = DenseBlock(2, 8, 4, norm_layer=nn.InstanceNorm2d, act_layer=nn.GELU)
    assert isinstance(block["denselayer2"].norm2, nn.InstanceNorm2d)
    trans = Transition(8, norm_layer="none", act_layer="identity")
    assert isinstance(trans.norm, nn.Identity) and isinstance(trans.relu, nn.Identity)
    assert block(torch.randn(2, 8, 4, 4)).shape == (2, 16, 4, 4)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: DenseLayer(0, 4), "in_channels"),
        (lambda: DenseLayer(8, 0), "growth_rate"),
        (lambda: DenseLayer(8, 4, bn_size=0), "bn_size"),
        (lambda: DenseLayer(8, 4, drop_rate=1.0), "drop_rate"),
        (lambda: DenseLayer(8, 4, norm_layer="bogus"), "unknown norm"),
        (lambda: DenseBlock(0, 8, 4), "num_layers"),
        (lambda: DenseBlock(2, 8, 2.5), "growth_rate"),
        (lambda: Transition(8, 0.0), "compression"),
        (lambda: Transition(8, 1.5), "compression"),
        (lambda: Transition(1, 0.5), "raise compression"),
    ],
)
def test_bad_arguments_raise(build, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        build()
