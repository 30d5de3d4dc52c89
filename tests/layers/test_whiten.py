"""Patch whitening (``--whiten``): the first convolution decorrelates its input's patches.

The definition: with W the filters, the layer's outputs on the patches have covariance
W C W^T = I (C the patches' covariance, uncentred as airbench estimates it), up to the eps
added to each eigenvalue; the second half of the filters are the first half negated (Jordan
2024, sec. 3.2); the weights do not train.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.layers.init import first_conv, whiten_conv_


def _correlated_images(n: int = 400, c: int = 1, size: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, size, size, generator=g)
    return F.avg_pool2d(x, 3, stride=1, padding=1) * 3 + 0.5  # smooth: neighbouring pixels correlate


def _patch_outputs(conv: nn.Conv2d, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.conv2d(images, conv.weight).transpose(0, 1).flatten(1)  # (out channels, samples)


@pytest.mark.parametrize("c, k, out", [(1, 3, 18), (1, 3, 16), (3, 2, 24)])
def test_outputs_are_decorrelated_with_unit_variance(c: int, k: int, out: int) -> None:
    images = _correlated_images(c=c)
    conv = nn.Conv2d(c, out, k, bias=False)
    eigenvalues = whiten_conv_(conv, images, eps=1e-8)
    half = (out + 1) // 2
    y = _patch_outputs(conv, images)[:half]
    cov = y @ y.T / y.shape[1]
    torch.testing.assert_close(cov, torch.eye(half), atol=2e-3, rtol=0)
    assert eigenvalues.shape == (c * k * k,) and bool((eigenvalues[:-1] >= eigenvalues[1:]).all())
    # the uncorrelated raw patches are far from white: the layer did the work
    raw = F.unfold(images, k).transpose(1, 2).reshape(-1, c * k * k)
    assert (raw.T @ raw / len(raw) - torch.eye(c * k * k)).abs().max() > 0.5


def test_second_half_negates_the_first_and_eps_damps_small_eigenvalues() -> None:
    images = _correlated_images()
    conv = nn.Conv2d(1, 18, 3)
    eigenvalues = whiten_conv_(conv, images, eps=0.5)
    w = conv.weight.detach().flatten(1)
    torch.testing.assert_close(w[9:], -w[:9])
    # each filter is a unit eigenvector divided by sqrt(lambda + eps)
    torch.testing.assert_close(w[:9].norm(dim=1), (eigenvalues + 0.5).rsqrt(), rtol=1e-4, atol=1e-6)


def test_weights_are_frozen_and_the_bias_trains() -> None:
    conv = nn.Conv2d(1, 8, 3, padding=1)
    whiten_conv_(conv, _correlated_images())
    before = conv.weight.detach().clone()
    opt = torch.optim.SGD([p for p in conv.parameters() if p.requires_grad], lr=0.1)
    conv(torch.randn(4, 1, 12, 12)).square().mean().backward()
    opt.step()
    assert not conv.weight.requires_grad and conv.weight.grad is None
    assert torch.equal(conv.weight.detach(), before)
    assert conv.bias is not None and conv.bias.grad is not None


def test_too_many_channels_and_wrong_images_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="at most 18 output channels; this first convolution has 32"):
        whiten_conv_(nn.Conv2d(1, 32, 3), _correlated_images())
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\)"):
        whiten_conv_(nn.Conv2d(3, 8, 3), _correlated_images(c=1))
    with pytest.raises(ValueError, match="grouped"):
        whiten_conv_(nn.Conv2d(4, 8, 3, groups=2), _correlated_images(c=4))


def test_first_conv_is_the_stem() -> None:
    from cnnkit.models.registry import create_model

    fmnet = create_model("fmnet", num_classes=10, in_chans=1)
    resnet = create_model("resnet18", num_classes=10, in_chans=1)
    assert first_conv(fmnet) is fmnet.stem[0] and first_conv(resnet) is resnet.conv1
    with pytest.raises(ValueError, match="no 2-d convolution"):
        first_conv(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
