"""Batch-norm folding (cnnkit.deploy.fuse): the folded model computes what the eval-mode model
computes; the folded weights equal torch's own ``fuse_conv_bn_eval``; only foldable pairs fold.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from cnnkit.deploy.decomposition import decompose
from cnnkit.deploy.fuse import fold_conv_bn, foldable_pairs, fuse_bn
from cnnkit.models.registry import create_model


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial statistics and affine parameters (fresh ones would make BN nearly the identity)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) * 2 - 1)  # negative scales too
                    m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def _n_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_fold_matches_torchs_fuse_conv_bn_eval() -> None:
    conv = nn.Conv2d(3, 5, 3, bias=True)
    bn = _randomise_bn(nn.Sequential(nn.BatchNorm2d(5)))[0].eval()
    ref = fuse_conv_bn_eval(conv.eval(), bn)
    mine = nn.Conv2d(3, 5, 3, bias=True)
    mine.load_state_dict(conv.state_dict())
    fold_conv_bn(mine, bn)
    torch.testing.assert_close(mine.weight, ref.weight)
    torch.testing.assert_close(mine.bias, ref.bias)


# name, BatchNorm2d layers expected to stay (those not right after a conv)
ZOO = [
    ("resnet20", 0),
    ("resnet18", 0),
    ("vgg11_bn", 0),
    ("mobilenet_v1", 0),
    ("shufflenet_v1_g3", 0),
    ("fmnet", 3),  # conv -> max-pool -> norm: max does not commute with a negative scale
    ("preresnet18", 9),  # pre-activation: bn -> relu -> conv, 8 blocks' first norm and the final one
]


@pytest.mark.parametrize(("name", "kept"), ZOO)
def test_fused_zoo_models_match_eval_mode(name: str, kept: int) -> None:
    model = _randomise_bn(create_model(name, num_classes=10, in_chans=1, small_input=True)).eval()
    fused = fuse_bn(model)
    assert _n_bn(fused) == kept
    assert len(fused.fused_pairs) == _n_bn(model) - kept
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        want, got = model(x), fused(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert type(fused) is type(model)


def test_input_is_untouched_and_stays_in_training_mode() -> None:
    model = _randomise_bn(create_model("resnet20", num_classes=10, in_chans=1, small_input=True)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_bn(model)
    assert model.training and not fused.training
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_pairs_that_cannot_fold_are_left() -> None:
    class Branchy(nn.Module):
        """conv1's output feeds its norm *and* a skip; conv2 -> pool -> norm; bn3 has no running stats."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.conv2, self.pool, self.bn2 = (
                nn.Conv2d(4, 4, 3, padding=1),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(4),
            )
            self.conv3, self.bn3 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)
            self.conv4, self.bn4 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv1(x)
            y = self.bn1(y) + y
            y = self.bn2(self.pool(self.conv2(y)))
            return self.bn4(self.conv4(self.bn3(self.conv3(y))))

    model = _randomise_bn(Branchy()).eval()
    assert foldable_pairs(model) == [("conv4", "bn4")]
    fused = fuse_bn(model)
    assert isinstance(fused.bn4, nn.Identity) and isinstance(fused.bn1, nn.BatchNorm2d)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)


def test_decomposed_then_fused_folds_into_the_last_factor() -> None:
    model = _randomise_bn(create_model("resnet20", num_classes=10, in_chans=1, small_input=True)).eval()
    dec = decompose(model, "spatial_separable", rank=8).eval()
    fused = fuse_bn(dec)
    assert _n_bn(fused) == 0
    assert fused.layer1[0].conv1.horizontal.bias is not None  # bn1 went into the horizontal conv
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), dec(x), rtol=1e-4, atol=1e-4)


def test_untraceable_models_raise_a_clear_error() -> None:
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = -x
            return self.bn(self.conv(x))

    with pytest.raises(ValueError, match=r"torch\.fx cannot trace"):
        fuse_bn(Dynamic())
