"""Depthwise separable vs full convolutions (lecture slides "Depthwise Separable Convolution"
and "MobileNets", table 4 of Howard et al. 2017, arXiv:1704.04861).

The lecture: a depthwise separable convolution costs ``1/N + 1/D_K^2`` of a standard one
(M = N = 128, D_K = 3, D_F = 64: 71,827,456 against 603,979,776 mult-adds), and MobileNet
built from them needs 569M mult-adds against Conv MobileNet's 4866M (8.6x fewer) for 1.1
points of ImageNet accuracy (70.6% against 71.7%). Here both nets, narrowed by the width
multiplier, train on the same data; the report also shows the trained MobileNet's first-layer
filters, feature maps and a saliency map (:mod:`cnnkit.viz`).
"""

from __future__ import annotations

from typing import Any

import torch

from cnnkit.data.sources import normalize
from cnnkit.lab.common import (
    arm_table,
    budgets,
    cost_table,
    experiment,
    load_model,
    load_test_split,
    measure_arms,
    measured,
    paired_difference,
    run_meta,
)
from cnnkit.lab.figures import Accuracy, Curves, Custom, bar_figure, plots
from cnnkit.lab.spec import About, Arm, ArmRun, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="separable",
    title="Depthwise separable convolutions: 8-9x fewer mult-adds for about 1% accuracy",
    claim="""
        A depthwise separable convolution costs 1/N + 1/D_K^2 of a standard one; MobileNet needs 569M
        mult-adds against Conv MobileNet's 4866M (8.6x fewer) for 1.1 points of ImageNet top-1 (70.6%
        vs 71.7%).
    """,
    slide="Depthwise Separable Convolution; MobileNets (Howard et al. 2017, table 4)",
    rule="""
        reproduced if the measured mult-add ratio Conv MobileNet / MobileNet lies in [7, 10] and the
        mean top-1 cost of the separable net (paired by seed) is at most 2 points; partly if one
        holds.
    """,
    notes="""
        Both nets use width multiplier 0.25 and the stride-1 small-input stem at 28x28, so the ratio
        differs a little from ImageNet's (the stem and classifier weigh more at this size). Measured
        training images/s is reported, not judged: on CPUs depthwise convolutions are memory-bound and
        do not speed up in proportion to their mult-adds.
    """,
)

_WIDTH = {"model_kwargs": {"width_mult": 0.25}}
ARMS = (
    Arm("separable", "mobilenet_v1", _WIDTH, label="MobileNet (depthwise separable)"),
    Arm("conv", "mobilenet_v1_conv", _WIDTH, label="Conv MobileNet (full 3x3)"),
)
BUDGETS = budgets(
    quick=Budget(epochs=8, train_subset=3000, test_subset=2000, seeds=2, batch_size=128),
    full=Budget(epochs=15, seeds=3, batch_size=128),
)


def lecture_layer_cost() -> dict[str, int]:
    """The lecture's example layer (M = N = 128, D_K = 3, D_F = 64) counted by cnnkit.analysis."""
    from torch import nn

    from cnnkit.analysis.summary import summarize
    from cnnkit.layers.conv import DepthwiseSeparableConv2d

    with torch.device("meta"):
        std = nn.Conv2d(128, 128, 3, padding=1, bias=False)
        sep = DepthwiseSeparableConv2d(128, 128, 3)
    return {
        "standard": summarize(std, (128, 64, 64)).total_mult_adds,
        "separable": summarize(sep, (128, 64, 64)).total_mult_adds,
    }


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx, cost=True)
    sep, conv = arms["separable"], arms["conv"]
    layer = lecture_layer_cost()
    ratio = conv["mult_adds"] / sep["mult_adds"] if sep["mult_adds"] and conv["mult_adds"] else None
    return {
        "arms": arms,
        "lecture_layer": layer,
        "lecture_layer_ratio": layer["standard"] / layer["separable"],
        "mult_add_ratio": ratio,
        "param_ratio": conv["params"] / sep["params"] if sep["params"] and conv["params"] else None,
        "accuracy_cost": paired_difference(conv["test_top1"], sep["test_top1"]),
        "speed_ratio": sep["images_per_s"] / conv["images_per_s"] if conv["images_per_s"] else None,
    }


