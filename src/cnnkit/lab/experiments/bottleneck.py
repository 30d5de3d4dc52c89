"""1x1 reductions before the expensive convolutions (lecture slides "Inception module, naive
version" and "(b) Inception module with dimensionality reduction", the 1x1 convolution slides;
Szegedy et al. 2015, sec. 4 and Table 1; He et al. 2016, sec. 4.1 "Deeper Bottleneck
Architectures").

The lecture: a 1x1 convolution that narrows the input before a 3x3 or 5x5 convolution saves
most of the mult-adds at about equal accuracy. Its worked example is inception(3a)'s 5x5
branch on a 28x28x192 input with 32 outputs: 120.4M mult-adds directly, 2.4M + 10.0M = 12.4M
with a 1x1 reduction to 16 channels. Here two small Inception nets of the same widths
(:class:`cnnkit.models.googlenet.MiniGoogLeNet`) differ only in the reduction: naive modules
(fig. 2a) against modules with 1x1 reductions (fig. 2b). Their mult-adds come from
:mod:`cnnkit.analysis`, their accuracy from training on the same data and seeds; the report
also counts the worked example, inception(3a) (Table 1: 128M ops) and the whole GoogLeNet
(sec. 5: 1.5 billion mult-adds) with every module naive.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.lab.common import (
    arm_table,
    budgets,
    cost_table,
    experiment,
    measure_arms,
    measured,
    model_cost,
    paired_difference,
    paper_table,
)
from cnnkit.lab.figures import Accuracy, Curves, Custom, bar_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict

__all__ = ["EXPERIMENT", "googlenet_module_costs", "net_costs", "worked_example"]

SAVING_AT_LEAST = 0.60  # the nets' computed saving is 61.6% (14,228,576 of 37,008,480 mult-adds)
TOLERANCE = 0.005  # the accuracy floor when the standard error is smaller (or unknown: one seed)

ABOUT = About(
    name="bottleneck",
    title="1x1 reductions before the 3x3 and 5x5 convolutions save most of the mult-adds",
    claim="""
        A 1x1 convolution that reduces the channels before the expensive 3x3 and 5x5 convolutions
        (GoogLeNet's Inception module with dimensionality reduction, ResNet's bottleneck block)
        saves most of the mult-adds at about equal accuracy: a 5x5 convolution from 28x28x192 to 32
        channels costs 120.4M mult-adds, 12.4M after a 1x1 reduction to 16 channels.
    """,
    slide="""
        GoogLeNet: Inception module, naive version vs (b) with dimensionality reduction; 1x1
        convolutions (Szegedy et al. 2015, sec. 4, Table 1; He et al. 2016, sec. 4.1)
    """,
    rule=f"""
        reproduced if the reduced net needs at least {100 * SAVING_AT_LEAST:.0f}% fewer mult-adds per
        1x28x28 image than the naive net (counted by cnnkit.analysis; the nets' computed saving is
        61.6%) and its mean top-1, paired by seed, is not below the naive net's by more than the
        larger of one standard error of the paired difference and {100 * TOLERANCE:.1f} points;
        partly if the saving holds and the accuracy does not; not reproduced if the saving does not
        hold; inconclusive without a finished pair of runs.
    """,
    notes="""
        Both nets: a 3x3 stem to 32 channels, a 2x2 max-pool, two Inception modules at 14x14, a 2x2
        max-pool, one module at 7x7, global average pool, dropout 0.2 and a linear classifier; batch
        norm and ReLU after every convolution (as torchvision's GoogLeNet), the paper's 5x5 kernels.
        The pool branch keeps its input width in both forms (naive: the pooled input itself; reduced:
        a 1x1 projection to the same width), so every layer has the same width in both nets and they
        differ only in the 1x1 reductions; the paper's reduced modules also narrow the pool branch,
        which saves more. Both train at lr 0.02 with one warm-up epoch: at the trainer's 0.1 the naive
        net blew up in its first epoch, which would have judged its stability, not its accuracy.
        Training speed is reported, not judged: on a shared CPU it varies from run to run as much as
        between the nets.
    """,
)

ARMS = (
    Arm("reduced", "googlenet_mini", label="Inception with 1x1 reductions (fig. 2b)"),
    Arm("naive", "googlenet_mini_naive", label="naive Inception (fig. 2a)"),
)
# at the trainer's lr of 0.1 the naive net blew up in its first epoch (loss 12-14 on all three
# seeds of a quick run, one of them stuck at chance); 0.02 with a warm-up epoch trains both
_STABLE = {"lr": 0.02, "warmup_epochs": 1}
BUDGETS = budgets(
    quick=Budget(epochs=4, train_subset=2000, test_subset=1000, seeds=3, batch_size=128, overrides=_STABLE),
    # 2.5x the quick budget's images: a standard error of the paired difference near the 1
    # point the quick budget's 1.28 could not resolve (6 runs, about 5 minutes on 2 cores)
    standard=Budget(
        epochs=4, train_subset=5000, test_subset=2000, seeds=3, batch_size=128, overrides=_STABLE
    ),
    full=Budget(epochs=15, seeds=3, batch_size=128, overrides=_STABLE),
)

# Szegedy et al. 2015: inception(3a)'s "ops" in Table 1, and the whole net's budget (sec. 5)
PAPER_3A_OPS = 128e6
PAPER_GOOGLENET_MULT_ADDS = 1.5e9
# the lecture's worked example: a 5x5 convolution, 28x28x192 in, 32 out, with and without a 1x1 to 16
LECTURE_DIRECT, LECTURE_REDUCED = 120.4e6, 12.4e6
# GoogLeNet's modules at a 224x224 input: (name, input width, resolution); widths in INCEPTION_WIDTHS
_GOOGLENET_INPUTS = (
    ("inception3a", 192, 28), ("inception3b", 256, 28), ("inception4a", 480, 14),
    ("inception4b", 512, 14), ("inception4c", 512, 14), ("inception4d", 512, 14),
    ("inception4e", 528, 14), ("inception5a", 832, 7), ("inception5b", 832, 7),
)  # fmt: skip


def _mult_adds(module: nn.Module, size: tuple[int, int, int]) -> int:
    from cnnkit.analysis.summary import summarize

    return summarize(module, size).total_mult_adds


def worked_example() -> dict[str, int]:
    """The lecture's 5x5 branch of inception(3a) (28x28x192 to 32 channels), counted by cnnkit.analysis:
    directly, and after a 1x1 reduction to 16 channels."""
    with torch.device("meta"):
        direct = nn.Conv2d(192, 32, 5, padding=2, bias=False)
        reduced = nn.Sequential(
            nn.Conv2d(192, 16, 1, bias=False), nn.Conv2d(16, 32, 5, padding=2, bias=False)
        )
    return {"direct": _mult_adds(direct, (192, 28, 28)), "reduced": _mult_adds(reduced, (192, 28, 28))}


def googlenet_module_costs() -> dict[str, dict[str, int]]:
    """Mult-adds of each of GoogLeNet's nine modules at a 224x224 input, with the paper's 5x5 kernels,
    as built (fig. 2b, Table 1's widths) and in the naive form (fig. 2a: the same #1x1, #3x3 and #5x5
    on the same input width, no reductions); plus the whole net as built (``"googlenet"``)."""
    from cnnkit.analysis.summary import summarize
    from cnnkit.layers.inception import Inception, InceptionNaive
    from cnnkit.models.googlenet import INCEPTION_WIDTHS

    out: dict[str, dict[str, int]] = {}
    for name, width, res in _GOOGLENET_INPUTS:
        w = INCEPTION_WIDTHS[name]
        with torch.device("meta"):
            reduced = Inception(width, *w, branch3_kernel_size=5)
            naive = InceptionNaive(width, w[0], w[2], w[4])
        out[name] = {
            "reduced": _mult_adds(reduced, (width, res, res)),
            "naive": _mult_adds(naive, (width, res, res)),
        }
    whole = summarize("googlenet", (3, 224, 224), model_kwargs={"branch3_kernel_size": 5}).total_mult_adds
    out["googlenet"] = {
        "reduced": whole,
        "naive": whole + sum(v["naive"] - v["reduced"] for v in out.values()),
    }
    return out


def net_costs() -> dict[str, int]:
    """Mult-adds per 1x28x28 image of the two arms' nets (10 classes, the small-input stem)."""
    return {
        arm.name: model_cost(arm.model, num_classes=10, in_chans=1, image_size=28, small_input=True)[1]
        for arm in ARMS
    }


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx, cost=True)
    costs = net_costs()
    return {
        "arms": arms,
        "net_mult_adds": costs,
        "saving": 1 - costs["reduced"] / costs["naive"],
        "accuracy_gain": paired_difference(arms["reduced"]["test_top1"], arms["naive"]["test_top1"]),
        "worked_example": worked_example(),
        "googlenet": googlenet_module_costs(),
    }


