"""Dropout and drop-path against their definitions (Srivastava et al. 2014; Huang et al. 2016)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from cnnkit.layers.drop import Dropout, DropPath, drop_path, drop_path_rates


def test_drop_path_is_identity_in_eval_and_at_p0() -> None:
    x = torch.randn(8, 3, 5, 5)
    module = DropPath(0.5).eval()
    assert torch.equal(module(x), x)
    assert torch.equal(drop_path(x, 0.5, training=False), x)
    assert torch.equal(drop_path(x, 0.0, training=True), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_drop_path_drops_whole_samples_and_rescales(p: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 4, 4, dtype=torch.float64) + 3.0  # no exact zeros in x
    out = DropPath(p).train()(x)
    dropped = kept = 0
    for sample_in, sample_out in zip(x, out, strict=True):
        if torch.all(sample_out == 0):
            dropped += 1
        else:
            # a kept sample is scaled as a whole, by exactly 1/(1-p)
            torch.testing.assert_close(sample_out, sample_in / (1 - p), rtol=1e-12, atol=0)
            kept += 1
    assert dropped > 0 and kept > 0  # with 64 samples both happen (seed fixed)


def test_drop_path_rate_and_mean_match_p() -> None:
    """Empirical drop rate is Binomial(n, p)/n and the mean is preserved, both within 5 sigma."""
    torch.manual_seed(1)
    n, p = 40_000, 0.3
    out = drop_path(torch.ones(n, 2, 3), p, training=True)
    per_sample = out.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])  # one decision per sample
    num_dropped = int((per_sample[:, 0] == 0).sum())
    sigma_count = math.sqrt(n * p * (1 - p))
    assert abs(num_dropped - n * p) < 5 * sigma_count
    # E[out] = 1; the sample mean of (Bernoulli(1-p) / (1-p)) has std sqrt(p(1-p)/n) / (1-p)
    sigma_mean = math.sqrt(p * (1 - p) / n) / (1 - p)
    assert abs(out.mean().item() - 1.0) < 5 * sigma_mean


def test_drop_path_gradient_follows_the_mask() -> None:
    torch.manual_seed(2)
    p = 0.25
    x = torch.randn(32, 6, requires_grad=True)
    out = drop_path(x, p, training=True)
    out.sum().backward()
    assert x.grad is not None
    kept = (out != 0).all(dim=1)
    expected = kept[:, None].to(x.dtype).expand_as(x) / (1 - p)
    torch.testing.assert_close(x.grad, expected)


@pytest.mark.parametrize("p", [1.5, -0.1, 1.0])
def test_drop_path_rejects_bad_p_at_construction(p: float) -> None:
    with pytest.raises(ValueError, match=r"p in \[0, 1\)"):
        DropPath(p)
    with pytest.raises(ValueError):
        drop_path(torch.ones(2, 2), p, training=True)
    with pytest.raises(ValueError):
        Dropout(p)


def test_drop_path_repr() -> None:
    assert repr(DropPath(0.1)) == "DropPath(p=0.1)"


def test_dropout_drops_units_independently() -> None:
    """Srivastava et al. (inverted form): each unit is zeroed with prob p, survivors scaled by 1/(1-p)."""
    torch.manual_seed(3)
    p, n = 0.5, 100_000
    x = torch.ones(10, n // 10)
    out = Dropout(p).train()(x)
    assert set(out.unique().tolist()) == {0.0, 1 / (1 - p)}
    num_dropped = int((out == 0).sum())
    assert abs(num_dropped - n * p) < 5 * math.sqrt(n * p * (1 - p))
    # units, not samples, are dropped: every row has both zeros and survivors
    assert torch.all((out == 0).any(dim=1)) and torch.all((out != 0).any(dim=1))
    assert torch.equal(Dropout(p).eval()(x), x)
    assert isinstance(Dropout(0.2), torch.nn.Dropout)


def test_drop_path_rates_linear_decay() -> None:
    assert drop_path_rates(4, 0.5) == [0.125, 0.25, 0.375, 0.5]
    # Huang et al. (2016) eq. 4: survival p_l = 1 - l/L (1 - p_L)
    num_blocks, p_last = 12, 0.8
    rates = drop_path_rates(num_blocks, 1 - p_last)
    survival = [1 - rate for rate in rates]
    expected = [1 - layer / num_blocks * (1 - p_last) for layer in range(1, num_blocks + 1)]
    assert survival == pytest.approx(expected, abs=1e-12)
    assert rates[-1] == pytest.approx(1 - p_last)
    assert all(a < b for a, b in itertools.pairwise(rates))  # later blocks dropped more
    assert drop_path_rates(3, 0.0) == [0.0, 0.0, 0.0]
    assert drop_path_rates(0, 0.2) == []


@pytest.mark.parametrize(
    ("num_blocks", "final_drop"), [(-1, 0.1), (2.5, 0.1), (True, 0.1), (4, 1.0), (4, -0.2)]
)
def test_drop_path_rates_rejects_bad_arguments(num_blocks: int, final_drop: float) -> None:
    with pytest.raises(ValueError):
        drop_path_rates(num_blocks, final_drop)
