"""Plain vs residual nets at two depths (lecture slide "ResNet", fig. 4 of He et al. 2016,
"Deep residual learning for image recognition", arXiv:1512.03385; its CIFAR-10 fig. 6).

The lecture's figure: the 34-layer plain net has a *higher training error* than the
18-layer one (degradation: not overfitting, since it is the training error), while the
34-layer ResNet trains to a lower error than the 18-layer ResNet. Here the CIFAR nets of
He et al. sec. 4.2 (20 and 56 layers; ``shortcut=False`` gives the plain counterparts with
the same weights) train on the same data.
"""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import arm_table, budgets, by_arm, experiment, measure_arms, measured, pct
from cnnkit.lab.figures import Curves, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="residual",
    title="Deeper plain nets train worse; residual nets do not",
    claim="""
        Plain nets degrade with depth: the deeper plain net has the higher training error. With
        identity shortcuts (the same weights) the deeper net trains at least as well.
    """,
    slide="ResNet: Training on ImageNet (He et al. 2016, fig. 4)",
    rule="""
        Final-epoch training errors (mean over seeds). Check 1: plain-56 >= plain-20 + 1 point. Check
        2: ResNet-56 <= ResNet-20 + 1 point and the residual gap is at least 1 point below the plain
        gap. Both: reproduced; one: partly; none: not reproduced.
    """,
    notes="""
        CIFAR-style ResNet-20/56 (16-32-64 channels, option-A shortcuts) stand in for the lecture's
        ImageNet 18/34-layer nets; with few epochs the curves show early training, where the
        degradation of plain nets is already visible in He et al.'s figures.
    """,
)

_PLAIN = {"model_kwargs": {"shortcut": False}}
ARMS = (
    Arm("plain20", "resnet20", _PLAIN, label="plain-20"),
    Arm("plain56", "resnet56", _PLAIN, label="plain-56"),
    Arm("resnet20", "resnet20", label="ResNet-20"),
    Arm("resnet56", "resnet56", label="ResNet-56"),
)
BUDGETS = budgets(
    # a warmup epoch for every arm: He et al. warm ResNet-110 up at lr 0.01, as 0.1 is "too large
    # to start converging"; without it ResNet-56 diverges in the first epoch at batch 64
    quick=Budget(
        epochs=4,
        train_subset=1500,
        test_subset=1000,
        seeds=1,
        batch_size=64,
        overrides={"lr": 0.05, "warmup_epochs": 1.0},
    ),
    full=Budget(epochs=30, seeds=2, batch_size=128, overrides={"warmup_epochs": 1.0}),
)
MARGIN = 0.01  # one point of training error


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx)
    err = by_arm(arms, "train_err_mean")
    return {
        "arms": arms,
        "train_err": err,
        "plain_gap": err["plain56"] - err["plain20"],  # > 0: the deeper plain net trains worse
        "residual_gap": err["resnet56"] - err["resnet20"],
        "test_top1": by_arm(arms, "test_top1_mean"),
    }


def judge(n: dict[str, Any]) -> Verdict:
    pg, rg = n["plain_gap"], n["residual_gap"]
    known = measured(pg, rg)
    checks: list[Check] = [
        (
            f"plain-56 ends with a training error at least 1 point above plain-20 (measured {100 * pg:+.2f})",
            pg >= MARGIN if known else None,
        ),
        (
            "ResNet-56's training error is at most ResNet-20's + 1 point, and the residual gap is at least "
            f"1 point below the plain gap (measured {100 * rg:+.2f} vs {100 * pg:+.2f})",
            (rg <= MARGIN and rg <= pg - MARGIN) if known else None,
        ),
    ]
    return combine(
        checks,
        f"going 20 -> 56 layers changes the final training error by {100 * pg:+.2f} points (plain) "
        f"and {100 * rg:+.2f} points (residual)",
    )


def tables(n: dict[str, Any]) -> list[Table]:
    rows = [
        [
            depth,
            pct(n["train_err"][f"plain{depth}"]),
            pct(n["train_err"][f"resnet{depth}"]),
            pct(n["test_top1"][f"plain{depth}"]),
            pct(n["test_top1"][f"resnet{depth}"]),
        ]
        for depth in (20, 56)
    ]
    return [
        arm_table(n["arms"]),
        Table(
            "Training error of the last epoch (the lecture's thin curves) and test top-1",
            ["layers", "plain train err", "ResNet train err", "plain test top-1", "ResNet test top-1"],
            rows,
        ),
    ]


FIGURES = plots(
    Curves(
        "As the lecture's fig. 4: training error (thin) and test error (bold) by epoch; left plain, "
        "right residual.",
        panels=(("plain nets", ["plain20", "plain56"]), ("ResNets", ["resnet20", "resnet56"])),
    )
)


EXPERIMENT = experiment(__name__)