def judge(n: dict[str, Any]) -> Verdict:
    saving, d = n["saving"], n["accuracy_gain"]
    checks: list[Check] = [
        (
            f"the reduced net needs {100 * saving:.1f}% fewer mult-adds (at least {100 * SAVING_AT_LEAST:.0f}%)",
            saving >= SAVING_AT_LEAST,
        )
    ]
    if d["n"] == 0 or not measured(d["mean"]):
        return Verdict(
            "inconclusive", "no finished pair of runs", [*checks, ("accuracy (no finished runs)", None)]
        )
    floor = max(d["se"], TOLERANCE) if measured(d["se"]) else TOLERANCE
    checks.append(
        (
            f"reduced minus naive top-1 {100 * d['mean']:+.2f} points (standard error "
            f"{100 * d['se']:.2f}, {d['n']:.0f} seeds), not below -{100 * floor:.2f}",
            d["mean"] >= -floor,
        )
    )
    summary = f"{100 * saving:.1f}% fewer mult-adds; reduced minus naive top-1 {100 * d['mean']:+.2f} points"
    if not checks[0][1]:
        return Verdict("not reproduced", summary, checks)
    return Verdict("reproduced" if checks[1][1] else "partly", summary, checks)


def _m(x: float) -> str:
    return f"{x / 1e6:.1f}M"


