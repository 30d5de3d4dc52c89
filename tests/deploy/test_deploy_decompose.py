"""Low-rank separable decompositions of trained convolutions (cnnkit.deploy.decomposition).

Checked against outside definitions: a convolution whose kernel is built from separable
factors (Jaderberg et al. 2014 scheme 2; the MobileNet block; Jin et al. 2015's
flattened filters) is recovered to float precision; the spatial and depthwise methods
meet the Eckart-Young bound computed from ``torch.linalg.svdvals``; the error falls as
the rank grows; mult-adds follow the lecture's formulas.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from cnnkit.analysis.summary import summarize
from cnnkit.deploy.decomposition import (
    METHODS,
    build_decomposed,
    decompose,
    decompose_with_plan,
    energy_for_budget,
    plan_decomposition,
)
from cnnkit.models.registry import create_model


def _single(conv: nn.Conv2d) -> nn.Sequential:
    return nn.Sequential(conv)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def _conv_with(weight: torch.Tensor, **kw: object) -> nn.Conv2d:
    n, c, kh, kw_ = weight.shape
    conv = nn.Conv2d(c, n, (kh, kw_), **kw)  # type: ignore[arg-type]
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


def _effective_kernel(module: nn.Module, c: int, k: int, pad: int) -> torch.Tensor:
    """The (N, C, k, k) kernel of a stride-1 linear shift-invariant module, probed with one-hot inputs.

    With padding ``pad``, output pixel (pad, pad) of a k x k input sees input (y, x) through
    tap (y, x), so a batch of one-hot images reads the kernel off column by column.
    """
    dtype = next(module.parameters()).dtype
    probes = torch.eye(c * k * k, dtype=dtype).reshape(c * k * k, c, k, k)
    with torch.no_grad():
        out = module(probes)[:, :, pad, pad]  # (C k k, N)
    return out.T.reshape(-1, c, k, k)


# ---------------------------------------------------------------------------- exact recovery


def test_spatial_separable_recovers_a_rank_r_kernel_exactly() -> None:
    # Jaderberg scheme 2: W[n, c, y, x] = sum_j V[j, c, y] H[n, j, x], rank 2
    c, n, k, r = 5, 7, 3, 2
    v, h = torch.randn(r, c, k), torch.randn(n, r, k)
    w = torch.einsum("jcy,njx->ncyx", v, h)
    conv = _conv_with(w, stride=2, padding=1, bias=True)
    x = torch.randn(2, c, 11, 13)  # odd, unequal sizes: checks the stride/padding split
    model, plan = decompose_with_plan(_single(conv), "spatial_separable", energy=1 - 1e-9)
    assert plan.ranks == {"0": r}  # the true rank is found from the energy
    assert _rel_err(model(x), conv(x)) < 1e-5
    assert model[0].vertical.stride == (2, 1) and model[0].horizontal.stride == (1, 2)
    assert model[0].vertical.bias is None and model[0].horizontal.bias is not None


def test_depthwise_separable_recovers_a_mobilenet_kernel_exactly() -> None:
    # W[n, c] = P[n, c] D_c: a depthwise k x k filter per channel, then a 1x1 conv
    c, n, k = 6, 9, 3
    p, d = torch.randn(n, c), torch.randn(c, k, k)
    w = p[:, :, None, None] * d[None]
    conv = _conv_with(w, stride=1, padding=2, dilation=2, bias=True)
    x = torch.randn(2, c, 10, 10)
    model, plan = decompose_with_plan(_single(conv), "depthwise_separable", energy=1 - 1e-9)
    assert plan.ranks == {"0": 1}
    assert _rel_err(model(x), conv(x)) < 1e-5
    assert model[0].depthwise.dilation == (2, 2)


def test_flattened_recovers_a_flattened_kernel_exactly() -> None:
    # Jin et al. fig. 1: W[f, c, y, x] = lateral[f, c] vertical[f, y] horizontal[f, x]
    c, n, k = 5, 8, 3
    lat, ver, hor = torch.randn(n, c), torch.randn(n, k), torch.randn(n, k)
    w = torch.einsum("fc,fy,fx->fcyx", lat, ver, hor)
    conv = _conv_with(w, stride=2, padding=1)
    x = torch.randn(2, c, 9, 12)
    model, plan = decompose_with_plan(_single(conv), "flattened", energy=1 - 1e-9)
    assert plan.ranks == {"0": 1}
    assert _rel_err(model(x), conv(x)) < 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_full_rank_is_exact_for_any_kernel(method: str) -> None:
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    full = plan_decomposition(_single(conv), method, rank=10**6, skip_costlier=False).layers["0"].max_rank
    model = decompose(_single(conv), method, rank=full, skip_costlier=False)
    x = torch.randn(2, 4, 8, 8)
    assert _rel_err(model(x), conv(x)) < 1e-5


# ---------------------------------------------------------------------------- error vs rank


@pytest.mark.parametrize("method", METHODS)
def test_output_error_falls_as_the_rank_grows(method: str) -> None:
    conv = nn.Conv2d(6, 8, 3, padding=1, bias=True)
    x = torch.randn(4, 6, 10, 10)
    ref = conv(x).detach()
    max_rank = plan_decomposition(_single(conv), method, rank=1, skip_costlier=False).layers["0"].max_rank
    errors = []
    for r in range(1, max_rank + 1):
        with torch.no_grad():
            errors.append(_rel_err(decompose(_single(conv), method, rank=r, skip_costlier=False)(x), ref))
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(errors)), errors
    assert errors[0] > 0.2  # a random kernel is far from rank one ...
    assert errors[-1] < 1e-5  # ... and exact at full rank


def test_spatial_and_depthwise_meet_the_eckart_young_bound() -> None:
    c, n, k, r = 5, 6, 3, 4
    conv = nn.Conv2d(c, n, k, padding=1, bias=False)
    w = conv.weight.detach().double()
    # spatial: ||W - W_r||^2 = sum of the discarded squared singular values of the (C k) x (N k) matrix
    s = torch.linalg.svdvals(w.permute(1, 2, 0, 3).reshape(c * k, n * k))
    got = _effective_kernel(decompose(_single(conv), "spatial_separable", rank=r).double(), c, k, 1)
    assert float(((got - w) ** 2).sum()) == pytest.approx(float((s[r:] ** 2).sum()), rel=1e-4)
    # depthwise: the same, slice by slice (each input channel's N x k^2 matrix)
    s = torch.linalg.svdvals(w.permute(1, 0, 2, 3).reshape(c, n, k * k))
    got = _effective_kernel(
        decompose(_single(conv), "depthwise_separable", rank=2, skip_costlier=False).double(), c, k, 1
    )
    assert float(((got - w) ** 2).sum()) == pytest.approx(float((s[:, 2:] ** 2).sum()), rel=1e-4)


def test_energy_picks_the_smallest_rank_that_keeps_it() -> None:
    conv = nn.Conv2d(8, 8, 3, bias=False)
    s2 = torch.linalg.svdvals(conv.weight.detach().permute(1, 2, 0, 3).reshape(24, 24).double()) ** 2
    kept = s2.cumsum(0) / s2.sum()
    for energy in (0.3, 0.7, 0.95):
        want = int((kept < energy).sum()) + 1
        plan = plan_decomposition(_single(conv), "spatial_separable", energy=energy, skip_costlier=False)
        layer = plan.layers["0"]
        assert layer.rank == want
        assert layer.energy == pytest.approx(float(kept[want - 1]))


# ---------------------------------------------------------------------------- cost


def test_mult_adds_follow_the_lecture_formulas() -> None:
    c, n, k, h, r = 16, 32, 3, 12, 3
    conv = nn.Conv2d(c, n, k, padding=1, bias=False)
    full = summarize(_single(conv), (c, h, h)).total_mult_adds
    assert full == n * c * k * k * h * h  # D_K^2 M N D_F^2
    cost = {m: summarize(decompose(_single(conv), m, rank=r), (c, h, h)).total_mult_adds for m in METHODS}
    assert cost["spatial_separable"] == r * c * k * h * h + n * r * k * h * h
    # MobileNet with depth multiplier r: D_K^2 (r M) D_F^2 + (r M) N D_F^2
    assert cost["depthwise_separable"] == k * k * r * c * h * h + r * c * n * h * h
    # Jin et al.: 1x1 to r N maps, k x 1 depthwise, 1 x k summing r maps per filter
    assert cost["flattened"] == c * r * n * h * h + r * n * k * h * h + n * r * k * h * h
    assert all(v < full for v in cost.values())


def test_strided_spatial_separable_runs_the_vertical_conv_at_full_width() -> None:
    c, n, k, h, r = 8, 8, 3, 16, 2
    conv = nn.Conv2d(c, n, k, stride=2, padding=1, bias=False)
    got = summarize(decompose(_single(conv), "spatial_separable", rank=r), (c, h, h)).total_mult_adds
    assert got == r * c * k * (h // 2) * h + n * r * k * (h // 2) * (h // 2)


def test_resnet_mult_adds_fall_with_the_rank_and_the_input_is_untouched() -> None:
    model = create_model("resnet20", num_classes=10, in_chans=1, small_input=True).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = summarize(model, (1, 28, 28)).total_mult_adds
    costs = [
        summarize(decompose(model, "spatial_separable", rank=r), (1, 28, 28)).total_mult_adds
        for r in (4, 8, 16)
    ]
    assert costs[0] < costs[1] < costs[2] < base
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert isinstance(model.conv1, nn.Conv2d) and type(model.layer1[0].conv1) is nn.Conv2d


# ---------------------------------------------------------------------------- rebuild, skips, errors


@pytest.mark.parametrize("method", METHODS)
def test_build_decomposed_reloads_the_weights(method: str) -> None:
    model = create_model("resnet20", num_classes=10, in_chans=1, small_input=True).eval()
    dec = decompose(model, method, rank=2).eval()
    with torch.device("meta"):
        shell = create_model("resnet20", num_classes=10, in_chans=1, small_input=True)
    shell = build_decomposed(shell, dec.decomposition["method"], dec.decomposition["ranks"])
    shell.to_empty(device="cpu")
    shell.load_state_dict(dec.state_dict(), strict=True)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(shell.eval()(x), dec(x))


def test_unsupported_convs_are_left_alone_with_a_reason() -> None:
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, groups=2, padding=1),
        nn.Conv2d(4, 4, 3, dilation=2, padding=2),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(4, 4, 1),
    )
    plan = plan_decomposition(model, "spatial_separable", rank=1)
    assert set(plan.skipped) == {"0", "1", "2"} and not plan.layers
    assert "groups=2" in plan.skipped["0"] and "dilated" in plan.skipped["1"]
    assert "reflect" in plan.skipped["2"]
    assert "1" in plan_decomposition(model, "depthwise_separable", rank=1).layers  # dilation is fine there


def test_costlier_factorisations_are_skipped_unless_asked() -> None:
    conv = nn.Conv2d(2, 2, 3)  # rank 6 spatial factors: 6 (2*3 + 2*3) = 72 weights > 36
    assert "0" in plan_decomposition(_single(conv), "spatial_separable", rank=6).skipped
    assert "0" in plan_decomposition(_single(conv), "spatial_separable", rank=6, skip_costlier=False).layers


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "tucker", "rank": 1}, "unknown decomposition method"),
        ({"method": "flattened"}, "exactly one of"),
        ({"method": "flattened", "rank": 2, "energy": 0.5}, "exactly one of"),
        ({"method": "flattened", "rank": 0}, "rank must be an int >= 1"),
        ({"method": "flattened", "energy": 1.5}, r"in \(0, 1\]"),
        ({"method": "flattened", "ranks": {"nope": 2}}, "not a conv"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decompose(_single(nn.Conv2d(3, 3, 3)), **kwargs)  # type: ignore[arg-type]


def test_decomposing_twice_is_refused() -> None:
    once = decompose(_single(nn.Conv2d(3, 8, 3)), "spatial_separable", rank=1)
    with pytest.raises(ValueError, match="decomposed already"):
        decompose(once, "flattened", rank=1)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_every_factor(method: str) -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2)
    )
    model = decompose(net, method, rank=2, skip_costlier=False)
    assert not any(type(m) is nn.Conv2d and m.kernel_size == (3, 3) for m in model.modules())
    model(torch.randn(2, 3, 9, 9)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# ---------------------------------------------------------------------------- a mult-add budget


def test_energy_for_budget_is_the_largest_energy_within_the_budget() -> None:
    model = create_model("resnet20", num_classes=10, in_chans=1, small_input=True).eval()
    size = (1, 28, 28)
    base = summarize(model, size).total_mult_adds
    energy = energy_for_budget(model, "spatial_separable", size, 0.5)
    assert summarize(decompose(model, "spatial_separable", energy=energy), size).total_mult_adds <= 0.5 * base
    more = decompose(model, "spatial_separable", energy=min(energy + 1e-4, 1.0))
    assert summarize(more, size).total_mult_adds > 0.5 * base
    with pytest.raises(ValueError, match="cannot bring"):
        energy_for_budget(model, "spatial_separable", size, 0.01)
