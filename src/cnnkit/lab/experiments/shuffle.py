"""Channel shuffle repairs grouped convolutions (lecture slide "Shuffled Convolution";
Zhang et al. 2018, "ShuffleNet", arXiv:1707.01083, table 3).

The lecture: stacked grouped convolutions have a side effect -- "the outputs from a certain
channel are only derived from a small fraction of input channels"; ShuffleNet's channel
shuffle lets information cross the groups. The paper's ablation (table 3): with g = 3 the
shuffle lowers ImageNet top-1 error by 1.9, 2.5 and 1.3 points at 1x, 0.5x and 0.25x (with
g = 8 by 5.2, 5.8 and 3.8). Here ShuffleNet 0.25x g = 3 trains with and without the shuffle
(``use_shuffle=False`` keeps every weight and replaces the shuffles by the identity).
"""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import (
    arm_table,
    budgets,
    experiment,
    measure_arms,
    measured,
    paired_difference,
    paired_verdict,
    paper_table,
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
        The shuffle's gain is its top-1 minus the unshuffled net's, paired by seed (the same data
        subset and order), averaged over seeds: reproduced if it is positive and larger than one
        standard error of the paired difference (at least two seeds); partly if positive but within
        that error or from one seed; not reproduced if not positive.
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
    # standard: the quick budget (2,500 images, 6 epochs, 3 seeds) measured +0.03 points with a
    # standard error of 0.58, far below the paper's 1.3 points at 0.25x. ShuffleNet is slow on
    # CPUs for its size (about 200 images/s on 2 cores: many small layers), so the allocation
    # (about 8 minutes) buys little more: 20% more images (seed noise falls with more data), one
    # epoch fewer, a smaller test subset; the same warm-up and peak
    standard=Budget(
        epochs=5,
        train_subset=3000,
        test_subset=1500,
        seeds=3,
        batch_size=128,
        overrides={"warmup_epochs": 1.0, "lr": 0.05},
    ),
    full=Budget(epochs=20, seeds=3, batch_size=128),
)
# the paper, table 3 (ImageNet top-1 error %, g = 3): width -> (no shuffle, shuffle)
PAPER = {"1x": (34.5, 32.6), "0.5x": (45.7, 43.2), "0.25x": (56.3, 55.0)}
PAPER_WIDTH = "0.25x"  # the arms' width


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


def _agreement(n: dict[str, Any]) -> str:
    """One sentence from the numbers: the sign of the shuffle's gain here against the paper's
    (positive at every width), and its size against the paper's at the arms' width."""
    g = n["gain"]
    off, on = PAPER[PAPER_WIDTH]
    paper = off - on  # points of error the shuffle removes
    if not measured(g["mean"]):
        return "not compared: an arm did not finish"
    here = 100 * g["mean"]
    noise = f"standard error {100 * g['se']:.2f}" if measured(g["se"]) and g["n"] >= 2 else "one seed"
    beyond = measured(g["se"]) and g["n"] >= 2 and g["mean"] > g["se"]
    direction = "agrees (the shuffle helps)" if here > 0 else "disagrees (the shuffle does not help)"
    size = (
        "about as large as"
        if 0.5 * paper <= here <= 2 * paper
        else "larger than"
        if here > 2 * paper
        else "smaller than"
    )
    return (
        f"the direction {direction}{'' if beyond or here <= 0 else ', within the noise'}; the gain is "
        f"{size} the paper's ({here:+.2f} points here, {noise}; {paper:+.1f} points of ImageNet error "
        f"at {PAPER_WIDTH}, g = 3)"
    )


def _paper(n: dict[str, Any]) -> Table:
    a, g = n["arms"], n["gain"]
    rows = [
        (f"ShuffleNet {w} g = 3: top-1 error without / with shuffle", f"{off}% / {on}%", "-")
        for w, (off, on) in PAPER.items()
        if w != PAPER_WIDTH
    ]
    off, on = PAPER[PAPER_WIDTH]

    def err(v: dict[str, Any]) -> str:
        return pct(1 - v["test_top1_mean"]) if measured(v["test_top1_mean"]) else "n/a"

    se = f" +- {100 * g['se']:.2f}" if measured(g["se"]) else ""
    rows += [
        (
            f"ShuffleNet {PAPER_WIDTH} g = 3: top-1 error without / with shuffle",
            f"{off}% / {on}%",
            f"{err(a['no_shuffle'])} / {err(a['shuffle'])}",
        ),
        (
            "error the shuffle removes (points)",
            f"{off - on:+.1f}",
            f"{100 * g['mean']:+.2f}{se} (paired by seed)" if measured(g["mean"]) else "n/a",
        ),
    ]
    return paper_table("Zhang et al. 2018, table 3 (ImageNet, g = 3)", rows, _agreement(n))


def tables(n: dict[str, Any]) -> list[Table]:
    a = n["arms"]
    return [
        arm_table(n["arms"]),
        _paper(n),
        Table(
            "Test top-1 per seed",
            ["arm", *[f"seed {i}" for i in range(max(len(v["test_top1"]) for v in a.values()))]],
            [[v["label"], *[pct(x) for x in v["test_top1"]]] for v in a.values()],
        ),
    ]


FIGURES = plots(Accuracy("Test top-1 with and without channel shuffle; dots are seeds."), Curves())


EXPERIMENT = experiment(__name__)