def judge(n: dict[str, Any]) -> Verdict:
    ratio, cost = n["mult_add_ratio"], n["accuracy_cost"]["mean"]
    checks: list[Check] = [
        (
            f"separable net needs 7-10x fewer mult-adds (measured {ratio:.2f}x)"
            if ratio
            else "mult-add ratio (not measured)",
            None if ratio is None else 7 <= ratio <= 10,
        ),
        (
            f"accuracy cost of separable convolutions at most 2 points (measured {100 * cost:+.2f})"
            if measured(cost)
            else "accuracy cost (no finished runs)",
            cost <= 0.02 if measured(cost) else None,
        ),
    ]
    return combine(
        checks,
        f"{ratio or float('nan'):.1f}x fewer mult-adds; the separable net's top-1 is "
        f"{abs(100 * cost):.2f} points {'below' if cost > 0 else 'above'} the full convolutions",
    )


def tables(n: dict[str, Any]) -> list[Table]:
    layer = n["lecture_layer"]
    return [
        arm_table(n["arms"]),
        cost_table(
            "Cost and accuracy (mult-adds per image at the data's resolution)",
            n["arms"],
            extra=[("train img/s (measured)", lambda _, v: f"{v['images_per_s']:.0f}")],
        ),
        Table(
            "The lecture's layer (M = N = 128, D_K = 3, D_F = 64), counted by cnnkit.analysis",
            ["convolution", "mult-adds (cnnkit)", "mult-adds (lecture)"],
            [
                ["standard 3x3", f"{layer['standard']:,}", "603,979,776"],
                ["depthwise separable", f"{layer['separable']:,}", "71,827,456"],
                ["ratio", f"{n['lecture_layer_ratio']:.2f}x", f"{603979776 / 71827456:.2f}x"],
            ],
        ),
    ]


def _cost(ctx: Context, n: dict[str, Any]) -> Any:
    return bar_figure(
        [(v["label"], [float(v["mult_adds"] or 0) / 1e6]) for v in n["arms"].values()],
        ylabel="mult-adds per image (M)",
        title=f"cost: {n['mult_add_ratio'] or 0:.2f}x",
        scale=1.0,
        zoom=False,
    )


def _trained(ctx: Context) -> tuple[Any, list[Any], Any, ArmRun] | None:
    """The trained MobileNet of seed 0, the first six test images (standardised as it was
    trained), their labels and its run; ``None`` without a finished run."""
    runs = ctx.ok_runs("separable")
    if not runs:
        return None
    model, m, s = load_model(runs[0])
    x, y = load_test_split(ctx)
    imgs = list(normalize(x[: min(6, len(y))], m, s))
    return model, imgs, y, runs[0]


def _filters(ctx: Context, n: dict[str, Any]) -> Any:
    from cnnkit.viz.maps import plot_filters

    trained = _trained(ctx)
    return (
        None
        if trained is None
        else plot_filters(trained[0], title="MobileNet: first-layer (full 3x3) filters")
    )


FEATURE_LAYER = "features.1"  # the first depthwise separable block


def _feature_maps(ctx: Context, n: dict[str, Any]) -> Any:
    from cnnkit.viz.maps import feature_maps, plot_feature_maps

    trained = _trained(ctx)
    if trained is None:
        return None
    model, imgs, _, _ = trained
    name, maps = feature_maps(model, imgs[0], FEATURE_LAYER)
    return plot_feature_maps(imgs[0], maps, layer=name)


def _saliency(ctx: Context, n: dict[str, Any]) -> Any:
    from cnnkit.viz.maps import plot_saliency, saliency

    trained = _trained(ctx)
    if trained is None:
        return None
    model, imgs, y, run = trained
    sal = [saliency(model, im) for im in imgs]
    classes = _classes(run)
    return plot_saliency(
        imgs,
        [m_ for m_, _ in sal],
        titles=[f"pred {classes[k]}\ntrue {classes[int(y[i])]}" for i, (_, k) in enumerate(sal)],
    )


def _classes(run: Any) -> list[str]:
    meta = run_meta(run)
    return list(meta.get("classes") or [str(i) for i in range(int(meta["num_classes"]))])


FIGURES = plots(
    Curves("Training error (thin) and test top-1 error (bold) by epoch, mean over seeds."),
    Accuracy("Test top-1 of each net; each dot is one seed.", title="accuracy (dots: seeds)"),
    Custom("cost", "Mult-adds per image, traced by cnnkit.analysis.", _cost),
    Custom(
        "filters",
        "First-layer filters of the trained MobileNet (seed 0), each scaled to [0, 1] (Zeiler & Fergus).",
        _filters,
    ),
    Custom(
        "feature_maps",
        f"Feature maps of the first test image after {FEATURE_LAYER} (the first depthwise separable block).",
        _feature_maps,
    ),
    Custom("saliency", "Saliency |d score / d pixel| of the predicted class (Simonyan et al.).", _saliency),
)


EXPERIMENT = experiment(__name__)
