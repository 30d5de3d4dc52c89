"""Inception modules against the paper (Szegedy et al. 2015, fig. 2 and Table 1) and a functional reference."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.layers.inception import BasicConv2d, Inception, InceptionNaive, inception_batch_norm

# inception(3a) of Table 1: in 192; #1x1 64, #3x3 reduce 96, #3x3 128, #5x5 reduce 16, #5x5 32, pool proj 32
IN_3A = 192
WIDTHS_3A = (64, 96, 128, 16, 32, 32)


def _weights(m: nn.Module) -> int:
    """Convolution weights only (no biases, no norm parameters), as the paper counts."""
    return sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, nn.Conv2d))


def _conv_relu(x: torch.Tensor, block: BasicConv2d) -> torch.Tensor:
    c = block.conv
    return F.relu(F.conv2d(x, c.weight, c.bias, stride=c.stride, padding=c.padding))


def test_naive_output_is_concatenation_of_separate_branches() -> None:
    """Fig. 2a: 1x1, 3x3, 5x5 convs and a 3x3 max-pool on the same input, concatenated."""
    m = InceptionNaive(8, 4, 6, 3, norm_layer="none").eval()
    x = torch.randn(2, 8, 9, 7)
    b1 = F.relu(F.conv2d(x, m.branch1.conv.weight, m.branch1.conv.bias))
    b2 = F.relu(F.conv2d(x, m.branch2.conv.weight, m.branch2.conv.bias, padding=1))
    b3 = F.relu(F.conv2d(x, m.branch3.conv.weight, m.branch3.conv.bias, padding=2))
    b4 = F.max_pool2d(x, 3, stride=1, padding=1)
    expected = torch.cat([b1, b2, b3, b4], dim=1)
    out = m(x)
    assert m.out_channels == 4 + 6 + 3 + 8 == out.shape[1]
    assert out.shape == (2, 21, 9, 7)
    torch.testing.assert_close(out, expected)
    assert m.branch2.conv.kernel_size == (3, 3) and m.branch3.conv.kernel_size == (5, 5)


@pytest.mark.parametrize("k", [3, 5])
def test_reduction_module_matches_functional_reference(k: int) -> None:
    """Fig. 2b: 1x1 reductions before the 3x3/5x5 convs and a 1x1 projection after the pool."""
    m = Inception(10, 3, 4, 5, 2, 6, 7, branch3_kernel_size=k, norm_layer="none").eval()
    x = torch.randn(2, 10, 6, 5)
    b1 = _conv_relu(x, m.branch1)
    b2 = _conv_relu(_conv_relu(x, m.branch2[0]), m.branch2[1])
    b3 = _conv_relu(_conv_relu(x, m.branch3[0]), m.branch3[1])
    b4 = _conv_relu(F.max_pool2d(x, 3, stride=1, padding=1), m.branch4[1])
    out = m(x)
    torch.testing.assert_close(out, torch.cat([b1, b2, b3, b4], dim=1))
    assert m.out_channels == 3 + 5 + 6 + 7 == out.shape[1]
    assert m.branch3[1].conv.kernel_size == (k, k)


def test_default_norm_is_batchnorm_in_eval_with_running_stats() -> None:
    """Default BasicConv2d = conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU, checked with F.batch_norm."""
    b = BasicConv2d(4, 5, 3, padding=1)
    assert b.conv.bias is None and isinstance(b.bn, nn.BatchNorm2d) and b.bn.eps == 1e-3
    b.bn.running_mean.uniform_(-1, 1)
    b.bn.running_var.uniform_(0.5, 2)
    nn.init.normal_(b.bn.weight)
    b.eval()
    x = torch.randn(2, 4, 5, 5)
    y = F.conv2d(x, b.conv.weight, padding=1)
    y = F.batch_norm(y, b.bn.running_mean, b.bn.running_var, b.bn.weight, b.bn.bias, eps=1e-3)
    torch.testing.assert_close(b(x), F.relu(y))
    assert set(b.state_dict()) == {
        "conv.weight",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    }


def test_inception_3a_weights_match_paper_table_1() -> None:
    """Table 1 gives 159K parameters for inception(3a), with the paper's 5x5 kernels and K = 1024."""
    hand = (
        IN_3A * 64  # 1x1
        + IN_3A * 96
        + 96 * 3 * 3 * 128  # 3x3 reduce, 3x3
        + IN_3A * 16
        + 16 * 5 * 5 * 32  # 5x5 reduce, 5x5
        + IN_3A * 32  # pool proj
    )
    assert hand == 163_328
    paper = Inception(IN_3A, *WIDTHS_3A, branch3_kernel_size=5)
    assert _weights(paper) == hand
    assert _weights(paper) // 1024 == 159
    # torchvision's 3x3 in the "5x5" branch saves 16 * 32 * (25 - 9) weights
    assert _weights(Inception(IN_3A, *WIDTHS_3A)) == hand - 16 * 32 * 16


def test_reduction_is_cheaper_than_naive_for_same_branch_widths() -> None:
    """The point of fig. 2b: the 1x1 reductions cut the 3x3/5x5 cost (and the pool branch no longer grows)."""
    naive = InceptionNaive(IN_3A, 64, 128, 32)
    hand_naive = IN_3A * 64 + IN_3A * 9 * 128 + IN_3A * 25 * 32
    assert _weights(naive) == hand_naive == 387_072
    reduced = Inception(IN_3A, *WIDTHS_3A, branch3_kernel_size=5)
    assert _weights(reduced) < _weights(naive)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(reduced) < params(naive)
    # naive width grows by the whole input (416 channels) where the reduced module gives 256
    assert naive.out_channels == 64 + 128 + 32 + IN_3A == 416
    assert reduced.out_channels == 256


def test_torchvision_inception_names_and_shapes() -> None:
    from torchvision.models.googlenet import Inception as TVInception

    ours = Inception(IN_3A, *WIDTHS_3A).state_dict()
    theirs = TVInception(IN_3A, *WIDTHS_3A).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


@pytest.mark.parametrize("size", [1, 2, 7])
def test_spatial_size_is_kept(size: int) -> None:
    x = torch.randn(1, 16, size, size)
    assert Inception(16, 2, 3, 4, 2, 5, 6, branch3_kernel_size=5).eval()(x).shape == (1, 17, size, size)
    assert InceptionNaive(16, 2, 3, 4).eval()(x).shape == (1, 25, size, size)


def test_gradients_reach_every_branch() -> None:
    m = Inception(8, 2, 3, 4, 2, 5, 6)
    m(torch.randn(2, 8, 5, 5)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Inception(8, 0, 3, 4, 2, 5, 6), "ch1x1"),
        (lambda: Inception(8, 2, 3, 4, 2, 5, 6, branch3_kernel_size=4), "branch3_kernel_size"),
        (lambda: Inception(-1, 2, 3, 4, 2, 5, 6), "in_channels"),
        (lambda: InceptionNaive(8, 2, 3, 0), "ch5x5"),
        (lambda: BasicConv2d(3, 4, 3, padding=-1), "padding"),
        (lambda: BasicConv2d(3, 4, 3, norm_layer="batchh"), "unknown norm"),
    ],
)
def test_invalid_arguments_raise(build: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()  # type: ignore[operator]


def test_inception_batch_norm_eps() -> None:
    assert inception_batch_norm(7).eps == 1e-3 and inception_batch_norm(7).num_features == 7
