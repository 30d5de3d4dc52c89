"""SqueezeExcite against the paper's eqs. 2-4 (Hu et al. 2018), computed by hand per sample."""

import pytest
import torch
from torch import nn

from cnnkit.layers.se import SqueezeExcite, squeeze_excite


def _hand_se(
    x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """Per sample: z_c = mean_ij u_c(i,j); s = sigmoid(W2 relu(W1 z + b1) + b2); out_c = s_c u_c."""
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        z = torch.stack([x[n, c].sum() / (x.shape[2] * x.shape[3]) for c in range(x.shape[1])])
        h = torch.clamp(w1 @ z + b1, min=0)
        s = 1 / (1 + torch.exp(-(w2 @ h + b2)))
        for c in range(x.shape[1]):
            out[n, c] = s[c] * x[n, c]
    return out


def test_module_equals_hand_computation() -> None:
    torch.manual_seed(0)
    c, r = 32, 4
    se = SqueezeExcite(c, reduction=r)
    x = torch.randn(3, c, 5, 6)
    w1, b1 = se.fc1.weight.view(c // r, c), se.fc1.bias
    w2, b2 = se.fc2.weight.view(c, c // r), se.fc2.bias
    with torch.no_grad():
        torch.testing.assert_close(se(x), _hand_se(x, w1, b1, w2, b2))


def test_functional_equals_hand_computation() -> None:
    torch.manual_seed(0)
    c, hidden = 12, 3
    x = torch.randn(2, c, 4, 4)
    w1, b1, w2, b2 = torch.randn(hidden, c), torch.randn(hidden), torch.randn(c, hidden), torch.randn(c)
    expected = _hand_se(x, w1, b1, w2, b2)
    torch.testing.assert_close(squeeze_excite(x, w1, w2, b1, b2), expected)
    # 1x1 conv weights (out, in, 1, 1) are accepted too
    torch.testing.assert_close(
        squeeze_excite(x, w1[:, :, None, None], w2[:, :, None, None], b1, b2), expected
    )
    # and without biases it is the slide's sigmoid(W2 relu(W1 z)) * x
    zeros = torch.zeros
    torch.testing.assert_close(squeeze_excite(x, w1, w2), _hand_se(x, w1, zeros(hidden), w2, zeros(c)))


def test_output_is_a_channelwise_rescaling_in_0_1() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(16, reduction=4)
    x = torch.rand(2, 16, 7, 7) + 0.1  # positive, so the ratio is well defined
    with torch.no_grad():
        ratio = se(x) / x
    per_channel = ratio.flatten(2)
    torch.testing.assert_close(per_channel, per_channel[:, :, :1].expand_as(per_channel))
    assert (ratio > 0).all() and (ratio < 1).all()


@pytest.mark.parametrize(("c", "r"), [(64, 16), (256, 16), (2048, 16), (96, 8)])
def test_parameter_count_is_2c2_over_r_plus_biases(c: int, r: int) -> None:
    n = sum(p.numel() for p in SqueezeExcite(c, reduction=r).parameters())
    assert n == 2 * c * c // r + c // r + c  # paper sec. 4: 2C^2/r weights, plus C/r + C biases


def test_hidden_width_and_min_channels() -> None:
    assert SqueezeExcite(64, 16).hidden_channels == 4
    assert SqueezeExcite(8, 16).hidden_channels == 1  # floor(8/16) = 0, lifted to min_channels=1
    assert SqueezeExcite(8, 16, min_channels=4).hidden_channels == 4
    assert SqueezeExcite(64, 16, min_channels=8).fc1.out_channels == 8
    assert SqueezeExcite(100, 6.25).hidden_channels == 16  # float ratios work


def test_act_and_gate_are_injected() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(8, 2, act_layer="silu", gate_layer=nn.Hardsigmoid)
    assert isinstance(se.act, nn.SiLU) and isinstance(se.gate, nn.Hardsigmoid)
    x = torch.randn(2, 8, 3, 3)
    with torch.no_grad():
        s = nn.functional.hardsigmoid(se.fc2(nn.functional.silu(se.fc1(x.mean((2, 3), keepdim=True)))))
        torch.testing.assert_close(se(x), x * s)


def test_gradients_reach_both_fc_layers() -> None:
    se = SqueezeExcite(16, 4)
    se(torch.randn(2, 16, 4, 4)).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in se.parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 0}, "channels"),
        ({"channels": 16, "reduction": 0}, "reduction"),
        ({"channels": 16, "min_channels": 0}, "min_channels"),
        ({"channels": 16, "act_layer": "nope"}, "unknown activation"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SqueezeExcite(**kwargs)


def test_functional_rejects_mismatched_weights() -> None:
    with pytest.raises(ValueError, match="w1 of shape"):
        squeeze_excite(torch.randn(1, 8, 2, 2), torch.randn(2, 6), torch.randn(8, 2))
