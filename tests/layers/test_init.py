"""Initialisation schemes against the lecture's gradients and the papers' variance formulas.

- Zero / same-value init: the lecture's two-layer example y = W1 x, z = W2 y with dL/dz = k.
- Xavier (Glorot & Bengio 2010): Var[w] = gain^2 * 2 / (fan_in + fan_out).
- Kaiming (He et al. 2015): Var[w] = 2 / fan_in (forward) or 2 / fan_out (backward) for ReLU.
Sample statistics are compared with a 5-sigma tolerance from the sampling distribution.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnkit.layers.init import INIT_SCHEMES, init_weights

K = 0.7  # dL/dz in the lecture's example
X = torch.tensor([[1.5, -2.0]])  # x = (x1, x2)


def _two_layer() -> nn.Sequential:
    """The lecture's network: x in R^2, y = W1 x in R^3, z = W2 y in R (no biases)."""
    return nn.Sequential(nn.Linear(2, 3, bias=False), nn.Linear(3, 1, bias=False))


def _gradients(model: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y = model[0](X)
    z = model[1](y)
    (K * z).sum().backward()  # L = k z, so dL/dz = k
    w1_grad, w2_grad = model[0].weight.grad, model[1].weight.grad
    assert w1_grad is not None and w2_grad is not None
    return y.detach(), w1_grad, w2_grad


def test_zero_init_gives_zero_gradients() -> None:
    model = init_weights(_two_layer(), "zero")
    _, w1_grad, w2_grad = _gradients(model)
    # dL/dW2 = k y^T = [0 0 0], dL/dW1 = (k W2^T) x^T = 0 (3 x 2)
    assert torch.equal(w2_grad, torch.zeros(1, 3))
    assert torch.equal(w1_grad, torch.zeros(3, 2))
    # with a random init the same gradients are not zero
    _, w1_grad, w2_grad = _gradients(init_weights(_two_layer(), "xavier_normal"))
    assert w1_grad.abs().sum() > 0 and w2_grad.abs().sum() > 0


def test_same_value_init_does_not_break_symmetry() -> None:
    b = 0.3
    model = init_weights(_two_layer(), "constant", value=b)
    y, w1_grad, w2_grad = _gradients(model)
    x1, x2 = X[0].tolist()
    # y1 = y2 = y3 = b (x1 + x2)
    torch.testing.assert_close(y, torch.full((1, 3), b * (x1 + x2)))
    # dL/dW2 = [k y1, k y2, k y3]
    torch.testing.assert_close(w2_grad, K * y)
    # dL/dW1 = [[k b x1, k b x2]] * 3: identical rows
    torch.testing.assert_close(w1_grad, torch.tensor([[K * b * x1, K * b * x2]] * 3))

    # training keeps the hidden units identical: the symmetry is never broken
    torch.manual_seed(0)
    inputs, targets = torch.randn(16, 2), torch.randn(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.mse_loss(model(inputs), targets).backward()
        opt.step()
    w1 = model[0].weight.detach()
    assert torch.equal(w1, w1[:1].expand_as(w1))
    # whereas a random init gives distinct rows
    w1_random = init_weights(_two_layer(), "normal", std=1.0)[0].weight.detach()
    assert not torch.allclose(w1_random[0], w1_random[1])


def _check_distribution(weight: torch.Tensor, var: float, family: str) -> None:
    """Mean 0 and variance ``var`` within 5 sigma, and the shape of the normal or uniform law."""
    w = weight.detach().double().flatten()
    n = w.numel()
    assert abs(w.mean().item()) < 5 * math.sqrt(var / n)
    # the sample variance has relative std sqrt((kurtosis - 1) / n): kurtosis 3 (normal), 9/5 (uniform)
    kurtosis = 3.0 if family == "normal" else 9 / 5
    sample_var = w.pow(2).mean().item()
    assert abs(sample_var / var - 1) < 5 * math.sqrt((kurtosis - 1) / n), (sample_var, var)
    sample_kurtosis = w.pow(4).mean().item() / sample_var**2
    assert abs(sample_kurtosis - kurtosis) < 0.2, sample_kurtosis
    if family == "uniform":
        bound = math.sqrt(3 * var)  # U(-a, a) has variance a^2 / 3
        assert w.abs().max().item() <= bound * (1 + 1e-6)
        assert w.abs().max().item() > 0.99 * bound


# fan_in = in_channels * kh * kw, fan_out = out_channels * kh * kw (He et al. 2015, sec. 2.2)
LINEAR_FANS = (1024, 512)  # nn.Linear(1024, 512): fan_in 1024, fan_out 512
CONV_FANS = (64 * 3 * 3, 128 * 3 * 3)  # nn.Conv2d(64, 128, 3)


def _layers() -> list[tuple[nn.Module, tuple[int, int]]]:
    return [(nn.Linear(1024, 512), LINEAR_FANS), (nn.Conv2d(64, 128, 3), CONV_FANS)]


@pytest.mark.parametrize("family", ["normal", "uniform"])
def test_xavier_variance(family: str) -> None:
    torch.manual_seed(1)
    for layer, (fan_in, fan_out) in _layers():
        init_weights(layer, f"xavier_{family}")
        _check_distribution(layer.weight, 2 / (fan_in + fan_out), family)
    layer = init_weights(nn.Linear(1024, 512), f"xavier_{family}", gain=2.0)
    _check_distribution(layer.weight, 4 * 2 / sum(LINEAR_FANS), family)


@pytest.mark.parametrize("family", ["normal", "uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_variance_for_relu(family: str, mode: str) -> None:
    torch.manual_seed(2)
    for layer, (fan_in, fan_out) in _layers():
        fan = fan_in if mode == "fan_in" else fan_out
        init_weights(layer, f"kaiming_{family}", mode=mode)
        _check_distribution(layer.weight, 2 / fan, family)


def test_kaiming_defaults_to_fan_in_relu_and_takes_other_gains() -> None:
    torch.manual_seed(3)
    fan_in = CONV_FANS[0]
    conv = init_weights(nn.Conv2d(64, 128, 3), "kaiming_normal")
    _check_distribution(conv.weight, 2 / fan_in, "normal")
    conv = init_weights(nn.Conv2d(64, 128, 3), "kaiming_normal", nonlinearity="linear")
    _check_distribution(conv.weight, 1 / fan_in, "normal")
    conv = init_weights(
        nn.Conv2d(64, 128, 3), "kaiming_uniform", nonlinearity="leaky_relu", negative_slope=1.0
    )
    _check_distribution(conv.weight, 2 / (1 + 1.0**2) / fan_in, "uniform")


@pytest.mark.parametrize("std", [None, 0.05, 2.0])
def test_normal_std(std: float | None) -> None:
    torch.manual_seed(4)
    layer = nn.Linear(1024, 512)
    init_weights(layer, "normal") if std is None else init_weights(layer, "normal", std=std)
    _check_distribution(layer.weight, (0.01 if std is None else std) ** 2, "normal")


def _mixed_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.GroupNorm(2, 8),
        nn.InstanceNorm2d(8, affine=True),
        nn.PReLU(),
        nn.Conv1d(8, 8, 1),
        nn.LayerNorm(8),
        nn.Linear(8, 4),
    )


def _scramble(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(2.0, 3.0)


@pytest.mark.parametrize("scheme", [s for s in INIT_SCHEMES if s != "default"])
def test_biases_zero_and_norms_identity(scheme: str) -> None:
    model = _mixed_model()
    _scramble(model)
    kwargs = {"value": 0.5} if scheme == "constant" else {}
    assert init_weights(model, scheme, **kwargs) is model  # in place
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Conv1d | nn.Linear):
            assert module.bias is not None
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
            assert not torch.all(module.weight >= 2.0)  # the weight was re-initialised
        if isinstance(module, nn.BatchNorm2d | nn.GroupNorm | nn.InstanceNorm2d | nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    assert torch.all(model[4].weight >= 2.0)  # PReLU's slope is not a conv/linear weight: untouched
    if scheme == "constant":
        assert torch.equal(model[0].weight, torch.full_like(model[0].weight, 0.5))
    if scheme == "zero":
        assert torch.equal(model[7].weight, torch.zeros_like(model[7].weight))


def test_default_leaves_torch_init() -> None:
    model = _mixed_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert init_weights(model, "default") is model
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_init_schemes_lists_the_lecture_schemes() -> None:
    assert isinstance(INIT_SCHEMES, tuple)
    assert set(INIT_SCHEMES) == {
        "default",
        "zero",
        "constant",
        "normal",
        "xavier_normal",
        "xavier_uniform",
        "kaiming_normal",
        "kaiming_uniform",
        "kaiming_conv",
    }


def test_kaiming_conv_is_he_in_convolutions_and_small_normal_in_linear_layers() -> None:
    torch.manual_seed(0)
    conv, fc = nn.Conv2d(64, 128, 3), nn.Linear(4096, 4096)
    init_weights(nn.Sequential(conv, fc), "kaiming_conv")
    # He et al. 2015: std sqrt(2 / fan_in), fan_in 64 * 3 * 3 = 576; the classifier N(0, 0.01)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.02)
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert not conv.bias.any() and not fc.bias.any()


def test_unknown_scheme_lists_choices() -> None:
    with pytest.raises(ValueError, match="unknown init scheme") as info:
        init_weights(nn.Linear(2, 2), "xavier")
    message = str(info.value)
    assert all(scheme in message for scheme in INIT_SCHEMES)
    assert "did you mean" in message


@pytest.mark.parametrize(
    ("scheme", "kwargs", "match"),
    [
        ("constant", {}, "needs value"),
        ("xavier_normal", {"std": 0.1}, "does not use std"),
        ("zero", {"value": 1.0}, "does not use value"),
        ("normal", {"mode": "fan_in"}, "does not use mode"),
        ("normal", {"std": 0.0}, "std > 0"),
        ("xavier_uniform", {"gain": -1.0}, "gain > 0"),
        ("kaiming_normal", {"mode": "fan_avg"}, "fan_in' or 'fan_out"),
        ("kaiming_uniform", {"nonlinearity": "swish"}, "swish"),
        ("kaiming_normal", {"negative_slope": 0.1}, "leaky_relu"),
    ],
)
def test_bad_options_raise_before_touching_the_model(
    scheme: str, kwargs: dict[str, object], match: str
) -> None:
    layer = nn.Linear(4, 4)
    before = layer.weight.detach().clone()
    with pytest.raises(ValueError, match=match):
        init_weights(layer, scheme, **kwargs)
    assert torch.equal(layer.weight, before)
