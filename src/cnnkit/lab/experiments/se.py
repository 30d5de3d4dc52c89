"""Squeeze-and-excitation blocks help cheaply (lecture slides on SENet, the ILSVRC 2017
winner; Hu, Shen & Sun 2018, arXiv:1709.01507).

The lecture: the SE block is "a light-weight gating mechanism to model channel-wise
relationships", "easily integrated into popular convolutional modules"; SENet-154 won
ILSVRC 2017. The paper: SE-ResNet-50 lowers ResNet-50's top-1 error by 1.5 points for
about 10% more parameters and 0.26% more mult-adds (table 2). Here ResNet-18 and
SE-ResNet-18 (r = 16) train on the same data.
"""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import (
    arm_table,
    budgets,
    cost_table,
    experiment,
    measure_arms,
    paired_difference,
    paired_verdict,
)
from cnnkit.lab.figures import Accuracy, Curves, plots
from cnnkit.lab.spec import About, Arm, Budget, Context, Table, Verdict

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="se",
    title="SE blocks help cheaply",
    claim="""
        A squeeze-and-excitation block is a light-weight channel gate that plugs into residual blocks
        and improves accuracy at a small cost (SENet, ILSVRC 2017).
    """,
    slide="SENet: SE Block; ILSVRC classification results",
    rule="""
        Cheap: SE adds under 5% parameters and under 2% mult-adds. Helps: the paired mean top-1 gain
        is positive and beyond one standard error (at least two seeds). Cheap and helps: reproduced;
        cheap and a gain within the noise or no gain: partly; not cheap: at most partly.
    """,
    notes="""
        The zoo's SE nets have ImageNet widths; on 28x28 inputs they keep the ImageNet stem (7x7/2
        conv and max-pool), so the residual stages work on 7x7 and smaller maps.
    """,
)

# ImageNet stem on 28x28 (7x7 maps after it): the zoo's SE nets have ImageNet widths, and
# the stride keeps an 11M-parameter net affordable on a CPU budget
_STEM = {"small_input": False}
ARMS = (
    Arm("resnet18", "resnet18", _STEM, label="ResNet-18"),
    Arm("seresnet18", "seresnet18", _STEM, label="SE-ResNet-18"),
)
BUDGETS = budgets(
    # one warm-up epoch: without it ResNet-18's first-epoch loss reached 4.9 at lr 0.1 and the
    # baseline's instability, not the SE block, made most of the difference (+14.75 points)
    quick=Budget(
        epochs=3,
        train_subset=1500,
        test_subset=1000,
        seeds=2,
        batch_size=64,
        overrides={"warmup_epochs": 1.0},
    ),
    full=Budget(epochs=20, seeds=3, batch_size=128),
)
CHEAP_PARAMS, CHEAP_MULT_ADDS = 0.05, 0.02


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx, cost=True)
    base, se = arms["resnet18"], arms["seresnet18"]
    have = base["params"] and se["params"]
    return {
        "arms": arms,
        "gain": paired_difference(se["test_top1"], base["test_top1"]),
        "extra_params": se["params"] / base["params"] - 1 if have else None,
        "extra_mult_adds": se["mult_adds"] / base["mult_adds"] - 1 if have else None,
    }


def judge(n: dict[str, Any]) -> Verdict:
    ep, em = n["extra_params"], n["extra_mult_adds"]
    helps = paired_verdict(n["gain"], "SE's test top-1 gain")
    if ep is None or em is None:
        return Verdict("inconclusive", "an arm did not finish")
    cheap = ep < CHEAP_PARAMS and em < CHEAP_MULT_ADDS
    cost = f"+{100 * ep:.2f}% parameters, +{100 * em:.2f}% mult-adds"
    checks = [(f"cheap: {cost} (< 5% and < 2%)", cheap), *helps.checks]
    if not cheap:
        verdict = "partly" if helps.verdict in ("reproduced", "partly") else "not reproduced"
    else:
        verdict = helps.verdict if helps.verdict != "not reproduced" else "partly"
    return Verdict(verdict, f"{helps.summary}; {cost}", checks)


def tables(n: dict[str, Any]) -> list[Table]:
    return [cost_table("Cost and accuracy", n["arms"]), arm_table(n["arms"])]


FIGURES = plots(Accuracy("Test top-1 of ResNet-18 and SE-ResNet-18; dots are seeds."), Curves())


EXPERIMENT = experiment(__name__)
