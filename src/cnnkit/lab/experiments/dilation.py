"""Receptive-field growth of dilated convolutions (lecture slides "Dilated Convolution" and
"Receptive Fields"; Yu & Koltun 2016, "Multi-scale context aggregation by dilated
convolutions", fig. 1).

The lecture: stacking 3x3 convolutions with dilation 1, 2, 4 (F1 = Conv(F0), F2 =
DilatedConv(F1, l=2), F3 = DilatedConv(F2, l=4)) grows the receptive field 3, 7, 15 --
exponentially, as 2^(i+1) - 1 -- "without losing resolution", while undilated 3x3
convolutions grow it linearly (3, 5, 7). No training: the sizes come from
:func:`cnnkit.analysis.plot.rf_growth`, and are checked against the ground truth of
autograd (the input pixels whose gradient reaches the centre output unit).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.lab.common import SMOKE, budgets, experiment, paper_table
from cnnkit.lab.figures import Custom, new_figure, plots
from cnnkit.lab.spec import About, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT", "dilated_stack", "gradient_support"]

ABOUT = About(
    name="dilation",
    title="Dilated convolutions grow the receptive field exponentially without losing resolution",
    claim="""
        F1 = Conv(F0), F2 = DilatedConv(F1, l=2), F3 = DilatedConv(F2, l=4): each unit of F_i sees
        (2^(i+1) - 1)^2 pixels (3x3, 7x7, 15x15), aggregating multi-scale context at full resolution.
    """,
    slide="Dilated Convolution; Receptive Fields (Yu & Koltun 2016)",
    rule="""
        reproduced if the analysed fields equal 2^(i+1) - 1 (dilated) and 2i + 1 (standard) for every
        layer, agree with autograd's support, and the output keeps the input size; partly if some
        hold.
    """,
    notes="No training: the budget does not change this experiment.",
)

DEPTH = 6
SIZE = 161  # input side: larger than the deepest field (2^7 - 1 = 127)
# nothing trains: every budget computes the same fields
BUDGETS = budgets(quick=Budget(epochs=1), standard=Budget(epochs=1), full=Budget(epochs=1), smoke=SMOKE)


def dilated_stack(dilations: list[int], channels: int = 1) -> nn.Sequential:
    """3x3 convolutions with the given dilations, padded to keep the resolution (padding = dilation)."""
    return nn.Sequential(
        *[nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False) for d in dilations]
    )


def gradient_support(model: nn.Sequential, size: int = SIZE) -> list[torch.Tensor]:
    """For each layer of a Sequential: the mask of input pixels that reach its centre unit.

    All weights are set to 1 (a copy of the model is not needed: the caller's model is
    built for this), so no two paths cancel and the support is exactly the set of input
    pixels with a nonzero gradient.
    """
    masks = []
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    for depth in range(1, len(model) + 1):
        x = torch.zeros(1, 1, size, size, requires_grad=True)
        out = model[:depth](x)
        out[0, 0, size // 2, size // 2].backward()
        assert x.grad is not None
        masks.append(x.grad[0, 0] != 0)
    return masks


def _extent(mask: torch.Tensor) -> int:
    rows = torch.nonzero(mask.any(1)).flatten()
    return int(rows.max() - rows.min() + 1) if len(rows) else 0


def measure(ctx: Context) -> dict[str, Any]:
    from cnnkit.analysis.plot import rf_growth

    stacks = {"dilated": [2**i for i in range(DEPTH)], "standard": [1] * DEPTH}
    out: dict[str, Any] = {"dilations": stacks["dilated"]}
    for name, dil in stacks.items():
        model = dilated_stack(dil)
        steps = rf_growth(model, (1, SIZE, SIZE))
        masks = gradient_support(model)
        with torch.no_grad():
            out_shape = list(model(torch.zeros(1, 1, SIZE, SIZE)).shape[2:])
        out[name] = {
            "rf_analysis": [int(s.size) for s in steps],
            "rf_gradient": [_extent(m) for m in masks],
            "fill": [float(m.float().sum()) / max(_extent(m), 1) ** 2 for m in masks],
            "output_size": out_shape,
        }
    out["expected"] = {
        "dilated": [2 ** (i + 2) - 1 for i in range(DEPTH)],
        "standard": [2 * (i + 1) + 1 for i in range(DEPTH)],
    }
    return out


def judge(n: dict[str, Any]) -> Verdict:
    dil, std, exp = n["dilated"], n["standard"], n["expected"]
    checks: list[Check] = [
        (
            f"dilated stack grows as 2^(i+1) - 1: {dil['rf_analysis']} (lecture: 3, 7, 15, ...)",
            dil["rf_analysis"] == exp["dilated"],
        ),
        (
            f"undilated stack grows linearly, 2i + 1: {std['rf_analysis']}",
            std["rf_analysis"] == exp["standard"],
        ),
        (
            "the analysis agrees with autograd's support for every layer",
            dil["rf_analysis"] == dil["rf_gradient"] and std["rf_analysis"] == std["rf_gradient"],
        ),
        (
            f"resolution kept: output {dil['output_size']} equals input {SIZE}x{SIZE}",
            dil["output_size"] == [SIZE, SIZE],
        ),
    ]
    return combine(
        checks,
        f"after {len(dil['rf_analysis'])} layers the field is {dil['rf_analysis'][-1]} px dilated vs "
        f"{std['rf_analysis'][-1]} px undilated",
    )


def tables(n: dict[str, Any]) -> list[Table]:
    rows = [
        [
            i + 1,
            n["dilations"][i],
            n["dilated"]["rf_analysis"][i],
            n["dilated"]["rf_gradient"][i],
            n["expected"]["dilated"][i],
            n["standard"]["rf_analysis"][i],
            f"{100 * n['dilated']['fill'][i]:.0f}%",
        ]
        for i in range(len(n["dilations"]))
    ]
    # Yu & Koltun 2016, sec. 2 and Figure 1: after F_{i+1} = F_i *_{2^i} k_i each element of
    # F_{i+1} sees (2^{i+2} - 1) x (2^{i+2} - 1) pixels: 3x3, 7x7, 15x15 in the figure
    paper = [3, 7, 15]
    here = n["dilated"]["rf_analysis"][: len(paper)]
    agreement = (
        "the fields agree exactly." if here == paper else f"the fields differ: {here} against {paper}."
    )
    return [
        Table(
            "Receptive field (px) after each 3x3 layer",
            [
                "layer",
                "dilation",
                "dilated: analysis",
                "dilated: autograd",
                "2^(i+1)-1",
                "undilated",
                "dilated field covered",
            ],
            rows,
        ),
        paper_table(
            "Yu & Koltun 2016, Figure 1",
            [
                (f"field after layer {i + 1} (px)", str(a), str(b))
                for i, (a, b) in enumerate(zip(paper, here, strict=False))
            ],
            agreement,
        ),
    ]


def _support(ctx: Context, n: dict[str, Any]) -> Any:
    masks = gradient_support(dilated_stack(n["dilations"][:3]), size=17)
    fig = new_figure(9, 3.4)
    axes = fig.subplots(1, 3)
    for i, (ax, m) in enumerate(zip(axes, masks, strict=True)):
        ax.imshow(m.float().numpy(), cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest")
        ax.set_title(f"F{i + 1}: dilation {2**i}, field {_extent(m)}x{_extent(m)}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("input pixels reaching one unit (autograd), as the lecture's receptive-field slide")
    return fig


def _growth(ctx: Context, n: dict[str, Any]) -> Any:
    fig = new_figure(6.2, 3.6)
    ax = fig.add_subplot()
    xs = list(range(1, len(n["dilations"]) + 1))
    ax.plot(xs, n["dilated"]["rf_analysis"], "o-", label="dilation 1, 2, 4, ...")
    ax.plot(xs, n["standard"]["rf_analysis"], "s-", label="dilation 1 (standard)")
    ax.set_yscale("log", base=2)
    ax.set(xlabel="3x3 layers", ylabel="receptive field (px)", title="exponential vs linear growth")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def _zoo(ctx: Context, n: dict[str, Any]) -> Any:
    from cnnkit.models.registry import create_model
    from cnnkit.viz.plots import plot_rf_growth

    zoo = {"fmnet": "fmnet", "resnet20": "resnet20", "mobilenet_v1": "mobilenet_v1"}
    models = {}
    for label, name in zoo.items():
        with torch.device("meta"):
            models[label] = create_model(name, num_classes=10, in_chans=1, small_input=True)
    return plot_rf_growth(models, (1, 28, 28), title="receptive field of zoo nets at 28x28")


FIGURES = plots(
    Custom("support", "Pixels whose gradient reaches the centre unit after 1, 2, 3 layers.", _support),
    Custom("growth", "Receptive field after each layer (cnnkit.analysis.rf_growth).", _growth),
    Custom("zoo", "Receptive-field growth of three zoo nets on 28x28 inputs (small-input stems).", _zoo),
)


EXPERIMENT = experiment(__name__)
