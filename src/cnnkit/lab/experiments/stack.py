"""Stacked 3x3 convolutions against one large kernel (lecture slides on VGG; Simonyan & Zisserman
2015, sec. 2.3).

The lecture: two stacked 3x3 convolutions see the same 5x5 field as one 5x5 convolution, and
three see a 7x7 one, with fewer parameters (2 x 3^2 C^2 = 18 C^2 against 25 C^2; 27 C^2 against
49 C^2: 28% and 45% fewer) and more non-linearity (a ReLU after each), which "makes the decision
function more discriminative". Here four nets of the same stem, width and depth of stages
(:class:`cnnkit.models.vgg.StageNet`) differ only in how each stage reaches its field: stacked
3x3 or one 5x5 / 7x7; their weights and receptive fields come from the analysis, their accuracy
from training on the same data and seeds.
"""

from __future__ import annotations

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
)
from cnnkit.lab.figures import Accuracy, Curves, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT", "stage_weights"]

ABOUT = About(
    name="stack",
    title="Two 3x3 convolutions see what one 5x5 sees, with 28% fewer weights (three: 7x7, 45% fewer)",
    claim="""
        A stack of two 3x3 convolutions has the receptive field of one 5x5, and three that of one 7x7,
        with 18 C^2 against 25 C^2 and 27 C^2 against 49 C^2 weights and a non-linearity after each
        layer, which makes the network at least as discriminative (VGG).
    """,
    slide="VGGNet: stacks of 3x3 convolutions (Simonyan & Zisserman 2015, sec. 2.3)",
    rule="""
        reproduced if each stacked net has the field of its single-kernel twin, its stages' weights are
        18/25 and 27/49 of the twin's, and its mean top-1 (paired by seed) is not below the twin's by
        more than one standard error of the difference (or 0.5 points with one seed); partly if the
        counts hold but the accuracy does not.
    """,
    notes="""
        Same stem (3x3 to 32 channels), three stages of 32 channels each ending in a 2x2 max-pool,
        batch norm and ReLU after every convolution, global average pool and a linear classifier.
    """,
)

# 32 channels: the ratios do not depend on the width, and at 64 a run of the quick budget took
# 4-7 minutes on one thread (benchmarks/lab_budget.py), at 32 about a quarter of that
WIDTH = 32


def _net(field: int, stacked: bool) -> dict[str, Any]:
    return {"model_kwargs": {"field": field, "stacked": stacked, "width": WIDTH}}


ARMS = (
    Arm("stack5", "stagenet", _net(5, True), label="two 3x3 a stage (field 5)"),
    Arm("single5", "stagenet", _net(5, False), label="one 5x5 a stage"),
    Arm("stack7", "stagenet", _net(7, True), label="three 3x3 a stage (field 7)"),
    Arm("single7", "stagenet", _net(7, False), label="one 7x7 a stage"),
)
BUDGETS = budgets(
    quick=Budget(epochs=4, train_subset=2000, test_subset=2000, seeds=3, batch_size=128),
    # three times the quick budget's images: the nets pass 85% and the paired differences
    # settle (about 35 s a run on 2 cores at 32 channels: 7 minutes for the 12 runs)
    standard=Budget(epochs=4, train_subset=6000, test_subset=2000, seeds=3, batch_size=128),
    full=Budget(epochs=15, seeds=3, batch_size=128),
)
PAIRS = {5: ("stack5", "single5", 18 / 25), 7: ("stack7", "single7", 27 / 49)}


def stage_weights(field: int, stacked: bool, width: int = WIDTH) -> dict[str, Any]:
    """The convolution weights of one stage (C in, C out) and the receptive field of the net."""
    from cnnkit.analysis.summary import summarize
    from cnnkit.models.registry import create_model

    with torch.device("meta"):
        net = create_model("stagenet", num_classes=10, in_chans=1, field=field, stacked=stacked, width=width)
    convs = [m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Conv2d)][1:]  # after the stem
    rf = summarize(net, (1, 28, 28)).final_receptive_field
    return {"stage_weights": sum(convs) // 3, "field": None if rf is None else int(rf.size[0])}


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx, cost=True)
    out: dict[str, Any] = {"arms": arms, "pairs": {}}
    for field, (stacked, single, expected) in PAIRS.items():
        a, b = stage_weights(field, True), stage_weights(field, False)
        out["pairs"][str(field)] = {
            "stacked": a,
            "single": b,
            "weight_ratio": a["stage_weights"] / b["stage_weights"],
            "expected_ratio": expected,
            "accuracy_gain": paired_difference(arms[stacked]["test_top1"], arms[single]["test_top1"]),
        }
    return out


