"""Channel shuffle repairs grouped convolutions (lecture slide "Shuffled Convolution";
Zhang et al. 2018, "ShuffleNet", arXiv:1707.01083, table 3).

The lecture: stacked grouped convolutions have a side effect -- "the outputs from a certain
channel are only derived from a small fraction of input channels"; ShuffleNet's channel
shuffle lets information cross the groups. The paper's ablation (table 3): with g = 3 the
shuffle lowers ImageNet top-1 error by 2.0 points at 1x and 3.8 points at 0.25x. Here
ShuffleNet g = 3 trains with and without the shuffle (``use_shuffle=False`` keeps every
weight and replaces the shuffles by the identity).
"""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import (
    arm_table,
    budgets,
    experiment,
    measure_arms,
    paired_difference,
    paired_verdict,
    pct,
)
from cnnkit.lab.figures import Accuracy, Curves, plots
from cnnkit.lab.spec import About, Arm, Budget, Context, Table, Verdict

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="shuffle",
    title="Channel shuffle repairs grouped convolutions",
    claim="""
        With stacked group convolutions each output sees only a fraction of the input channels;
        shuffling the channels between them improves accuracy at the same cost (ShuffleNet table 3).
    """,
    slide="Shuffled Convolution (ShuffleNet, Zhang et al. 2018)",
    rule="""
        Both arms must train (mean top-1 at least half-way from chance to 100%), else inconclusive.
        Paired by seed: reproduced if the mean top-1 gain of the shuffle is positive and larger than
        its standard error (at least two seeds); partly if positive but within the noise or from one
        seed; not reproduced if not positive.
    """,
    notes="ShuffleNet 0.25x (g = 3) with the small-input stem; parameters and mult-adds are identical in both arms.",
)

_W = 0.25
ARMS = (
    Arm("shuffle", "shufflenet_v1_g3", {"model_kwargs": {"width_mult": _W}}, label="g=3, shuffle"),
    Arm(
        "no_shuffle",
        "shufflenet_v1_g3",
        {"model_kwargs": {"width_mult": _W, "use_shuffle": False}},
        label="g=3, no shuffle",
    ),
)
BUDGETS = budgets(
    # a warm-up epoch and a lower peak: at lr 0.1 from step 1 ShuffleNet's loss jumped to ~10
    quick=Budget(
        epochs=6,
        train_subset=2500,
        test_subset=2000,
        seeds=3,
        batch_size=128,
        overrides={"warmup_epochs": 1.0, "lr": 0.05},
    ),
    full=Budget(epochs=20, seeds=3, batch_size=128),
)


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx)
    return {
        "arms": arms,
        "gain": paired_difference(arms["shuffle"]["test_top1"], arms["no_shuffle"]["test_top1"]),
    }


# An arm "trained" once its mean top-1 is half-way from chance (10 classes: 10%) to 100%; below
# that the quick runs were unstable (at lr 0.1 without warm-up: 12-32% with seed-to-seed swings
# of 20 points) and a difference between the arms says nothing about the shuffle.
TRAINED = 0.55


def judge(n: dict[str, Any]) -> Verdict:
    low = [
        f"{v['label']} {pct(v['test_top1_mean'])}"
        for v in n["arms"].values()
        if v["test_top1_mean"] is None or v["test_top1_mean"] < TRAINED
    ]
    if low:
        return Verdict(
            "inconclusive",
            f"an arm did not train (mean top-1 {', '.join(low)}; needs {pct(TRAINED)}, chance 10%)",
        )
    return paired_verdict(n["gain"], "channel shuffle's test top-1 gain")


def tables(n: dict[str, Any]) -> list[Table]:
    a = n["arms"]
    return [
        arm_table(n["arms"]),
        Table(
            "Test top-1 per seed",
            ["arm", *[f"seed {i}" for i in range(max(len(v["test_top1"]) for v in a.values()))]],
            [[v["label"], *[pct(x) for x in v["test_top1"]]] for v in a.values()],
        ),
    ]


FIGURES = plots(Accuracy("Test top-1 with and without channel shuffle; dots are seeds."), Curves())


EXPERIMENT = experiment(__name__)
