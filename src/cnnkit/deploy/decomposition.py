"""Make a *trained* network cheaper: replace its k x k convolutions by low-rank separable ones.

The lecture's "Various Types of Convolutions" slides present spatially separable,
flattened and depthwise separable convolutions as ways to *design* cheap networks.
This module goes the other way: it approximates the trained weight ``W`` (N, C, kh, kw)
of a convolution (groups 1, both kernel sides > 1) by a sum of separable terms found
by SVD (for the flattened method, a CP decomposition per filter), and swaps the
convolution for the layers of :mod:`cnnkit.layers.conv` that compute it. Each singular
value is split evenly between the two factors (``sqrt(s)`` on each), which leaves the
product unchanged and gives the factors equal norms for fine-tuning. Three methods:

``spatial_separable`` (Jaderberg, Vedaldi & Zisserman 2014, "Speeding up convolutional
    neural networks with low rank expansions", scheme 2): ``W`` reshaped to the
    (C kh) x (N kw) matrix ``M[(c, y), (n, x)] = W[n, c, y, x]`` is truncated to rank r
    by SVD (the best rank-r approximation in Frobenius norm, Eckart-Young). Its left
    factor is a kh x 1 convolution C -> r, its right factor a 1 x kw convolution r -> N:
    :class:`~cnnkit.layers.conv.SpatialSeparableConv2d` with ``mid_channels=r``. The
    vertical conv takes the vertical stride and padding, the horizontal one the
    horizontal stride and padding and the bias, so the result equals the rank-r
    convolution exactly (zero padding commutes with the factorisation).
    Rank at most ``min(C kh, N kw)``.

``depthwise_separable`` (the MobileNet block, Howard et al. 2017, sec. 3.1): for each
    input channel c the N x (kh kw) slice ``W[:, c]`` is truncated to rank r by SVD,
    ``sum_j s_cj u_cj v_cj^T``: each ``v_cj`` is a kh x kw depthwise filter of channel c,
    each ``s_cj u_cj`` a column of the 1x1 conv. r = 1 is the plain MobileNet block
    (:class:`~cnnkit.layers.conv.DepthwiseSeparableConv2d`); r > 1 gives its depthwise
    conv a depth multiplier r. Exact when ``W`` is depthwise separable to start with
    (``W[n, c] = P[n, c] D_c``: every slice has rank 1). Rank at most ``min(N, kh kw)``.

``flattened`` (Jin, Dundar & Culurciello 2015, "Flattened convolutional neural networks
    for feedforward acceleration", fig. 1): each output filter ``W[n]`` (C x kh x kw) is
    approximated by a sum of r rank-one tensors ``a_nj (x) b_nj (x) c_nj`` (lateral,
    vertical, horizontal 1-D filters): a CP decomposition per filter. r = 1 is
    :class:`~cnnkit.layers.conv.FlattenedConv2d` (1x1 conv C -> N, kh x 1 depthwise,
    1 x kw depthwise); for r > 1 the 1x1 conv makes r N maps, the vertical conv stays
    depthwise and the horizontal conv sums each filter's r terms (a grouped 1 x kw conv
    with N groups). The CP terms are found greedily and refined jointly: term j is the
    best rank-one fit of the residual (higher-order power iteration from the HOSVD
    start, De Lathauwer et al. 2000), then all j terms are refined by alternating least
    squares (Kolda & Bader 2009, sec. 3.4), which never increases the error, so the
    kernel's error never rises as r grows. A filter that *is* rank one (a conv built from flattened
    factors) is recovered to float precision at r = 1; at r = kh kw the identity
    ``W[n] = sum_(y, x) W[n, :, y, x] (x) e_y (x) e_x`` is used, which is exact.
    Unlike the SVD methods, CP truncation has no closed-form optimum: for r > 1 the
    result is a good, not the best, rank-r fit.

The rank of each layer is a fixed ``rank`` (capped at the layer's maximum) or the smallest
that retains a fraction ``energy`` of ``||W||_F^2`` (for the SVD methods: of the sum of
squared singular values, which is the same thing); :func:`energy_for_budget` finds the
energy that brings a network to a given share of its mult-adds. Layers whose factors
would hold at least as many weights as the convolution are left alone
(``skip_costlier``). 1x1 and 1-D convs are not touched; k x k convs the layer classes
cannot express (grouped, padding other than zeros; for the spatial and flattened
methods also dilation or non-square geometry) are left alone and listed in the plan
with the reason.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from cnnkit.layers.conv import (
    DepthwiseConv2d,
    DepthwiseSeparableConv2d,
    FlattenedConv2d,
    GroupedConv2d,
    PointwiseConv2d,
    SpatialSeparableConv2d,
    conv_output_size,
)
from cnnkit.run import register_rebuild

__all__ = [
    "METHODS",
    "DecompositionPlan",
    "LayerDecomposition",
    "build_decomposed",
    "decompose",
    "decompose_with_plan",
    "energy_for_budget",
    "plan_decomposition",
    "rebuild_decomposed",
]

METHODS = ("spatial_separable", "depthwise_separable", "flattened")

_HOPM_ITERS = 30  # rank-one power iterations per greedy CP term (converges in a few for 3x3 filters)
_ALS_SWEEPS = 25  # joint ALS sweeps after each added CP term
_TOL = 1e-7  # stop iterating when no factor entry moves more than this (relative)


# ---------------------------------------------------------------------------- records


@dataclass
class LayerDecomposition:
    """One decomposed convolution: its shape, the chosen rank and what it keeps and costs."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    rank: int
    max_rank: int
    energy: float  # retained fraction of ||W||_F^2, 1 - ||W - W_r||^2 / ||W||^2
    params_before: int  # conv weights (bias not counted: it is kept as is)
    params_after: int