def _agreement(n: dict[str, Any]) -> str:
    """One sentence from the numbers: does the saving point the paper's way, of about its size, and
    does the accuracy hold as the lecture says?"""
    g = n["googlenet"]["googlenet"]
    paper_saving = 1 - g["reduced"] / g["naive"]
    saving, d = n["saving"], n["accuracy_gain"]
    size = "of about the same size" if abs(saving - paper_saving) <= 0.15 else "of a different size"
    if saving <= 0:
        return f"the direction disagrees: the reduction saves nothing here ({100 * saving:.1f}%)"
    text = (
        f"the direction agrees, and the saving is {size} ({100 * saving:.1f}% here against "
        f"{100 * paper_saving:.1f}% for GoogLeNet against its naive-module form)"
    )
    if not measured(d["mean"]):
        return text + "; the accuracy was not measured"
    held = judge(n).verdict == "reproduced"
    return text + (f"; the accuracy {'holds' if held else 'does not hold'} ({100 * d['mean']:+.2f} points)")


def _paper(n: dict[str, Any]) -> Table:
    g, w, d = n["googlenet"], n["worked_example"], n["accuracy_gain"]
    g3a, whole, nets = g["inception3a"], g["googlenet"], n["net_mult_adds"]
    acc = (
        f"{100 * d['mean']:+.2f} points (SE {100 * d['se']:.2f}, n={d['n']:.0f})"
        if measured(d["mean"])
        else "n/a"
    )
    return paper_table(
        "Szegedy et al. 2015, Table 1 and sec. 5; the lecture's worked example",
        [
            (
                "5x5 branch of inception(3a), direct -> with a 1x1 to 16 (mult-adds)",
                f"{_m(LECTURE_DIRECT)} -> {_m(LECTURE_REDUCED)}",
                f"{_m(w['direct'])} -> {_m(w['reduced'])} (cnnkit.analysis)",
            ),
            (
                "inception(3a) at 28x28x192, naive -> reduced (mult-adds)",
                f"naive not given -> {_m(PAPER_3A_OPS)} (Table 1)",
                f"{_m(g3a['naive'])} -> {_m(g3a['reduced'])} (cnnkit.analysis)",
            ),
            (
                "whole GoogLeNet, 224x224 (mult-adds)",
                f"{PAPER_GOOGLENET_MULT_ADDS / 1e9:.1f}G (sec. 5)",
                f"{whole['reduced'] / 1e9:.2f}G; {whole['naive'] / 1e9:.2f}G with every module naive",
            ),
            (
                "small nets here, naive -> reduced (mult-adds per 28x28 image)",
                "-",
                f"{_m(nets['naive'])} -> {_m(nets['reduced'])} ({100 * n['saving']:.1f}% fewer)",
            ),
            (
                "top-1 of the reduced net minus the naive one",
                "not reported (the naive net was not trained)",
                acc,
            ),
        ],
        _agreement(n),
    )


def tables(n: dict[str, Any]) -> list[Table]:
    g = n["googlenet"]
    rows = [
        [name, f"{v['naive']:,}", f"{v['reduced']:,}", f"{100 * (1 - v['reduced'] / v['naive']):.1f}%"]
        for name, v in g.items()
    ]
    w = n["worked_example"]
    return [
        arm_table(n["arms"]),
        cost_table(
            "Cost and accuracy (mult-adds per 28x28 image)",
            n["arms"],
            extra=[("train img/s (measured)", lambda _, v: f"{v['images_per_s']:.0f}")],
        ),
        Table(
            "The lecture's worked example, counted by cnnkit.analysis: 5x5 convolution, 28x28x192 to 32 channels",
            ["", "mult-adds (cnnkit)", "lecture"],
            [
                ["direct 5x5", f"{w['direct']:,}", "28*28*32*5*5*192 = 120.4M"],
                ["1x1 to 16, then 5x5", f"{w['reduced']:,}", "2.4M + 10.0M = 12.4M"],
            ],
        ),
        Table(
            "GoogLeNet's modules at 224x224 (paper's 5x5 kernels), naive (fig. 2a) against as built (fig. 2b)",
            ["module", "naive mult-adds", "reduced mult-adds", "saved"],
            rows,
        ),
        _paper(n),
    ]


def _cost(ctx: Context, n: dict[str, Any]) -> Any:
    costs = n["net_mult_adds"]
    return bar_figure(
        [(v["label"], [costs[name] / 1e6]) for name, v in n["arms"].items()],
        ylabel="mult-adds per image (M)",
        title=f"cost: {100 * n['saving']:.1f}% fewer with 1x1 reductions",
        scale=1.0,
        zoom=False,
    )


FIGURES = plots(
    Accuracy("Test top-1 of each net; each dot is one seed.", title="accuracy (dots: seeds)"),
    Custom("cost", "Mult-adds per 28x28 image, traced by cnnkit.analysis.", _cost),
    Curves("Training error (thin) and test top-1 error (bold) by epoch, mean over seeds."),
)


EXPERIMENT = experiment(__name__)
