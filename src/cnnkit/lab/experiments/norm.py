"""Normalisation layers and the batch size (lecture slides "Normalization Methods", "Batch
Normalization", "Layer Normalization", "Other Normalization Methods").

The lecture: normalising hidden units makes the loss surface less skewed, so nets train
faster (Ioffe & Szegedy 2015); batch norm's statistics come from the mini-batch, so it
"is dependent on the mini-batch size", which layer, instance and group norm (Ba et al.
2016; Ulyanov et al. 2016; Wu & He 2018) are not. Here fmnet trains with each norm at batch
64, then batch norm and group norm at batch 2 (learning rate scaled linearly with the
batch, Goyal et al. 2017).
"""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import arm_table, budgets, by_arm, experiment, measure_arms, measured, pct
from cnnkit.lab.figures import Accuracy, Curves, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="norm",
    title="Normalisation helps training; batch norm depends on the batch size",
    claim="""
        Normalising hidden units with mini-batch statistics makes training easier, but batch norm
        depends on the mini-batch size; layer, instance and group norm do not.
    """,
    slide="Normalization Methods; Batch Normalization; Layer Normalization; Other Normalization Methods",
    rule="""
        Check 1: batch norm's test top-1 above no norm's. Check 2: going from batch 64 to 2, batch
        norm's top-1 changes at least 1 point less favourably than group norm's (group norm is the
        control: both take the same 32x more, smaller steps). Both: reproduced; one: partly; none: not
        reproduced.
    """,
    notes="""
        fmnet with its default widths (16-32-64-128 channels); group norm uses Wu & He's 32 groups,
        fewer where the channels are fewer (the 16-channel stem gets instance norm). At batch 2 the
        learning rate is scaled by 2/64 and the epochs are kept, so both batch sizes see the same
        images.
    """,
)

LR, BATCH, SMALL = 0.05, 64, 2
ARMS = (
    *(
        Arm(name, "fmnet", {"norm": name, "lr": LR, "batch_size": BATCH}, label=f"{name}, batch {BATCH}")
        for name in ("none", "batch", "layer", "instance", "group")
    ),
    Arm(
        "batch-b2",
        "fmnet",
        {"norm": "batch", "lr": LR * SMALL / BATCH, "batch_size": SMALL},
        label="batch, batch 2",
    ),
    Arm(
        "group-b2",
        "fmnet",
        {"norm": "group", "lr": LR * SMALL / BATCH, "batch_size": SMALL},
        label="group, batch 2",
    ),
)
BUDGETS = budgets(
    quick=Budget(epochs=2, train_subset=2000, test_subset=1000, seeds=1),
    full=Budget(epochs=10, train_subset=20000, seeds=2),
)


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx)
    acc = by_arm(arms, "test_top1_mean")
    return {
        "arms": arms,
        "top1": acc,
        "bn_drop": acc["batch"] - acc["batch-b2"],  # > 0: batch 2 hurts batch norm
        "gn_drop": acc["group"] - acc["group-b2"],
    }


def judge(n: dict[str, Any]) -> Verdict:
    acc, bd, gd = n["top1"], n["bn_drop"], n["gn_drop"]
    known = measured(*acc.values())
    checks: list[Check] = [
        (
            f"batch norm trains better than no normalisation in the same epochs ({pct(acc['batch'])} vs {pct(acc['none'])})",
            acc["batch"] > acc["none"] if known else None,
        ),
        (
            f"batch {BATCH} -> {SMALL} changes top-1 by {-100 * bd:+.2f} points with batch norm and "
            f"{-100 * gd:+.2f} with group norm (the control, which takes the same 32x more steps): batch "
            "norm fares at least 1 point worse",
            bd > gd + 0.01 if known else None,
        ),
    ]
    return combine(
        checks,
        f"batch norm {pct(acc['batch'])} at batch {BATCH}, {pct(acc['batch-b2'])} at batch {SMALL}; group norm "
        f"{pct(acc['group'])} and {pct(acc['group-b2'])}; no norm {pct(acc['none'])}",
    )


def tables(n: dict[str, Any]) -> list[Table]:
    acc = n["top1"]
    return [
        arm_table(n["arms"]),
        Table(
            f"Batch-size dependence: test top-1 at batch {BATCH} and {SMALL}",
            ["norm", f"batch {BATCH}", f"batch {SMALL}", "drop (points)"],
            [
                ["batch", pct(acc["batch"]), pct(acc["batch-b2"]), f"{100 * n['bn_drop']:+.2f}"],
                ["group", pct(acc["group"]), pct(acc["group-b2"]), f"{100 * n['gn_drop']:+.2f}"],
            ],
        ),
    ]


FIGURES = plots(
    Curves(
        panels=(
            (f"each norm at batch {BATCH}", ["none", "batch", "layer", "instance", "group"]),
            (f"batch {BATCH} vs {SMALL}", ["batch", "batch-b2", "group", "group-b2"]),
        )
    ),
    Accuracy("Test top-1 per norm and batch size."),
)


EXPERIMENT = experiment(__name__)