@dataclass
class DecompositionPlan:
    """What :func:`decompose` does to a model: per-layer ranks, and the convs it leaves alone."""

    method: str
    layers: dict[str, LayerDecomposition] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # module name -> reason

    @property
    def ranks(self) -> dict[str, int]:
        """Module name -> rank: with :attr:`method`, enough to rebuild the structure (:func:`build_decomposed`)."""
        return {name: d.rank for name, d in self.layers.items()}

    def spec(self) -> dict[str, Any]:
        """``{"method": ..., "ranks": {...}}``: plain data for a checkpoint's metadata."""
        return {"method": self.method, "ranks": self.ranks}

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "layers": {k: asdict(v) for k, v in self.layers.items()},
            "skipped": dict(self.skipped),
        }


# ---------------------------------------------------------------------------- which convs


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown decomposition method {method!r}; choose from {', '.join(METHODS)}")


def _unsupported(conv: nn.Conv2d, method: str) -> str | None:
    """Why ``conv`` cannot be decomposed by ``method`` (None: it can)."""
    if conv.groups != 1:
        return f"grouped conv (groups={conv.groups})"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} (only zero padding commutes with the factorisation)"
    if isinstance(conv.padding, str):
        return f"padding={conv.padding!r} (give the padding as numbers)"
    if method in ("spatial_separable", "flattened"):
        (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
        if kh != kw or sh != sw or ph != pw or conv.dilation != (1, 1):
            return (
                "non-square or dilated conv (the separable layer classes take square, undilated geometry; "
                "use depthwise_separable)"
            )
    return None


def _candidates(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every conv with a kernel larger than 1 along both axes (1x1 and 1-D convs are already cheap)."""
    return [
        (name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and min(m.kernel_size) > 1
    ]


# ---------------------------------------------------------------------------- factorisations


@dataclass
class _Factors:
    """A factorisation at one rank; tensors are float64 on the weight's device."""

    rank: int
    max_rank: int
    energy: float
    tensors: dict[str, torch.Tensor]
    curve: list[float]  # retained energy at ranks 1, 2, ... (as far as computed)


def _max_rank(method: str, n: int, c: int, kh: int, kw: int) -> int:
    if method == "spatial_separable":
        return min(c * kh, n * kw)
    if method == "depthwise_separable":
        return min(n, kh * kw)
    return kh * kw  # flattened: the (y, x) slices give an exact CP form with kh kw terms


def _params_after(method: str, r: int, n: int, c: int, kh: int, kw: int) -> int:
    if method == "spatial_separable":
        return r * (c * kh + n * kw)
    if method == "depthwise_separable":
        return c * r * (kh * kw + n)
    return r * n * (c + kh + kw)


def _rank_from_energy(cumulative: torch.Tensor, energy: float) -> int:
    """Smallest r whose retained fraction ``cumulative[r - 1]`` reaches ``energy``."""
    hit = torch.nonzero(cumulative >= energy - 1e-12)
    return int(hit[0]) + 1 if len(hit) else len(cumulative)


def _choose_rank(max_rank: int, rank: int | None, energy: float | None, cumulative: torch.Tensor) -> int:
    if rank is not None:
        return min(rank, max_rank)
    assert energy is not None
    return _rank_from_energy(cumulative, energy)


def _svd_spatial(w: torch.Tensor, rank: int | None, energy: float | None) -> _Factors:
    n, c, kh, kw = w.shape
    m = w.permute(1, 2, 0, 3).reshape(c * kh, n * kw)  # M[(c, y), (n, x)] = W[n, c, y, x]
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    total = (s**2).sum()
    cumulative = (s**2).cumsum(0) / total if total > 0 else torch.ones_like(s)
    r = _choose_rank(len(s), rank, energy, cumulative)
    root = s[:r].sqrt()  # sqrt(s) on each factor: equal norms, better conditioned for fine-tuning
    vertical = (u[:, :r] * root).reshape(c, kh, r).permute(2, 0, 1)[..., None]  # (r, C, kh, 1)
    horizontal = (vh[:r] * root[:, None]).reshape(r, n, kw).permute(1, 0, 2)[:, :, None, :]  # (N, r, 1, kw)
    return _Factors(
        r,
        len(s),
        float(cumulative[r - 1]),
        {"vertical": vertical, "horizontal": horizontal},
        cumulative.tolist(),
    )


def _svd_depthwise(w: torch.Tensor, rank: int | None, energy: float | None) -> _Factors:
    n, c, kh, kw = w.shape
    slices = w.permute(1, 0, 2, 3).reshape(c, n, kh * kw)  # slice c: the N x k^2 matrix W[:, c]
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)  # (C, N, q), (C, q), (C, q, k^2)
    per_rank = (s**2).sum(0)  # energy of the j-th terms over all channels
    total = per_rank.sum()
    cumulative = per_rank.cumsum(0) / total if total > 0 else torch.ones_like(per_rank)
    r = _choose_rank(s.shape[1], rank, energy, cumulative)
    root = s[:, :r].sqrt()  # (C, r)
    # depthwise output channel c r + j holds term j of input channel c (DepthwiseConv2d's order)
    depthwise = (vh[:, :r] * root[..., None]).reshape(c * r, 1, kh, kw)
    pointwise = (u[:, :, :r] * root[:, None, :]).permute(1, 0, 2).reshape(n, c * r, 1, 1)
    return _Factors(
        r,
        s.shape[1],
        float(cumulative[r - 1]),
        {"depthwise": depthwise, "pointwise": pointwise},
        cumulative.tolist(),
    )


def _khatri_rao(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Column-wise Kronecker product per filter: (N, p, r), (N, q, r) -> (N, p q, r), row i q + k."""
    n, p, r = u.shape
    return (u[:, :, None, :] * v[:, None, :, :]).reshape(n, p * v.shape[1], r)


def _unfoldings(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mode-1, 2, 3 unfoldings of each filter (N, C, Y, X): (N, C, YX), (N, Y, CX), (N, X, CY)."""
    n, c, y, x = t.shape
    return (
        t.reshape(n, c, y * x),
        t.permute(0, 2, 1, 3).reshape(n, y, c * x),
        t.permute(0, 3, 1, 2).reshape(n, x, c * y),
    )


def _cp_reconstruct(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Per filter n: sum_j a[n, :, j] (x) b[n, :, j] (x) h[n, :, j] -> (N, C, kh, kw)."""
    n, c, _ = a.shape
    return (a @ _khatri_rao(b, h).mT).reshape(n, c, b.shape[1], h.shape[1])


def _leading_vector(t: torch.Tensor) -> torch.Tensor:
    """Leading left singular vector of each matrix of a batch (N, m, p) -> (N, m, 1)."""
    u, _, _ = torch.linalg.svd(t, full_matrices=False)
    return u[:, :, :1]


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)


def _rank_one(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best rank-one fit of each filter (N, C, Y, X) by higher-order power iteration (HOSVD start).

    Returns factors (N, C, 1), (N, Y, 1), (N, X, 1); the first carries the scale.
    """
    t1, t2, t3 = _unfoldings(t)
    b, h = _leading_vector(t2), _leading_vector(t3)
    for _ in range(_HOPM_ITERS):
        a = _unit(t1 @ _khatri_rao(b, h))
        b_new = _unit(t2 @ _khatri_rao(a, h))
        h_new = _unit(t3 @ _khatri_rao(a, b_new))
        moved = float(torch.maximum((b_new - b).abs().max(), (h_new - h).abs().max()))
        b, h = b_new, h_new
        if moved < _TOL:
            break
    return t1 @ _khatri_rao(b, h), b, h


def _solve(m: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """``m @ gram^-1`` for batches of small symmetric positive semi-definite Gram matrices.

    A ridge of 1e-12 of the diagonal's mean keeps a (numerically) singular Gram matrix,
    from a filter with fewer independent terms than r, solvable.
    """
    r = gram.shape[-1]
    eye = torch.eye(r, dtype=gram.dtype, device=gram.device)
    ridge = 1e-12 * gram.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None].clamp_min(1e-300)
    return torch.linalg.solve(gram + ridge * eye, m.mT).mT


def _als(
    t: torch.Tensor, a: torch.Tensor, b: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Joint CP-ALS sweeps per filter; each block update is a least-squares solve, so the error never rises."""
    t1, t2, t3 = _unfoldings(t)
    for _ in range(_ALS_SWEEPS):
        a = _solve(t1 @ _khatri_rao(b, h), (b.mT @ b) * (h.mT @ h))
        b_new = _solve(t2 @ _khatri_rao(a, h), (a.mT @ a) * (h.mT @ h))
        h_new = _solve(t3 @ _khatri_rao(a, b_new), (a.mT @ a) * (b_new.mT @ b_new))
        scale = float(b_new.abs().max() + h_new.abs().max())
        moved = float((b_new - b).abs().max() + (h_new - h).abs().max()) / max(scale, 1e-300)
        b, h = b_new, h_new
        if moved < _TOL:
            break
    return a, b, h


def _balance(
    a: torch.Tensor, b: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Give the three factors of each term equal norms (the product is unchanged)."""
    na, nb, nh = (v.norm(dim=1, keepdim=True).clamp_min(1e-300) for v in (a, b, h))
    scale = (na * nb * nh) ** (1 / 3)
    return a / na * scale, b / nb * scale, h / nh * scale


def _cp_exact(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kh kw-term CP form ``W[n] = sum_(y, x) W[n, :, y, x] (x) e_y (x) e_x`` (exact)."""
    n, c, kh, kw = w.shape
    a = w.reshape(n, c, kh * kw)
    b = torch.eye(kh, dtype=w.dtype, device=w.device).repeat_interleave(kw, dim=1).expand(n, kh, kh * kw)
    h = torch.eye(kw, dtype=w.dtype, device=w.device).repeat(1, kh).expand(n, kw, kh * kw)
    return a, b.contiguous(), h.contiguous()


def _cp_flattened(w: torch.Tensor, rank: int | None, energy: float | None) -> _Factors:
    n, c, kh, kw = w.shape
    max_rank = kh * kw
    target = max_rank if rank is None else min(rank, max_rank)
    total = float((w**2).sum())
    a = w.new_zeros(n, c, 0)
    b, h = w.new_zeros(n, kh, 0), w.new_zeros(n, kw, 0)
    retained, curve = 1.0, []
    for r in range(1, target + 1):
        if r == max_rank:
            a, b, h = _cp_exact(w)
            retained = 1.0
            curve.append(retained)
            break
        a1, b1, h1 = _rank_one(w - _cp_reconstruct(a, b, h))
        a, b, h = torch.cat([a, a1], 2), torch.cat([b, b1], 2), torch.cat([h, h1], 2)
        if r > 1:
            a, b, h = _als(w, a, b, h)
        err = float(((w - _cp_reconstruct(a, b, h)) ** 2).sum())
        retained = 1.0 - err / total if total > 0 else 1.0
        curve.append(retained)
        if energy is not None and retained >= energy - 1e-12:
            break
    a, b, h = _balance(a, b, h)
    return _Factors(a.shape[2], max_rank, retained, {"a": a, "b": b, "h": h}, curve)


_FACTORISE = {
    "spatial_separable": _svd_spatial,
    "depthwise_separable": _svd_depthwise,
    "flattened": _cp_flattened,
}


# ---------------------------------------------------------------------------- replacement layers


def _replacement(conv: nn.Conv2d, method: str, r: int) -> nn.Module:
    """The separable module (fresh weights) that computes a rank-``r`` version of ``conv``."""
    with torch.device(conv.weight.device):  # on "meta" no weight is allocated (reloading a saved model)
        module = _new_layers(conv, method, r)
    return module.to(dtype=conv.weight.dtype).train(conv.training)


def _new_layers(conv: nn.Conv2d, method: str, r: int) -> nn.Module:
    n, c = conv.out_channels, conv.in_channels
    kh, kw = conv.kernel_size
    stride = (int(conv.stride[0]), int(conv.stride[1]))
    padding = (int(conv.padding[0]), int(conv.padding[1]))  # strings were refused by _unsupported
    dilation = (int(conv.dilation[0]), int(conv.dilation[1]))
    bias = conv.bias is not None
    module: Any
    if method == "spatial_separable":
        module = SpatialSeparableConv2d(
            c, n, kh, stride=stride[0], padding=padding[0], bias=bias, mid_channels=r
        )
    elif method == "depthwise_separable":
        module = DepthwiseSeparableConv2d(c, n, (kh, kw), stride, padding, dilation, bias=False)
        if r > 1:
            module.depthwise = DepthwiseConv2d(c, (kh, kw), stride, padding, dilation, depth_multiplier=r)
        if r > 1 or bias:  # the bias goes on the last conv only
            module.pointwise = PointwiseConv2d(c * r, n, bias=bias)
    else:
        module = FlattenedConv2d(c, n, kh, stride=stride[0], padding=padding[0], bias=bias)
        if (
            r > 1
        ):  # r maps per filter: depthwise vertical, then a grouped horizontal conv sums each filter's r terms
            module.lateral = PointwiseConv2d(c, r * n)
            module.vertical = DepthwiseConv2d(r * n, (kh, 1), (stride[0], 1), (padding[0], 0))
            module.horizontal = GroupedConv2d(
                r * n, n, (1, kw), groups=n, stride=(1, stride[1]), padding=(0, padding[1]), bias=bias
            )
    return module


def _load_factors(module: Any, conv: nn.Conv2d, method: str, f: _Factors) -> None:
    dtype = conv.weight.dtype
    t = {k: v.to(dtype) for k, v in f.tensors.items()}
    with torch.no_grad():
        if method == "spatial_separable":
            module.vertical.weight.copy_(t["vertical"])
            module.horizontal.weight.copy_(t["horizontal"])
            last = module.horizontal
        elif method == "depthwise_separable":
            module.depthwise.weight.copy_(t["depthwise"])
            module.pointwise.weight.copy_(t["pointwise"])
            last = module.pointwise
        else:
            n, r = conv.out_channels, f.rank
            # channel n r + j of the lateral/vertical convs is term j of filter n (the grouped conv's order)
            module.lateral.weight.copy_(t["a"].permute(0, 2, 1).reshape(n * r, -1, 1, 1))
            module.vertical.weight.copy_(t["b"].permute(0, 2, 1).reshape(n * r, 1, -1, 1))
            module.horizontal.weight.copy_(t["h"].permute(0, 2, 1).reshape(n, r, 1, -1))
            last = module.horizontal
        if conv.bias is not None:
            last.bias.copy_(conv.bias)
    for p in module.parameters():
        p.requires_grad_(conv.weight.requires_grad)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


# ---------------------------------------------------------------------------- an energy for a mult-add budget


def _conv_inputs(model: nn.Module, names: list[str], input_size: Sequence[int]) -> dict[str, tuple[int, int]]:
    """Spatial (H, W) of each named conv's input, from one forward pass of a ``meta`` copy (no compute)."""
    shapes: dict[str, tuple[int, int]] = {}
    probe = copy.deepcopy(model).to("meta").eval()
    handles = [
        probe.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: shapes.__setitem__(
                name, (int(args[0].shape[-2]), int(args[0].shape[-1]))
            )
        )
        for name in names
    ]
    try:
        probe(torch.zeros(1, *input_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _mult_adds(conv: nn.Conv2d, method: str | None, r: int, hw: tuple[int, int]) -> int:
    """Mult-adds per image of ``conv`` (``method`` None) or of its rank-``r`` replacement, for input ``hw``.

    Each conv costs (output elements) x (inputs per output): the lecture's D_K^2 M N D_F^2.
    """
    n, c = conv.out_channels, conv.in_channels
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    ph, pw = int(conv.padding[0]), int(conv.padding[1])  # numbers: _unsupported refused strings
    ho, wo = conv_output_size(hw[0], kh, sh, ph, dh), conv_output_size(hw[1], kw, sw, pw, dw)
    if method is None:
        return n * c * kh * kw * ho * wo
    if method == "depthwise_separable":
        return c * r * (kh * kw + n) * ho * wo
    w_in = hw[1]  # the vertical conv keeps the full width; the horizontal one strides it
    if method == "spatial_separable":
        return r * (c * kh * ho * w_in + n * kw * ho * wo)
    return r * n * (c * hw[0] * w_in + kh * ho * w_in + kw * ho * wo)  # flattened: the 1x1 runs first


def energy_for_budget(
    model: nn.Module,
    method: str,
    input_size: Sequence[int],
    fraction: float,
    *,
    skip_costlier: bool = True,
    tol: float = 1e-4,
) -> float:
    """The largest ``energy`` (within ``tol``) at which ``decompose`` keeps at most ``fraction`` of the mult-adds.

    One retained-energy target for all layers (as Jaderberg et al. 2014 and most tools
    choose ranks), found by bisection; mult-adds per image at ``input_size`` (C, H, W),
    counted as :func:`cnnkit.analysis.summarize` counts them. (A greedy allocation that
    maximises the product of the layers' retained weight energies, after Zhang et al.
    2016 sec. 3.5, was tried on a trained Fashion-MNIST resnet20 and lost far more
    accuracy before fine-tuning than this uniform target, so it is not offered.)
    Raises ValueError when even rank 1 everywhere keeps more than ``fraction``.
    """
    from cnnkit.analysis.summary import summarize

    _check_method(method)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ValueError(f"fraction is the share of the mult-adds to keep, in (0, 1); got {fraction!r}")
    layers = [(name, conv) for name, conv in _candidates(model) if _unsupported(conv, method) is None]
    inputs = _conv_inputs(model, [name for name, _ in layers], input_size)
    total = summarize(model, tuple(input_size)).total_mult_adds
    rows = []  # (curve, max rank, conv mult-adds, mult-adds per rank, conv weights, weights per rank)
    for name, conv in layers:
        if name not in inputs:  # never called in the forward pass
            continue
        w = conv.weight.detach().to(torch.float64)
        n, c, kh, kw = w.shape
        max_rank = _max_rank(method, n, c, kh, kw)
        # ranks whose factors are no smaller than the conv are skipped anyway: no need to compute
        # them (it matters for the CP curve of the flattened method, which costs an ALS run per rank)
        useful = (
            (n * c * kh * kw - 1) // _params_after(method, 1, n, c, kh, kw) if skip_costlier else max_rank
        )
        if useful < 1:
            continue
        curve = _FACTORISE[method](w, min(useful, max_rank), None).curve
        rows.append(
            (
                torch.tensor(curve),
                max_rank,
                _mult_adds(conv, None, 0, inputs[name]),
                _mult_adds(conv, method, 1, inputs[name]),
                n * c * kh * kw,
                _params_after(method, 1, n, c, kh, kw),
            )
        )

    def kept(energy: float) -> float:
        cost = total
        for curve, max_rank, conv_cost, per_rank, weights, weights_per_rank in rows:
            r = _rank_from_energy(curve, energy)
            if curve[-1] < energy - 1e-12:  # beyond the computed ranks: costlier than the conv
                r = max_rank
            if skip_costlier and r * weights_per_rank >= weights:
                continue  # decompose leaves this conv alone
            cost += r * per_rank - conv_cost
        return cost / total

    lo, hi = 0.0, 1.0  # kept() grows with the energy; invariant: kept(lo) <= fraction < kept(hi) or hi = 1
    if kept(1e-9) > fraction:
        raise ValueError(
            f"{method} cannot bring the model to {fraction} of its mult-adds: rank 1 everywhere keeps "
            f"{kept(1e-9):.3f}"
        )
    lo = 1e-9
    if kept(1.0) <= fraction:
        return 1.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid) <= fraction else (lo, mid)
    return lo


# ---------------------------------------------------------------------------- public API


def _check_targets(rank: int | None, energy: float | None, ranks: Mapping[str, int] | None) -> None:
    given = [k for k, v in (("rank", rank), ("energy", energy), ("ranks", ranks)) if v is not None]
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of rank (an int >= 1), energy (a fraction in (0, 1]) or ranks (per layer); got "
            f"{', '.join(given) or 'none'}"
        )
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be an int >= 1; got {rank!r}")
    if energy is not None and (
        isinstance(energy, bool) or not isinstance(energy, int | float) or not 0 < energy <= 1
    ):
        raise ValueError(f"energy is the fraction of ||W||^2 to retain, in (0, 1]; got {energy!r}")
    if ranks is not None:
        for name, r in ranks.items():
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise ValueError(f"ranks[{name!r}] must be an int >= 1; got {r!r}")


def _plan_and_factors(
    model: nn.Module,
    method: str,
    rank: int | None,
    energy: float | None,
    ranks: Mapping[str, int] | None,
    skip_costlier: bool,
    compute: bool,
) -> tuple[DecompositionPlan, dict[str, _Factors]]:
    _check_method(method)
    _check_targets(rank, energy, ranks)
    plan = DecompositionPlan(method)
    factors: dict[str, _Factors] = {}
    candidates = dict(_candidates(model))
    if ranks is not None:
        unknown = [k for k in ranks if k not in candidates]
        if unknown:
            raise ValueError(
                f"ranks names {unknown[0]!r}, which is not a conv with a kernel larger than 1x1 in this model"
            )
    for name, conv in candidates.items():
        if ranks is not None and name not in ranks:
            continue
        reason = _unsupported(conv, method)
        if reason is not None:
            if ranks is not None:
                raise ValueError(f"{name}: cannot decompose with {method}: {reason}")
            plan.skipped[name] = reason
            continue
        n, c, kh, kw = conv.weight.shape
        max_rank = _max_rank(method, n, c, kh, kw)
        before = n * c * kh * kw
        if compute:
            f = _FACTORISE[method](
                conv.weight.detach().to(torch.float64), ranks[name] if ranks else rank, energy
            )
            factors[name] = f
            r, kept = f.rank, f.energy
        else:
            assert ranks is not None
            r, kept = min(ranks[name], max_rank), math.nan
        after = _params_after(method, r, n, c, kh, kw)
        if skip_costlier and ranks is None and after >= before:
            plan.skipped[name] = f"rank {r} factors hold {after} weights, the conv {before}: no saving"
            factors.pop(name, None)
            continue
        plan.layers[name] = LayerDecomposition(name, c, n, (kh, kw), r, max_rank, kept, before, after)
    return plan, factors


def _check_not_decomposed(model: nn.Module) -> None:
    # one spec per model: a second pass would record only its own layers and could not be rebuilt
    spec = getattr(model, "decomposition", None)
    if isinstance(spec, dict):
        raise ValueError(
            f"this model is decomposed already ({spec.get('method')}); decompose the original model"
        )


def plan_decomposition(
    model: nn.Module,
    method: str,
    *,
    rank: int | None = None,
    energy: float | None = None,
    skip_costlier: bool = True,
) -> DecompositionPlan:
    """The ranks :func:`decompose` would choose, the energy each keeps, and what it would skip."""
    return _plan_and_factors(model, method, rank, energy, None, skip_costlier, compute=True)[0]


def decompose(
    model: nn.Module,
    method: str,
    *,
    rank: int | None = None,
    energy: float | None = None,
    ranks: Mapping[str, int] | None = None,
    skip_costlier: bool = True,
) -> nn.Module:
    """A copy of ``model`` whose k x k convs are replaced by rank-r separable approximations.

    ``method``: one of :data:`METHODS` (see the module docstring). Give exactly one of
    ``rank`` (every layer, capped at its maximum rank), ``energy`` (per layer, the
    smallest rank that keeps this fraction of ``||W||_F^2``) or ``ranks`` (module name ->
    rank, only those layers). ``skip_costlier`` leaves alone the layers whose factors
    would hold as many weights as the conv (not applied to ``ranks``). ``model`` is
    left untouched. The copy carries ``decomposition`` (``{"method", "ranks"}``, what
    :func:`build_decomposed` needs to rebuild it).
    """
    return decompose_with_plan(
        model, method, rank=rank, energy=energy, ranks=ranks, skip_costlier=skip_costlier
    )[0]


def decompose_with_plan(
    model: nn.Module,
    method: str,
    *,
    rank: int | None = None,
    energy: float | None = None,
    ranks: Mapping[str, int] | None = None,
    skip_costlier: bool = True,
) -> tuple[nn.Module, DecompositionPlan]:
    """:func:`decompose`, also returning the :class:`DecompositionPlan` it followed."""
    _check_not_decomposed(model)
    plan, factors = _plan_and_factors(model, method, rank, energy, ranks, skip_costlier, compute=True)
    out = copy.deepcopy(model)
    for name in plan.layers:
        conv = out.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        module = _replacement(conv, method, factors[name].rank)
        _load_factors(module, conv, method, factors[name])
        _set_submodule(out, name, module)
    out.decomposition = plan.spec()  # type: ignore[assignment]
    return out, plan


def build_decomposed(model: nn.Module, method: str, ranks: Mapping[str, int]) -> nn.Module:
    """The structure :func:`decompose` gives ``model`` for per-layer ``ranks``, without computing factors.

    For reloading saved weights: build the zoo model (on ``meta`` if you like), call
    this with the saved spec, then ``load_state_dict``. The new layers hold fresh
    initial weights. ``model`` is changed in place and returned.
    """
    _check_not_decomposed(model)
    plan, _ = _plan_and_factors(model, method, None, None, ranks, skip_costlier=False, compute=False)
    for name, d in plan.layers.items():
        conv = model.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        _set_submodule(model, name, _replacement(conv, method, d.rank))
    model.decomposition = plan.spec()  # type: ignore[assignment]
    return model


def rebuild_decomposed(model: nn.Module, spec: Mapping[str, Any]) -> None:
    """The run folder's rebuild hook (:func:`cnnkit.run.register_rebuild`): ``spec`` is the
    ``decomposition`` metadata that :func:`cnnkit.deploy.runs.decompose_run` writes."""
    build_decomposed(model, spec["method"], spec["ranks"])


register_rebuild("decomposition", rebuild_decomposed)
