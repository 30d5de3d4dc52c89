"""More paths at the same cost: cardinality (lecture slides "ResNeXt"; Xie et al. 2017,
"Aggregated residual transformations for deep neural networks", arXiv:1611.05431).

The lecture: "'cardinality' matters (the number of transformations in the layers) -- the next
dimension" beside depth and width. The paper's table 3 trains ResNeXt-50 at the complexity of
ResNet-50 with C paths of d channels each in every bottleneck (1x64d, 2x40d, 4x24d, 8x14d, 32x4d;
table 2 chooses d so that a block's weights ``C * (256 d + 3 * 3 * d * d + d * 256)`` stay about
70k) and the ImageNet top-1 error falls from 23.9% to 22.2% as C grows. Here the paper's CIFAR
net, ResNeXt-29 (:func:`cnnkit.models.resnext.resnext29`), at 1/8 of its width (stage widths 8,
16, 32, block outputs 32, 64, 128) takes table 2's widths divided by eight -- 1x8d, 2x5d, 4x3d --
which keep the parameters and mult-adds within 2% of each other (8 paths would need d = 2: 20%
more weights, so the ladder stops at 4), and trains them on the same data and seeds.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from cnnkit.lab.common import (
    arm_table,
    budgets,
    cost_table,
    experiment,
    measure_arms,
    measured,
    paired_difference,
    paper_table,
    pct,
)
from cnnkit.lab.figures import Accuracy, Curves, Custom, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict

__all__ = ["EXPERIMENT", "PAPER_TABLE_3", "block_weights", "counted_block_weights", "judge"]

ABOUT = About(
    name="cardinality",
    title="Cardinality: more paths of fewer channels beat one wide path at equal cost (ResNeXt)",
    claim="""
        'Cardinality' (the number of transformations aggregated in a block) is a dimension beside depth
        and width: at preserved complexity, increasing it improves accuracy (ResNeXt-50 32x4d: 22.2%
        ImageNet top-1 error against 23.9% for ResNet-50, 1x64d).
    """,
    slide="ResNeXt: 'cardinality' matters (Xie et al. 2017, tables 2 and 3)",
    rule="""
        Precondition: every arm's parameters and mult-adds within 5% of every other's (else
        inconclusive: not equal complexity). Reproduced if the highest cardinality's mean top-1 beats
        cardinality 1's, paired by seed, by more than one standard error of the paired difference over
        at least 3 seeds; partly if it is better but not by that margin (or over fewer seeds); not
        reproduced if it is equal or worse.
    """,
    notes="""
        ResNeXt-29 (Xie et al. sec. 5.2: a 3x3 stem, three stages of three bottleneck blocks, projection
        shortcuts) at 1/8 of the paper's width so that it trains on one CPU thread; the arms' widths are
        the paper's table 2 (1x64d, 2x40d, 4x24d) divided by eight. No augmentation beyond the trainer's
        defaults. The paper's "better than going wider" comparison (table 4, at twice the complexity)
        is not run.
    """,
)

WIDTHS = [8, 16, 32]  # the stages' bottleneck planes: ResNeXt-29's 64, 128, 256 divided by 8
STAGE1_CHANNELS = 4 * WIDTHS[0]  # a first-stage block's input and output channels
PATHS = ((1, 8), (2, 5), (4, 3))  # (cardinality C, bottleneck width d): table 2's rows / 8

ARMS = tuple(
    Arm(
        f"c{c}",
        "resnext29",
        {"model_kwargs": {"cardinality": c, "bottleneck_width": d, "widths": WIDTHS}},
        label=f"ResNeXt-29 {c}x{d}d" + (" (a ResNet)" if c == 1 else ""),
    )
    for c, d in PATHS
)
# a warm-up epoch: at lr 0.1 from step 1 the quick run's nets were still at chance after
# epoch 1 (the trainer said so), and one 4-path seed ended 3.4 points above its two twins
_WARM = {"warmup_epochs": 1.0}
BUDGETS = budgets(
    quick=Budget(epochs=4, train_subset=3000, test_subset=2000, seeds=3, batch_size=128, overrides=_WARM),
    # the quick runs still gained 2 points an epoch at epoch 4: more epochs on more images
    # (9 runs of 20,000 images, about 10 minutes on 2 cores: grouped convolutions run at
    # 60-70% of the 1-path net's images a second at equal mult-adds)
    standard=Budget(epochs=5, train_subset=4000, test_subset=2000, seeds=3, batch_size=128, overrides=_WARM),
    full=Budget(epochs=15, seeds=3, batch_size=128, overrides=_WARM),
)
EQUAL = 0.05  # parameters and mult-adds within 5% count as equal complexity
MIN_SEEDS = 3

# Xie et al. 2017, table 3 (ResNeXt-50 at ResNet-50's complexity): setting -> ImageNet top-1 error (%)
PAPER_TABLE_3 = {(1, 64): 23.9, (2, 40): 23.0, (4, 24): 22.6, (8, 14): 22.3, (32, 4): 22.2}


def block_weights(cardinality: int, width: int, channels: int) -> int:
    """A bottleneck block's convolution weights by the paper's formula (table 2, fig. 1 right):
    ``C * (channels * d + 3 * 3 * d * d + d * channels)`` -- C paths, each 1x1 in, 3x3, 1x1 out."""
    return cardinality * (channels * width + 9 * width * width + width * channels)


def counted_block_weights(cardinality: int, width: int) -> int:
    """The convolution weights of the second block of stage 1 (no projection) of an arm's net,
    counted by :func:`cnnkit.analysis.summary.summarize`."""
    from cnnkit.analysis.summary import summarize
    from cnnkit.models.registry import create_model

    with torch.device("meta"):
        net = create_model(
            "resnext29",
            num_classes=10,
            in_chans=1,
            cardinality=cardinality,
            bottleneck_width=width,
            widths=WIDTHS,
        )
    rows = summarize(net, (1, 28, 28)).layers
    return sum(r.weight_params for r in rows if r.name.startswith("layer1.1.") and r.type == "Conv2d")


def _known(x: float | None) -> bool:
    """A number that was measured: not missing (``None`` after a JSON round trip) and not NaN."""
    return x is not None and measured(x)


def _spread(values: list[int | None]) -> float | None:
    """Largest over smallest minus one (0.02: within 2%); ``None`` if a value is missing."""
    if not values or any(v is None for v in values):
        return None
    known = [int(v) for v in values if v is not None]
    return max(known) / min(known) - 1


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx, cost=True)
    for (c, d), v in zip(PATHS, arms.values(), strict=True):
        v["cardinality"], v["width"] = c, d
        v["block_formula"] = block_weights(c, d, STAGE1_CHANNELS)
        v["block_counted"] = counted_block_weights(c, d)
    base, top = arms[ARMS[0].name], arms[ARMS[-1].name]
    return {
        "arms": arms,
        "param_spread": _spread([v["params"] for v in arms.values()]),
        "mult_add_spread": _spread([v["mult_adds"] for v in arms.values()]),
        "gains": {k: paired_difference(v["test_top1"], base["test_top1"]) for k, v in arms.items()},
        "gain": paired_difference(top["test_top1"], base["test_top1"]),
        "top": top["label"],
    }


def judge(n: dict[str, Any]) -> Verdict:
    ps, ms, g = n["param_spread"], n["mult_add_spread"], n["gain"]
    if ps is None or ms is None or g["n"] == 0 or not _known(g["mean"]):
        return Verdict("inconclusive", "an arm did not finish")
    cost = (
        f"parameters within {100 * ps:.1f}% and mult-adds within {100 * ms:.1f}% of each other (limit 5%)",
        ps <= EQUAL and ms <= EQUAL,
    )
    if not cost[1]:
        return Verdict("inconclusive", "the arms' costs differ: " + cost[0], [cost])
    m, se, seeds = g["mean"], g["se"], int(g["n"])
    text = f"{n['top']} minus cardinality 1: {100 * m:+.2f} points of top-1 over {seeds} seed(s)"
    text += f" (standard error {100 * se:.2f})" if _known(se) else " (standard error unknown)"
    beyond = seeds >= MIN_SEEDS and _known(se) and m > se
    checks: list[Check] = [
        cost,
        (text, m > 0),
        (f"beyond one standard error over at least {MIN_SEEDS} seeds", beyond),
    ]
    if m <= 0:
        return Verdict("not reproduced", text, checks)
    if beyond:
        return Verdict("reproduced", text, checks)
    return Verdict("partly", text + "; better, but not beyond the seed-to-seed noise", checks)


def _agreement(n: dict[str, Any]) -> str:
    """One sentence, from the numbers: does the error fall with cardinality here as in the paper?"""
    g = n["gain"]
    if g["n"] == 0 or not _known(g["mean"]):
        return "no finished runs to compare."
    c, d = PATHS[-1]
    paper = PAPER_TABLE_3[(c, 8 * d)] - PAPER_TABLE_3[(1, 64)]  # -1.3 points of error
    here = -100 * g["mean"]
    sign = "agrees" if here < 0 else "disagrees"
    size = "beyond" if _known(g["se"]) and abs(g["mean"]) > g["se"] else "within"
    errors = [
        100 - 100 * v["test_top1_mean"] if _known(v["test_top1_mean"]) else math.nan
        for v in n["arms"].values()
    ]
    monotone = all(b < a for a, b in itertools.pairwise(errors))
    return (
        f"the direction {sign}: {c} paths change the error by {here:+.2f} points against 1 path "
        f"({size} one standard error; the paper: {paper:+.1f} points at {c}x{8 * d}d on ImageNet), and "
        f"the error {'falls' if monotone else 'does not fall'} at every step of cardinality here "
        f"(the paper's does, down to 32x4d)."
    )


def tables(n: dict[str, Any]) -> list[Table]:
    arms = n["arms"]
    extra = [
        ("C x d", lambda _, v: f"{v['cardinality']}x{v['width']}d"),
        ("3x3 channels (C*d, stage 1)", lambda _, v: v["cardinality"] * v["width"]),
        ("block weights (paper's formula)", lambda _, v: f"{v['block_formula']:,}"),
        ("block weights (counted)", lambda _, v: f"{v['block_counted']:,}"),
        (
            "top-1 minus 1 path",
            lambda k, v: (
                "(baseline)"
                if k == ARMS[0].name
                else f"{100 * n['gains'][k]['mean']:+.2f} ± {100 * n['gains'][k]['se']:.2f}"
                if _known(n["gains"][k]["se"])
                else "n/a"
            ),
        ),
    ]
    rows: list[tuple[str, str, str]] = []
    measured_by_c = {v["cardinality"]: v for v in arms.values()}
    for (c, d), err in PAPER_TABLE_3.items():
        v = measured_by_c.get(c)
        here = (
            f"{v['label']}: {pct(1 - v['test_top1_mean'])}"
            if v and _known(v["test_top1_mean"])
            else "not run"
            if v
            else "not run: no whole d keeps the cost within 5% at 1/8 width"
        )
        rows.append((f"ResNeXt-50 {c}x{d}d, top-1 error", f"{err:.1f}% (ImageNet)", here))
    g, (top_c, top_d) = n["gain"], PATHS[-1]
    rows.append(
        (
            f"{top_c} paths minus 1 path, top-1 error (points)",
            f"{PAPER_TABLE_3[(top_c, 8 * top_d)] - PAPER_TABLE_3[(1, 64)]:+.1f} ({top_c}x{8 * top_d}d - 1x64d)",
            f"{-100 * g['mean']:+.2f} ± {100 * g['se']:.2f} (paired by seed)" if _known(g["se"]) else "n/a",
        )
    )
    return [
        arm_table(arms),
        cost_table(
            "Equal complexity: parameters, mult-adds per 28x28 image and a stage-1 block's weights "
            f"({STAGE1_CHANNELS} channels in and out); top-1 differences paired by seed (± standard error)",
            arms,
            extra=extra,
        ),
        paper_table("Xie et al. 2017, table 3", rows, _agreement(n)),
    ]


def _by_cardinality(ctx: Context, n: dict[str, Any]) -> Any:
    fig = new_figure(8.0, 3.4)
    left, right = fig.subplots(1, 2)
    cs = list(PAPER_TABLE_3)
    left.plot([c for c, _ in cs], list(PAPER_TABLE_3.values()), "o-", color="C1")
    left.set(xlabel="cardinality C", ylabel="top-1 error (%)", title="paper: ResNeXt-50, ImageNet")
    for c, d in cs:
        left.annotate(f"{c}x{d}d", (c, PAPER_TABLE_3[(c, d)]), fontsize=7)
    for v in n["arms"].values():
        errs = [100 - 100 * t for t in v["test_top1"]]
        right.plot([v["cardinality"]] * len(errs), errs, ".", color="C0", alpha=0.5)
    mean_err = [100 - 100 * v["test_top1_mean"] for v in n["arms"].values()]
    right.plot([c for c, _ in PATHS], mean_err, "o-", color="C0")
    right.set(xlabel="cardinality C", ylabel="test top-1 error (%)", title="here: ResNeXt-29 / 8")
    for ax, ticks in ((left, [c for c, _ in cs]), (right, [c for c, _ in PATHS])):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.grid(alpha=0.3)
    return fig


FIGURES = plots(
    Custom(
        "cardinality",
        "Top-1 error against cardinality at equal complexity: the paper's ImageNet table 3 (left) and "
        "this measurement (right; dots: seeds, line: means).",
        _by_cardinality,
    ),
    Accuracy("Test top-1 of each net; each dot is one seed.", title="accuracy (dots: seeds)"),
    Curves("Training error (thin) and test top-1 error (bold) by epoch, mean over seeds."),
)


EXPERIMENT = experiment(__name__)
