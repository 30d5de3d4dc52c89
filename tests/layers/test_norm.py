"""Normalisation layers against the lecture's definition: (x - mean) / sqrt(var + eps) over the right axes.

Batch norm over (N, H, W), layer norm over (C, H, W), instance norm over (H, W), group norm over
(C/G, H, W) (Ioffe & Szegedy 2015; Ba et al. 2016; Ulyanov et al. 2016; Wu & He 2018, fig. 2), with
the biased (1/m) variance of Ioffe & Szegedy's algorithm 1. The slide's example: M = 128 channels,
|B| = 32 samples, D_F = 64.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.layers.norm import NORMS, LayerNorm2d, get_norm, get_norm_layer, group_norm

M, BATCH = 128, 32  # the slide's channels and mini-batch size
EPS = 1e-5


def _input(spatial: int, seed: int = 0) -> torch.Tensor:
    """Activations whose mean and scale differ per sample and per channel, so wrong axes show."""
    gen = torch.Generator().manual_seed(seed)
    shape = (BATCH, M, spatial, spatial)
    scale = 1 + torch.rand(BATCH, M, 1, 1, generator=gen)
    offset = 3 * torch.randn(BATCH, M, 1, 1, generator=gen)
    return torch.randn(shape, generator=gen) * scale + offset


def _standardise(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS)


def _randomise_affine(module: nn.Module, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.weight.copy_(torch.rand(M, generator=gen) + 0.5)  # type: ignore[operator]
        module.bias.copy_(torch.randn(M, generator=gen))  # type: ignore[operator]
    return module.weight.detach().view(1, M, 1, 1), module.bias.detach().view(1, M, 1, 1)  # type: ignore[operator]


def test_batch_norm_statistics_live_in_r_m_on_the_slide_example() -> None:
    x = _input(spatial=64)  # M=128, |B|=32, D_F=64
    bn = get_norm("batch", M)
    assert isinstance(bn, nn.BatchNorm2d)
    bn.momentum = 1.0  # running stats := this batch's stats
    bn.train()
    out = bn(x)
    mean = x.mean(dim=(0, 2, 3))
    assert bn.running_mean is not None and bn.running_var is not None
    assert bn.running_mean.shape == (M,)  # mu in R^128
    assert bn.running_var.shape == (M,)  # sigma^2 in R^128
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
    # torch stores the unbiased variance for inference; training normalises with the biased one
    torch.testing.assert_close(bn.running_var, x.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, _standardise(x, (0, 2, 3)), rtol=1e-4, atol=1e-4)


def test_batch_norm_eval_uses_running_statistics_and_affine() -> None:
    x = _input(spatial=8, seed=2)
    bn = get_norm("bn", M)
    bn.momentum = 1.0
    bn.train()(x)
    gamma, beta = _randomise_affine(bn)
    bn.eval()
    x_test = x[:1]  # a test batch of one sample, as on the slide
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=True, keepdim=True)
    expected = gamma * (x_test - mean) / torch.sqrt(var + EPS) + beta
    torch.testing.assert_close(bn(x_test), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("layer", (1, 2, 3)),  # per sample over (C, H, W)
        ("ln", (1, 2, 3)),
        ("instance", (2, 3)),  # per sample and channel over (H, W)
        ("in", (2, 3)),
    ],
)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_per_sample_norms_match_manual_reference(name: str, dims: tuple[int, ...], mode: str) -> None:
    x = _input(spatial=8, seed=3)
    norm = get_norm(name, M)
    norm.train(mode == "train")
    gamma, beta = _randomise_affine(norm)  # the per-channel scale and shift of each method
    expected = gamma * _standardise(x, dims) + beta
    torch.testing.assert_close(norm(x), expected, rtol=1e-4, atol=1e-4)
    # per-sample norms do not mix samples: one sample alone gives the same result
    torch.testing.assert_close(norm(x[3:4]), expected[3:4], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["group", "gn"])
def test_group_norm_normalises_over_channel_groups(name: str) -> None:
    x = _input(spatial=8, seed=4)
    norm = get_norm(name, M)
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 32  # Wu & He's G = 32
    gamma, beta = _randomise_affine(norm)
    groups = norm.num_groups
    grouped = x.view(BATCH, groups, M // groups, *x.shape[2:])  # (N, G, C/G, H, W)
    expected = _standardise(grouped, (2, 3, 4)).view_as(x)
    torch.testing.assert_close(norm(x), gamma * expected + beta, rtol=1e-4, atol=1e-4)


def test_layer_norm_2d_is_group_norm_with_one_group() -> None:
    norm = LayerNorm2d(M)
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 1 and norm.weight.shape == (M,)
    with pytest.raises(ValueError):
        LayerNorm2d(0)


@pytest.mark.parametrize(("channels", "groups"), [(128, 32), (64, 32), (48, 16), (24, 8), (3, 1), (32, 32)])
def test_group_norm_group_count(channels: int, groups: int) -> None:
    norm = group_norm(channels)
    assert norm.num_groups == groups and channels % norm.num_groups == 0


def test_group_norm_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_channels"):
        group_norm(0)
    with pytest.raises(ValueError, match="num_groups"):
        group_norm(16, num_groups=0)


def test_none_is_identity() -> None:
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(get_norm("none", 4)(x), x)
    assert torch.equal(get_norm("identity", 4)(x), x)


def test_aliases_resolve_to_the_same_factory() -> None:
    for alias, name in [("bn", "batch"), ("ln", "layer"), ("in", "instance"), ("gn", "group")]:
        assert get_norm_layer(alias) is NORMS[name]
        assert get_norm_layer(alias.upper()) is NORMS[name]


def test_callables_pass_through() -> None:
    assert get_norm_layer(nn.BatchNorm2d) is nn.BatchNorm2d
    norm = get_norm(lambda c: nn.GroupNorm(2, c), 8)
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 2


def test_unknown_norm_names_raise_with_close_match() -> None:
    with pytest.raises(ValueError, match=r"did you mean.*batch") as info:
        get_norm("bacth", 16)
    assert "choose from" in str(info.value)
    with pytest.raises(ValueError, match="unknown norm"):
        get_norm_layer("whitening")
    with pytest.raises(ValueError, match="channels >= 1"):
        get_norm("batch", 0)
