"""Every activation against its formula on the lecture's "Activation Functions" slides.

References are written with Python's ``math`` on floats, independent of torch's kernels, and
compared in float64 on a grid that includes negatives, zero and large magnitudes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from cnnkit.layers.act import ACTIVATIONS, Sine, get_act, quick_gelu, sine


def _phi(x: float) -> float:
    """Standard normal CDF via erf."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


FORMULAS: dict[str, Callable[[float], float]] = {
    "sigmoid": lambda z: 1.0 / (1.0 + math.exp(-z)),
    "tanh": lambda z: (math.exp(z) - math.exp(-z)) / (math.exp(z) + math.exp(-z)),
    "relu": lambda z: max(z, 0.0),
    "leaky_relu": lambda z: max(z, 0.01 * z),
    "prelu": lambda z: z if z >= 0 else 0.25 * z,  # He et al. 2015 initialise a = 0.25
    "softplus": lambda x: math.log(1.0 + math.exp(x)),
    "swish": lambda x: x / (1.0 + math.exp(-x)),
    "silu": lambda x: x / (1.0 + math.exp(-x)),
    "gelu": lambda x: x * _phi(x),  # exact GELU (Hendrycks & Gimpel 2016)
    # Hendrycks & Gimpel's tanh approximation
    "gelu_tanh": lambda x: 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "quick_gelu": lambda x: x / (1.0 + math.exp(-1.702 * x)),  # the lecture's GELU slide
    "sine": math.sin,
    "identity": lambda x: x,
}

GRID = [-30.0, -8.0, *[i / 4 for i in range(-20, 21)], 8.0, 25.0]


def test_every_activation_has_a_formula() -> None:
    assert set(FORMULAS) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_formula(name: str) -> None:
    module = get_act(name)().double()
    x = torch.tensor(GRID, dtype=torch.float64)
    expected = torch.tensor([FORMULAS[name](v) for v in GRID], dtype=torch.float64)
    torch.testing.assert_close(module(x), expected, rtol=1e-9, atol=1e-12)


def test_prelu_uses_its_learnable_slope() -> None:
    prelu = get_act("prelu")().double()
    params = list(prelu.parameters())
    assert len(params) == 1 and params[0].item() == pytest.approx(0.25)
    with torch.no_grad():
        params[0].fill_(-0.4)
    x = torch.tensor(GRID, dtype=torch.float64)
    expected = torch.tensor([v if v >= 0 else -0.4 * v for v in GRID], dtype=torch.float64)
    torch.testing.assert_close(prelu(x), expected)
    # a fresh module per call: two layers never share one slope
    assert get_act("prelu")() is not get_act("prelu")()


def test_functional_forms_and_sine_frequency() -> None:
    x = torch.tensor(GRID, dtype=torch.float64)
    expected = torch.tensor([FORMULAS["quick_gelu"](v) for v in GRID], dtype=torch.float64)
    torch.testing.assert_close(quick_gelu(x), expected)
    torch.testing.assert_close(sine(x, 30.0), torch.tensor([math.sin(30.0 * v) for v in GRID], dtype=x.dtype))
    torch.testing.assert_close(Sine(w0=30.0)(x), sine(x, 30.0))
    assert repr(Sine(2.0)) == "Sine(w0=2.0)"
    with pytest.raises(ValueError, match="w0 > 0"):
        Sine(0.0)


def test_get_act_normalises_names() -> None:
    assert isinstance(get_act("Leaky-ReLU")(), nn.LeakyReLU)
    assert isinstance(get_act("GELU")(), nn.GELU)


def test_get_act_unknown_name_suggests_a_close_match() -> None:
    with pytest.raises(ValueError, match="did you mean swish") as info:
        get_act("swsh")
    assert "choose from" in str(info.value) and "quick_gelu" in str(info.value)
    with pytest.raises(ValueError, match="unknown activation"):
        get_act("maxout")


def test_get_act_passes_callables_through() -> None:
    assert get_act(nn.Mish) is nn.Mish

    def factory() -> nn.Module:
        return nn.Hardswish()

    assert get_act(factory) is factory
