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

from cnnkit.lab.common import arm_table, budgets, cost_table, experiment, measure_arms, pct
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
        Check 1: DenseNet-BC's mean top-1 is within 1 point of (or above) every ResNet with more
        parameters. Check 2: no ResNet with fewer parameters beats it by more than 1 point. Both:
        reproduced; one: partly; none: not reproduced.
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
    full=Budget(epochs=20, seeds=2, batch_size=128),
)
MARGIN = 0.01
RESNETS = ("resnet18", "resnet20")


def measure(ctx: Context) -> dict[str, Any]:
    return {"arms": measure_arms(ctx, cost=True)}


def judge(n: dict[str, Any]) -> Verdict:
    a = n["arms"]
    d = a["densenet"]
    if d["params"] is None or any(a[r]["params"] is None for r in RESNETS):
        return Verdict("inconclusive", "an arm did not finish")
    acc = d["test_top1_mean"]
    bigger = [r for r in RESNETS if a[r]["params"] > d["params"]]
    smaller = [r for r in RESNETS if a[r]["params"] <= d["params"]]
    checks: list[Check] = [
        (
            "DenseNet is within 1 point of (or above) every ResNet with more parameters: "
            + (
                ", ".join(
                    f"{a[r]['label']} {pct(a[r]['test_top1_mean'])} with {a[r]['params'] / d['params']:.1f}x the parameters"
                    for r in bigger
                )
                or "none"
            )
            + f" vs {pct(acc)}",
            all(acc >= a[r]["test_top1_mean"] - MARGIN for r in bigger) if bigger else None,
        ),
        (
            "no ResNet with fewer parameters is more accurate by over 1 point: "
            + (", ".join(f"{a[r]['label']} {pct(a[r]['test_top1_mean'])}" for r in smaller) or "none"),
            all(a[r]["test_top1_mean"] <= acc + MARGIN for r in smaller),
        ),
    ]
    return combine(
        checks,
        f"DenseNet-BC {pct(acc)} with {d['params'] / 1e6:.2f}M parameters; "
        + ", ".join(
            f"{a[r]['label']} {pct(a[r]['test_top1_mean'])} with {a[r]['params'] / 1e6:.2f}M" for r in RESNETS
        ),
    )


def _per_param(arm: str, v: Mapping[str, Any]) -> str:
    return f"{100 * v['test_top1_mean'] / (v['params'] / 1e6):.1f}" if v["params"] else "n/a"


def tables(n: dict[str, Any]) -> list[Table]:
    return [
        cost_table(
            "Accuracy per parameter", n["arms"], digits=1, extra=[("top-1 points per M params", _per_param)]
        ),
        arm_table(n["arms"]),
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
