"""Transposed convolution is the gradient of a convolution, and strides that do not divide the
kernel paint a checkerboard (lecture slide "Transposed Convolution"; Dumoulin & Visin 2016,
"A guide to convolution arithmetic", sec. 4; Odena et al. 2016, "Deconvolution and
checkerboard artifacts").

The lecture: a transposed convolution maps a convolution's output shape back to its input
shape by running the convolution "backwards". Measured here, with no training:

- **the adjoint**: for a strided convolution with weight W, ``<conv(x), y> = <x, convT(y)>``
  for every x and y when ``convT`` uses the same W, and ``convT(y)`` is exactly autograd's
  gradient of ``<conv(x), y>`` with respect to x;
- **the shape**: the output size is ``(in - 1) stride - 2 padding + kernel + output_padding``
  (:func:`cnnkit.layers.conv.transposed_conv_output_size`), the input size of the conv it
  inverts;
- **the checkerboard**: with all weights 1 and a constant input, each output pixel counts the
  input pixels that reach it. A 3x3 kernel at stride 2 overlaps unevenly (1, 2, 1, 2, ...:
  a checkerboard of ratio 4 between the most and least covered pixels in 2-D); a 4x4 kernel
  at stride 2 covers every interior pixel equally (ratio 1), as does Odena's resize-convolution
  (nearest upsampling then a 3x3 convolution).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.lab.common import SMOKE, budgets, experiment, paper_table
from cnnkit.lab.figures import Custom, new_figure, plots
from cnnkit.lab.spec import About, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT", "coverage"]

ABOUT = About(
    name="transposed",
    title="A transposed convolution is the gradient of a convolution; uneven overlap makes checkerboards",
    claim="""
        A transposed convolution with the weights of a strided convolution is that convolution's
        adjoint (its gradient with respect to the input) and restores the input's size; when the
        stride does not divide the kernel size, its outputs overlap unevenly and show a checkerboard.
    """,
    slide="Transposed Convolution (Dumoulin & Visin 2016; Odena et al. 2016)",
    rule="""
        reproduced if <conv(x), y> = <x, convT(y)> and convT(y) equals autograd's gradient (to 1e-4
        relative), the output size follows the formula, a 3x3 kernel at stride 2 covers the interior
        unevenly (max/min coverage 4) and a 4x4 kernel at stride 2 and a resize-convolution evenly (1);
        partly if some hold.
    """,
    notes="No training: the budget does not change this experiment.",
)

# nothing trains: every budget computes the same numbers
BUDGETS = budgets(quick=Budget(epochs=1), standard=Budget(epochs=1), full=Budget(epochs=1), smoke=SMOKE)
SIZE = 16  # the transposed conv's input side


def coverage(kernel: int, stride: int, size: int = SIZE, resize: bool = False) -> torch.Tensor:
    """How many input pixels reach each output pixel: all weights 1, a constant input of ones.
    ``resize``: nearest upsampling by ``stride`` then a ``kernel`` x ``kernel`` convolution."""
    x = torch.ones(1, 1, size, size)
    w = torch.ones(1, 1, kernel, kernel)
    with torch.no_grad():
        if resize:
            return F.conv2d(F.interpolate(x, scale_factor=stride, mode="nearest"), w, padding=kernel // 2)[
                0, 0
            ]
        return F.conv_transpose2d(x, w, stride=stride)[0, 0]


def _interior_ratio(c: torch.Tensor, margin: int) -> float:
    inner = c[margin:-margin, margin:-margin]
    return float(inner.max() / inner.min())


def measure(ctx: Context) -> dict[str, Any]:
    from cnnkit.layers.conv import transposed_conv_output_size

    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)  # 32x32 -> 16x16
    x = torch.randn(2, 8, 32, 32, requires_grad=True)
    y = torch.randn(2, 16, 16, 16)
    forward = (conv(x) * y).sum()
    (grad,) = torch.autograd.grad(forward, x)
    with torch.no_grad():
        back = F.conv_transpose2d(y, conv.weight, stride=2, padding=1, output_padding=1)
        adjoint = float((x * back).sum())
    out: dict[str, Any] = {
        "inner_conv": float(forward.detach()),
        "inner_transposed": adjoint,
        "adjoint_rel_error": abs(float(forward.detach()) - adjoint) / abs(float(forward.detach())),
        "gradient_max_diff": float((grad - back).abs().max()),
        "gradient_scale": float(grad.abs().max()),
        "output_size": list(back.shape[2:]),
        "formula_size": transposed_conv_output_size(16, 3, stride=2, padding=1, output_padding=1),
    }
    for name, (k, s, resize) in {
        "k3s2": (3, 2, False),
        "k4s2": (4, 2, False),
        "resize": (3, 2, True),
    }.items():
        c = coverage(k, s, resize=resize)
        out[name] = {
            "kernel": k,
            "stride": s,
            "ratio": _interior_ratio(c, 4),
            "center": c[8:12, 8:12].tolist(),
        }
    return out


def judge(n: dict[str, Any]) -> Verdict:
    checks: list[Check] = [
        (
            f"<conv(x), y> = <x, convT(y)>: {n['inner_conv']:.4f} vs {n['inner_transposed']:.4f}",
            n["adjoint_rel_error"] < 1e-4,
        ),
        (
            f"convT(y) is autograd's gradient: largest difference {n['gradient_max_diff']:.2e} "
            f"(gradient up to {n['gradient_scale']:.2f})",
            n["gradient_max_diff"] <= 1e-4 * max(n["gradient_scale"], 1.0),
        ),
        (
            f"the size comes back: {n['output_size']} from 16x16, the formula gives {n['formula_size']}",
            n["output_size"] == [n["formula_size"]] * 2 == [32, 32],
        ),
        (
            f"3x3 at stride 2 overlaps unevenly: coverage max/min {n['k3s2']['ratio']:.0f} (a checkerboard)",
            n["k3s2"]["ratio"] == 4,
        ),
        (
            f"4x4 at stride 2 and resize-convolution cover evenly: {n['k4s2']['ratio']:.0f} and "
            f"{n['resize']['ratio']:.0f}",
            n["k4s2"]["ratio"] == 1 and n["resize"]["ratio"] == 1,
        ),
    ]
    return combine(checks, f"checkerboard ratio {n['k3s2']['ratio']:.0f} for 3x3/2, 1 for 4x4/2")


def tables(n: dict[str, Any]) -> list[Table]:
    rows = [
        [name, n[name]["kernel"], n[name]["stride"], f"{n[name]['ratio']:.0f}"]
        for name in ("k3s2", "k4s2", "resize")
    ]
    # Odena, Dumoulin & Olah 2016 (Distill, "Deconvolution and checkerboard artifacts"): a kernel
    # whose size the stride does not divide overlaps unevenly, 1 and 2 inputs in turn along each
    # axis, and the two axes multiply (1 to 4: the checkerboard); a divisible kernel and their
    # resize-convolution cover evenly. Dumoulin & Visin 2016 (relationship 14): o' = s (i' - 1)
    # + a + k - 2p, 32 from 16 for k 3, s 2, p 1, a 1.
    paper = {"k3s2": 4.0, "k4s2": 1.0, "resize": 1.0}
    agree = all(n[k]["ratio"] == v for k, v in paper.items()) and n["output_size"][0] == 32
    return [
        Table("Interior coverage, max/min (1: even)", ["upsampling", "kernel", "stride", "max/min"], rows),
        paper_table(
            "Odena et al. 2016; Dumoulin & Visin 2016, relationship 14",
            [
                (
                    "coverage max/min, 3x3 at stride 2",
                    "4 (1-2 per axis, multiplied)",
                    f"{n['k3s2']['ratio']:.0f}",
                ),
                ("coverage max/min, 4x4 at stride 2", "1 (even)", f"{n['k4s2']['ratio']:.0f}"),
                ("coverage max/min, resize + 3x3 conv", "1 (even)", f"{n['resize']['ratio']:.0f}"),
                ("output side from 16 (k 3, s 2, p 1, a 1)", "32", str(n["output_size"][0])),
            ],
            "every figure agrees." if agree else "the figures differ (see the rows).",
        ),
    ]


def _checkerboard(ctx: Context, n: dict[str, Any]) -> Any:
    fig = new_figure(9, 3.4)
    axes = fig.subplots(1, 3)
    cases = [("3x3, stride 2", 3, False), ("4x4, stride 2", 4, False), ("nearest x2 + 3x3 conv", 3, True)]
    for ax, (title, k, resize) in zip(axes, cases, strict=True):
        c = coverage(k, 2, size=8, resize=resize)
        im = ax.imshow(c.numpy(), cmap="viridis", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(
        "input pixels reaching each output pixel (all weights 1): the checkerboard of uneven overlap"
    )
    return fig


FIGURES = plots(
    Custom(
        "checkerboard",
        "Coverage of a transposed convolution's outputs: 3x3 at stride 2 alternates, 4x4 at stride 2 "
        "and resize-convolution are even inside.",
        _checkerboard,
    ),
)


EXPERIMENT = experiment(__name__)
