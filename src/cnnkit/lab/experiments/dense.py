"""DenseNets are parameter-efficient (lecture slides on DenseNet; Huang et al. 2017,
"Densely connected convolutional networks", arXiv:1608.06993, fig. 3).

The lecture: every layer receives the feature maps of all preceding layers, ``x_l =
H_l([x_0, ..., x_{l-1}])``, and the nets are "parameter efficient": DenseNets reach a
ResNet's ImageNet error with far fewer parameters (fig. 3, left). Here DenseNet-BC-100
(k = 12, 0.77M parameters) trains beside ResNet-18 (11M) at the same resolution, and the
CIFAR ResNet-20 (0.27M) as a small reference; the figure plots accuracy against parameters
as the paper's does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cnnkit.lab.common import (
    arm_table,
    budgets,
    cost_table,
    effect_text,
    experiment,
    measure_arms,
    measured,
    paired_difference,
    paper_table,
    pct,
    size_against,
)
from cnnkit.lab.figures import Custom, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="dense",
    title="DenseNets are parameter-efficient",
    claim="""
        Each layer of a dense block takes all preceding feature maps as input; DenseNets match
        ResNets' accuracy with far fewer parameters.
    """,
    slide="DenseNet: parameter efficient (Huang et al. 2017, fig. 3)",
    rule="""
        For each ResNet, DenseNet-BC's top-1 minus the ResNet's, paired by seed (mean and standard
        error over the seeds): DenseNet falls short of it only when that difference is below minus
        the larger of 1 point (the claim's "matches") and one standard error of the paired difference
        (with at least two seeds; one seed: 1 point, the noise unknown). Check 1: DenseNet does not
        fall short of any ResNet with more parameters. Check 2: it does not fall short of any ResNet
        with fewer parameters. Both: reproduced; one: partly; none: not reproduced; an arm without a
        finished run: inconclusive.
    """,
    notes="""
        DenseNet-BC-100 and ResNet-18 use their ImageNet stems on 28x28 inputs (their dense/residual
        stages see 7x7 maps); ResNet-20 is the CIFAR net at full resolution, a small reference point.
    """,
)

_STEM = {"small_input": False}  # ImageNet stems on 28x28: the same resolution for both families
ARMS = (
    Arm("densenet", "densenet_bc_100_12", _STEM, label="DenseNet-BC-100 (k=12)"),
    Arm("resnet18", "resnet18", _STEM, label="ResNet-18"),
    Arm("resnet20", "resnet20", label="ResNet-20 (CIFAR, full resolution)"),
)
BUDGETS = budgets(
    quick=Budget(epochs=3, train_subset=2000, test_subset=1000, seeds=1, batch_size=64),
    # the quick budget's one seed left the noise unknown (DenseNet 76.80% against ResNet-18's
    # 74.40%, a 2.4-point lead that one seed cannot tell from noise) after 3 epochs of 2,000
    # images; here 3 seeds of 3,000 images for 4 epochs (twice the steps), a 2,000-image test set
    # (shared by the arms, so its noise mostly cancels in the paired differences): about 6 minutes
    # on 2 cores, ResNet-18 half of it
    standard=Budget(epochs=4, train_subset=3000, test_subset=2000, seeds=3, batch_size=64),
    full=Budget(epochs=20, seeds=2, batch_size=128),
)
MARGIN = 0.01  # the claim's "matches": within 1 point of top-1
RESNETS = ("resnet18", "resnet20")
# Huang et al. 2017, Table 2 (CIFAR-10 with standard augmentation, "C10+"): test error and parameters
PAPER_DENSENET = (4.51, 0.8e6)  # DenseNet-BC (L = 100, k = 12)
PAPER_RESNET = (6.41, 1.7e6)  # ResNet-110 (as reported by Huang et al. 2016)


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx, cost=True)
    dense = arms["densenet"]["test_top1"]
    return {"arms": arms, "vs": {r: paired_difference(dense, arms[r]["test_top1"]) for r in RESNETS}}


def _allowance(d: dict[str, float]) -> float:
    """How far below a ResNet DenseNet may score and still "match" it: the larger of 1 point and one
    standard error of the paired difference (1 point with one seed: its noise is unknown)."""
    return max(MARGIN, d["se"]) if d["n"] >= 2 and measured(d["se"]) else MARGIN


def _short(d: dict[str, float]) -> bool:
    """DenseNet falls short of the ResNet: below it by more than :func:`_allowance`."""
    return d["mean"] < -_allowance(d)


def _pair_text(a: dict[str, Any], r: str, d: dict[str, float]) -> str:
    ratio = a[r]["params"] / a["densenet"]["params"]
    what = f"DenseNet-BC minus {a[r]['label']} ({ratio:.1f}x DenseNet's parameters)"
    return f"{effect_text(d, what)}; falls short below -{100 * _allowance(d):.2f}"


def judge(n: dict[str, Any]) -> Verdict:
    a, vs = n["arms"], n["vs"]
    d = a["densenet"]
    if (
        d["params"] is None
        or any(a[r]["params"] is None for r in RESNETS)
        or any(vs[r]["n"] == 0 or not measured(vs[r]["mean"]) for r in RESNETS)
    ):
        return Verdict("inconclusive", "an arm did not finish (no pair of runs to compare)")
    bigger = [r for r in RESNETS if a[r]["params"] > d["params"]]
    smaller = [r for r in RESNETS if a[r]["params"] <= d["params"]]
    checks: list[Check] = [
        (
            "DenseNet-BC does not fall short of a ResNet with more parameters: "
            + ("; ".join(_pair_text(a, r, vs[r]) for r in bigger) or "none"),
            not any(_short(vs[r]) for r in bigger) if bigger else None,
        ),
        (
            "DenseNet-BC does not fall short of a ResNet with fewer parameters: "
            + ("; ".join(_pair_text(a, r, vs[r]) for r in smaller) or "none"),
            not any(_short(vs[r]) for r in smaller),
        ),
    ]
    short = [r for r in RESNETS if _short(vs[r])]
    summary = (
        f"DenseNet-BC {pct(d['test_top1_mean'])} with {d['params'] / 1e6:.2f}M parameters; "
        + ", ".join(
            f"{a[r]['label']} {pct(a[r]['test_top1_mean'])} with {a[r]['params'] / 1e6:.2f}M "
            f"({100 * vs[r]['mean']:+.2f} points for DenseNet, standard error {_se(vs[r])})"
            for r in RESNETS
        )
    )
    if short:
        summary += "; DenseNet falls short of " + ", ".join(
            f"{a[r]['label']} by {-100 * vs[r]['mean']:.2f} points (beyond the {100 * _allowance(vs[r]):.2f} allowed)"
            for r in short
        )
    return combine(checks, summary)


def _se(d: dict[str, float]) -> str:
    return f"{100 * d['se']:.2f}" if d["n"] >= 2 and measured(d["se"]) else "unknown (one seed)"


def _agreement(n: dict[str, Any]) -> str:
    """One sentence from the numbers: is DenseNet-BC ahead of the bigger ResNet here, as in the paper's
    Table 2, and by about the paper's margin?"""
    paper = PAPER_RESNET[0] - PAPER_DENSENET[0]  # +1.90 points of error in DenseNet's favour
    d = n["vs"]["resnet18"]
    if d["n"] == 0 or not measured(d["mean"]):
        return "ResNet-18 or DenseNet-BC did not finish: nothing to compare."
    here = 100 * d["mean"]
    if here > 0:
        size = size_against(here, paper)
        head = f"the direction agrees: DenseNet-BC leads the bigger ResNet by {here:.2f} points here, {size}"
    elif not _short(d):
        head = (
            f"the direction differs but the claim holds: DenseNet-BC trails the bigger ResNet by {abs(here):.2f} "
            f"points here, within the {100 * _allowance(d):.2f} the rule allows"
        )
    else:
        head = f"the direction disagrees: DenseNet-BC trails the bigger ResNet by {-here:.2f} points here"
    return (
        f"{head} (the paper: {paper:.2f} points of CIFAR-10+ error in DenseNet-BC's favour, with "
        f"{PAPER_RESNET[1] / PAPER_DENSENET[1]:.1f}x fewer parameters; here "
        f"{n['arms']['resnet18']['params'] / n['arms']['densenet']['params']:.1f}x fewer)."
    )


def _paper(n: dict[str, Any]) -> Table:
    a, d = n["arms"], n["vs"]["resnet18"]
    dense, res = a["densenet"], a["resnet18"]
    params = lambda v: "n/a" if v["params"] is None else f"{v['params'] / 1e6:.2f}M"  # noqa: E731
    err = lambda v: pct(1 - v["test_top1_mean"])  # noqa: E731
    gap = f"{100 * d['mean']:+.2f} (standard error {_se(d)})" if measured(d["mean"]) else "n/a"
    return paper_table(
        "Huang et al. 2017, Table 2, CIFAR-10+",
        [
            (
                "DenseNet-BC (k=12): test error, parameters",
                f"{PAPER_DENSENET[0]:.2f}%, 0.8M",
                f"{err(dense)}, {params(dense)}",
            ),
            (
                "a ResNet with more parameters: test error, parameters",
                f"ResNet-110: {PAPER_RESNET[0]:.2f}%, 1.7M",
                f"{res['label']}: {err(res)}, {params(res)}",
            ),
            (
                "DenseNet-BC's lead in top-1 (points)",
                f"{PAPER_RESNET[0] - PAPER_DENSENET[0]:+.2f}",
                gap,
            ),
        ],
        _agreement(n),
    )


def _per_param(arm: str, v: Mapping[str, Any]) -> str:
    return f"{100 * v['test_top1_mean'] / (v['params'] / 1e6):.1f}" if v["params"] else "n/a"


def tables(n: dict[str, Any]) -> list[Table]:
    return [
        cost_table(
            "Accuracy per parameter", n["arms"], digits=1, extra=[("top-1 points per M params", _per_param)]
        ),
        arm_table(n["arms"]),
        _paper(n),
    ]


def _params(ctx: Context, n: dict[str, Any]) -> Any:
    fig = new_figure(5.8, 3.8)
    ax = fig.add_subplot()
    for i, v in enumerate(n["arms"].values()):
        if v["params"]:
            ax.plot(
                v["params"] / 1e6, 100 * (1 - v["test_top1_mean"]), "o", ms=8, color=f"C{i}", label=v["label"]
            )
    ax.set_xscale("log")
    ax.set(
        xlabel="parameters (M)",
        ylabel="test top-1 error (%)",
        title="error against parameters (as Huang et al. fig. 3)",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


FIGURES = plots(Custom("params", "Test error against parameter count: down and left is better.", _params))


EXPERIMENT = experiment(__name__)