def _accuracy_check(field: str, p: dict[str, Any]) -> Check:
    d = p["accuracy_gain"]
    if not measured(d["mean"]):
        return (f"field {field}: accuracy (no finished runs)", None)
    tolerance = d["se"] if measured(d["se"]) else 0.005
    return (
        f"field {field}: stacked top-1 minus single {100 * d['mean']:+.2f} points "
        f"(standard error {100 * d['se']:.2f}, {d['n']:.0f} seeds)",
        d["mean"] >= -tolerance,
    )


def judge(n: dict[str, Any]) -> Verdict:
    checks: list[Check] = []
    for field, p in n["pairs"].items():
        checks.append(
            (
                f"field {field}: the same receptive field ({p['stacked']['field']} and {p['single']['field']} px)",
                p["stacked"]["field"] == p["single"]["field"],
            )
        )
        checks.append(
            (
                f"field {field}: a stage's weights {p['weight_ratio']:.3f} of the single kernel's "
                f"(lecture: {p['expected_ratio']:.3f})",
                abs(p["weight_ratio"] - p["expected_ratio"]) < 1e-9,
            )
        )
        checks.append(_accuracy_check(field, p))
    gains = [p["accuracy_gain"]["mean"] for p in n["pairs"].values()]
    return combine(
        checks,
        "stacked 3x3 minus single kernel: "
        + ", ".join(
            f"{100 * g:+.2f} points (field {f})" if measured(g) else f"not measured (field {f})"
            for f, g in zip(n["pairs"], gains, strict=True)
        ),
    )


def tables(n: dict[str, Any]) -> list[Table]:
    rows = [
        [
            f"{f}x{f}",
            f"{p['stacked']['stage_weights']:,}",
            f"{p['single']['stage_weights']:,}",
            f"{p['weight_ratio']:.3f}",
            f"{p['expected_ratio']:.3f}",
            p["stacked"]["field"],
        ]
        for f, p in n["pairs"].items()
    ]
    return [
        arm_table(n["arms"]),
        _paper(n),
        cost_table("Cost and accuracy (mult-adds per 28x28 image)", n["arms"]),
        Table(
            f"Weights of one stage ({WIDTH} channels in and out) and the net's receptive field",
            ["field", "stacked 3x3", "one kernel", "ratio", "lecture", "receptive field (px)"],
            rows,
        ),
    ]


def _paper(n: dict[str, Any]) -> Table:
    """Simonyan & Zisserman 2015: a stage of three 3x3 convolutions against one 7x7 has 27 C^2
    against 49 C^2 weights, "81% more" (sec. 2.3); their net B with each pair of 3x3 layers
    replaced by one 5x5 had a 7% higher top-1 error on ImageNet (sec. 4.1)."""
    gain = n["pairs"]["5"]["accuracy_gain"]["mean"]
    rows = [
        (
            "weights, one 7x7 / three 3x3",
            f"{49 / 27:.2f} (81% more)",
            f"{1 / n['pairs']['7']['weight_ratio']:.2f}",
        ),
        ("weights, one 5x5 / two 3x3", f"{25 / 18:.2f}", f"{1 / n['pairs']['5']['weight_ratio']:.2f}"),
        (
            "top-1 error, one 5x5 minus two 3x3 (points)",
            "+7 (ImageNet, net B)",
            f"{100 * gain:+.2f} (mean over seeds)" if measured(gain) else "not measured",
        ),
    ]
    if not measured(gain):
        agreement = "the weights agree; the accuracy was not measured."
    elif gain > 0:
        agreement = (
            f"the weights agree, and the direction too: the stacked net errs less, by {100 * gain:.2f} points "
            "against the paper's 7 on the 1000 classes of ImageNet."
        )
    else:
        agreement = (
            f"the weights agree; the direction does not: here the single kernel errs less, by "
            f"{-100 * gain:.2f} points (the paper: 7 points more)."
        )
    return paper_table("Simonyan & Zisserman 2015, sec. 2.3 and 4.1", rows, agreement)


FIGURES = plots(
    Accuracy("Test top-1 of each net; each dot is one seed.", title="accuracy (dots: seeds)"),
    Curves("Training error (thin) and test top-1 error (bold) by epoch, mean over seeds."),
)


EXPERIMENT = experiment(__name__)
