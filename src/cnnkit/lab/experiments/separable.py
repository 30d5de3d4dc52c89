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
    effect_text,
    experiment,
    load_model,
    load_test_split,
    measure_arms,
    measured,
    paired_difference,
    paper_table,
    pm,
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
        Two checks. (1) Cost: the mult-add ratio Conv MobileNet / MobileNet, traced by cnnkit.analysis,
        lies in [7, 10] (the paper: 8.6x). (2) Accuracy: the separable net's top-1 cost (Conv MobileNet
        minus MobileNet, paired by seed, mean over seeds) is at most 2 points, the claim's "about 1%"
        (1.1 points in the paper) with a point of slack; the check fails when the cost passes 2 points
        by more than one standard error of the paired difference (at least two seeds), and is unknown
        when it passes 2 points within that error or with one seed. Both hold: reproduced; one:
        partly; none: not reproduced; an unknown check: inconclusive.
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
    # standard: the quick budget (3,000 images, 8 epochs, 2 seeds) left the separable net 3.95
    # points behind with the noise barely measured (2 seeds) and both nets still learning; 3 seeds
    # on 2.3x the images (at width 0.25 neither net overfits much), 5 epochs, channels_last (the
    # same arithmetic, faster on CPUs): about 8 minutes on 2 idle cores
    standard=Budget(
        epochs=5,
        train_subset=7000,
        test_subset=2000,
        seeds=3,
        batch_size=128,
        overrides={"channels_last": True},
    ),
    full=Budget(epochs=15, seeds=3, batch_size=128),
)
MAX_COST = 0.02  # the accuracy the claim allows the separable net to lose ("about 1%": 1.1 points)
RATIO = (7.0, 10.0)  # the mult-add ratio the claim allows (the paper's 8.6x)
# the paper, table 4 (ImageNet): (top-1 %, mult-adds in millions, parameters in millions)
PAPER = {"conv": (71.7, 4866, 29.3), "separable": (70.6, 569, 4.2)}


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


def _cost_check(cost: dict[str, float]) -> tuple[str, bool | None]:
    """The accuracy check of the rule on the paired difference conv minus separable: the text
    (the effect, and why the check holds, fails or is unknown) and its outcome."""
    m, se, n = cost["mean"], cost["se"], int(cost["n"])
    text = effect_text(cost, "top-1 cost of the separable net (conv minus separable)")
    if n == 0 or not measured(m):
        return text, None
    if m <= MAX_COST:
        return f"{text}: within the claim's {100 * MAX_COST:.0f} points", True
    if n >= 2 and measured(se) and m - se > MAX_COST:
        return f"{text}: beyond the claim's {100 * MAX_COST:.0f} points by more than the noise", False
    if n < 2 or not measured(se):
        return f"{text}: above the claim's {100 * MAX_COST:.0f} points, from one seed", None
    return f"{text}: above the claim's {100 * MAX_COST:.0f} points, within the noise", None


def judge(n: dict[str, Any]) -> Verdict:
    ratio = n["mult_add_ratio"]
    cost_text, cost_ok = _cost_check(n["accuracy_cost"])
    checks: list[Check] = [
        (
            f"separable net needs {RATIO[0]:.0f}-{RATIO[1]:.0f}x fewer mult-adds (measured {ratio:.2f}x)"
            if ratio
            else "mult-add ratio (not measured)",
            None if ratio is None else RATIO[0] <= ratio <= RATIO[1],
        ),
        (cost_text, cost_ok),
    ]
    ratio_text = f"{ratio:.1f}x fewer mult-adds (the paper: 8.6x)" if ratio else "mult-adds not measured"
    return combine(checks, f"{ratio_text}; {cost_text}")


def _agreement(n: dict[str, Any]) -> str:
    """One sentence from the numbers: whether the separable net is cheaper and less accurate here
    as in the paper, and how the sizes compare."""
    ratio, cost = n["mult_add_ratio"], n["accuracy_cost"]["mean"]
    paper_ratio = PAPER["conv"][1] / PAPER["separable"][1]
    paper_cost = PAPER["conv"][0] - PAPER["separable"][0]
    if ratio is None or not measured(cost):
        return "not compared: a net did not finish"
    cheaper, costlier = ratio > 1, cost > 0
    direction = (
        "agrees (the separable net is cheaper and less accurate)"
        if cheaper and costlier
        else "disagrees (the separable net is "
        + ("cheaper" if cheaper else "not cheaper")
        + " and "
        + ("less" if costlier else "at least as")
        + " accurate)"
    )
    saving = "about the paper's" if RATIO[0] <= ratio <= RATIO[1] else "unlike the paper's"
    points = 100 * cost
    size = (
        "about as large as"
        if 0 < points <= 2 * paper_cost
        else "larger than"
        if points > 2 * paper_cost
        else "the opposite of"
    )
    return (
        f"the direction {direction}; the mult-add saving is {saving} ({ratio:.1f}x here, "
        f"{paper_ratio:.1f}x in the paper) and the accuracy cost {size} the paper's "
        f"({points:+.2f} points here, {paper_cost:+.1f} in the paper)"
    )


def _paper(n: dict[str, Any]) -> Table:
    sep, conv = n["arms"]["separable"], n["arms"]["conv"]
    (c_top1, c_madds, c_params), (s_top1, s_madds, s_params) = PAPER["conv"], PAPER["separable"]
    cost = n["accuracy_cost"]
    se = f" +- {100 * cost['se']:.2f}" if measured(cost["se"]) else ""

    def madds(v: dict[str, Any]) -> str:
        return "n/a" if v["mult_adds"] is None else f"{v['mult_adds'] / 1e6:.2f}M"

    def params(v: dict[str, Any]) -> str:
        return "n/a" if v["params"] is None else f"{v['params'] / 1e6:.2f}M"

    ratio, pratio = n["mult_add_ratio"], n["param_ratio"]
    rows = [
        (
            "mult-adds: Conv MobileNet / MobileNet",
            f"{c_madds}M / {s_madds}M = {c_madds / s_madds:.2f}x",
            f"{madds(conv)} / {madds(sep)} = " + (f"{ratio:.2f}x" if ratio else "n/a"),
        ),
        (
            "parameters: Conv MobileNet / MobileNet",
            f"{c_params}M / {s_params}M = {c_params / s_params:.2f}x",
            f"{params(conv)} / {params(sep)} = " + (f"{pratio:.2f}x" if pratio else "n/a"),
        ),
        ("top-1: Conv MobileNet", f"{c_top1}%", pm(conv["test_top1"])),
        ("top-1: MobileNet (depthwise separable)", f"{s_top1}%", pm(sep["test_top1"])),
        (
            "top-1 cost of the separable net (points)",
            f"{c_top1 - s_top1:+.1f}",
            f"{100 * cost['mean']:+.2f}{se} (paired by seed)" if measured(cost["mean"]) else "n/a",
        ),
    ]
    return paper_table("Howard et al. 2017, table 4 (ImageNet, 224 px)", rows, _agreement(n))


def tables(n: dict[str, Any]) -> list[Table]:
    layer = n["lecture_layer"]
    return [
        arm_table(n["arms"]),
        _paper(n),
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
