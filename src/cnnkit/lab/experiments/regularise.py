"""Dropout and drop-path against overfitting (lecture slides "Dropout" and "Stochastic Depth
(a.k.a DropPath)"; Srivastava et al. 2014; Huang et al. 2016, "Deep networks with
stochastic depth", linear decay of the drop probability over the blocks).

The lecture: dropout is "a simple way to train deep neural networks for improving
generalization performance", and stochastic depth trains short networks while using the
deep one at test time. On a small training subset a ResNet-20 overfits; the measure is the
gap between the accuracy on its own training images (evaluated clean: no dropout, eval
mode) and on the test images.
"""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import (
    Column,
    arm_table,
    budgets,
    by_arm,
    clean_gap,
    experiment,
    gap_cell,
    label_cell,
    mean,
    measure_arms,
    measured,
    pct,
    per_arm_table,
    top1_cell,
)
from cnnkit.lab.figures import Curves, Custom, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="regularise",
    title="Dropout and drop-path fight overfitting",
    claim="""
        Dropout (random units off, e.g. p = 0.5) and stochastic depth (random residual blocks
        bypassed, drop probability growing linearly with depth) improve generalisation.
    """,
    slide="Drop-out/Drop-path: Dropout; Stochastic Depth (Huang et al. 2016)",
    rule="""
        Per regulariser: its mean train-test gap (clean training top-1 minus test top-1) is at least 1
        point below the unregularised net's. Both: reproduced; one: partly; none: not reproduced.
    """,
    notes="A small training subset is the point: it makes the unregularised net overfit within the budget.",
)

ARMS = (
    Arm("none", "resnet20", label="no regularisation"),
    Arm("dropout", "resnet20", {"drop": 0.5}, label="dropout 0.5 before the classifier"),
    Arm("drop_path", "resnet20", {"drop_path": 0.2}, label="drop-path, last block 0.2"),
)
BUDGETS = budgets(
    quick=Budget(epochs=15, train_subset=500, test_subset=500, seeds=2, batch_size=50),
    full=Budget(epochs=60, train_subset=2000, seeds=3, batch_size=64),
)
MARGIN = 0.01


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx)
    for name, n in arms.items():
        n["clean_train_top1"], n["gap"] = clean_gap(ctx, name, n["test_top1"])
        n["gap_mean"] = mean(n["gap"])
    return {"arms": arms, "gap": by_arm(arms, "gap_mean")}


def judge(n: dict[str, Any]) -> Verdict:
    gap, arms = n["gap"], n["arms"]
    checks: list[Check] = []
    for name in ("dropout", "drop_path"):
        ok = measured(gap[name], gap["none"])
        checks.append(
            (
                f"{arms[name]['label']} narrows the train-test gap by at least 1 point "
                f"({100 * gap[name]:.2f} vs {100 * gap['none']:.2f} points)",
                gap[name] <= gap["none"] - MARGIN if ok else None,
            )
        )
    return combine(
        checks,
        "train-test gap: " + ", ".join(f"{arms[k]['label']} {100 * v:.2f} points" for k, v in gap.items()),
    )


def tables(n: dict[str, Any]) -> list[Table]:
    columns: list[Column] = [
        ("arm", label_cell),
        ("train top-1 (clean)", lambda _, v: pct(mean(v["clean_train_top1"]))),
        ("test top-1", top1_cell),
        ("gap (points)", gap_cell),
    ]
    return [
        arm_table(n["arms"]),
        per_arm_table(
            "Overfitting: clean training accuracy, test accuracy and their gap (means over seeds)",
            n["arms"],
            columns,
        ),
    ]


def _gap(ctx: Context, n: dict[str, Any]) -> Any:
    fig = new_figure(6.5, 3.6)
    ax = fig.add_subplot()
    labels = [v["label"] for v in n["arms"].values()]
    xs = range(len(labels))
    tr = [100 * mean(v["clean_train_top1"]) for v in n["arms"].values()]
    te = [100 * v["test_top1_mean"] for v in n["arms"].values()]
    ax.bar([x - 0.2 for x in xs], tr, 0.4, label="train (clean)")
    ax.bar([x + 0.2 for x in xs], te, 0.4, label="test")
    ax.set_xticks(list(xs), labels, rotation=15, fontsize=8)
    lo = min([*tr, *te], default=0)
    ax.set_ylim(max(lo - 10, 0), 101)
    ax.set(ylabel="top-1 (%)", title="train vs test accuracy")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return fig


FIGURES = plots(
    Custom("gap", "Clean training accuracy beside test accuracy: the gap is the overfitting.", _gap),
    Curves("Training error (thin; running, with dropout active) and test error (bold) by epoch."),
)


EXPERIMENT = experiment(__name__)
