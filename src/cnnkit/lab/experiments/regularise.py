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
    against_text,
    arm_table,
    budgets,
    by_arm,
    clean_gap,
    effect_text,
    experiment,
    gap_cell,
    grade_effect,
    label_cell,
    mean,
    measure_arms,
    measured,
    paired_difference,
    paper_table,
    pct,
    per_arm_table,
    size_against,
    top1_cell,
)
from cnnkit.lab.figures import Curves, Custom, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict

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
        Per regulariser: the narrowing of the train-test gap (clean training top-1 minus test top-1)
        against the unregularised net, paired by seed (the unregularised gap minus the regularised
        one: mean and standard error over the seeds). It counts when its mean exceeds both 1 point
        and one standard error of the paired difference, with at least two seeds; a positive mean
        short of that (or one seed) is within the noise; zero or negative is no narrowing. Both
        count: reproduced; neither narrows: not reproduced; otherwise partly; an arm without a
        finished run: inconclusive.
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
    # the quick budget showed the gaps (none 22.1 points, dropout 13.4, drop-path 8.3) with 2 seeds
    # and no statistics, after 150 steps; here 3 seeds and 25 epochs (250 steps) of the same 500
    # images, further into the regime where the unregularised net memorises its images. The test
    # images are the same for every arm and seed, so their noise cancels in the paired gaps. About
    # 5 minutes on 2 cores
    standard=Budget(epochs=25, train_subset=500, test_subset=500, seeds=3, batch_size=50),
    full=Budget(epochs=60, train_subset=2000, seeds=3, batch_size=64),
)
MARGIN = 0.01  # a narrowing of the gap counts from 1 point (and beyond one standard error)
REGULARISERS = ("dropout", "drop_path")
# Huang et al. 2016, Table 1: 110-layer ResNet on CIFAR-10 with standard augmentation, test error (%)
PAPER_SD_ERR = (6.41, 5.25)  # constant depth, stochastic depth


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx)
    for name, n in arms.items():
        n["clean_train_top1"], n["gap"] = clean_gap(ctx, name, n["test_top1"])
        n["gap_mean"] = mean(n["gap"])
    none = arms["none"]
    return {
        "arms": arms,
        "gap": by_arm(arms, "gap_mean"),
        # the unregularised gap minus the regularised one, paired by seed: > 0 narrows it
        "narrowing": {r: paired_difference(none["gap"], arms[r]["gap"]) for r in REGULARISERS},
        # the regularised net's test top-1 minus the unregularised one's
        "test_gain": {r: paired_difference(arms[r]["test_top1"], none["test_top1"]) for r in REGULARISERS},
    }


def _status(d: dict[str, float]) -> str:
    """``beyond``: the narrowing counts (over 1 point and one standard error, at least two seeds);
    ``within``: positive but not that far; ``no``: zero or negative."""
    if d["mean"] <= 0:
        return "no"
    if d["n"] >= 2 and measured(d["se"]) and d["mean"] > max(MARGIN, d["se"]):
        return "beyond"
    return "within"


def judge(n: dict[str, Any]) -> Verdict:
    gap, arms, narrowing = n["gap"], n["arms"], n["narrowing"]
    if any(narrowing[r]["n"] == 0 or not measured(narrowing[r]["mean"]) for r in REGULARISERS):
        return Verdict("inconclusive", "an arm did not finish (no pair of runs to compare)")
    status = {r: _status(narrowing[r]) for r in REGULARISERS}
    checks: list[Check] = [
        (
            effect_text(narrowing[r], f"{arms[r]['label']} narrows the train-test gap")
            + f"; counts beyond {100 * MARGIN:.0f} point and one standard error",
            status[r] == "beyond",
        )
        for r in REGULARISERS
    ]
    why = {
        "beyond": "narrows it beyond the noise",
        "within": "narrows it, but within the noise or under 1 point",
        "no": "does not narrow it",
    }
    summary = (
        "train-test gap: "
        + ", ".join(f"{arms[k]['label']} {100 * v:.2f} points" for k, v in gap.items())
        + "; "
        + "; ".join(
            f"{arms[r]['label']} {why[status[r]]} ({100 * narrowing[r]['mean']:+.2f} points, standard error "
            f"{_se(narrowing[r])}" + (f"; {against_text(narrowing[r])}" if status[r] == "no" else "") + ")"
            for r in REGULARISERS
        )
    )
    if all(s == "beyond" for s in status.values()):
        verdict = "reproduced"
    elif all(s == "no" for s in status.values()):
        verdict = "not reproduced"
    else:
        verdict = "partly"
    return Verdict(verdict, summary, checks)


def _se(d: dict[str, float]) -> str:
    return f"{100 * d['se']:.2f}" if d["n"] >= 2 and measured(d["se"]) else "unknown (one seed)"


def _agreement(n: dict[str, Any]) -> str:
    """One sentence from the numbers: does drop-path lower the test error here as stochastic depth
    does in the paper's Table 1, and by about as much?"""
    paper = PAPER_SD_ERR[0] - PAPER_SD_ERR[1]  # +1.16 points of top-1
    g = n["test_gain"]["drop_path"]
    if g["n"] == 0 or not measured(g["mean"]):
        return "an arm did not finish: nothing to compare."
    here = 100 * g["mean"]
    noise = "beyond" if grade_effect(g) == "beyond" else "within"
    if here > 0:
        size = size_against(here, paper)
        head = f"the direction agrees: drop-path raises test top-1 by {here:.2f} points here ({noise} the noise), {size}"
    else:
        head = f"the direction disagrees: drop-path changes test top-1 by {here:+.2f} points here"
    return f"{head} (the paper: +{paper:.2f} points, ResNet-110 on CIFAR-10+)."


def _paper(n: dict[str, Any]) -> Table:
    arms, gain, narrowing = n["arms"], n["test_gain"], n["narrowing"]

    def diff(d: dict[str, float]) -> str:
        return f"{100 * d['mean']:+.2f} (standard error {_se(d)})" if measured(d["mean"]) else "n/a"

    none, dp = arms["none"], arms["drop_path"]
    return paper_table(
        "Huang et al. 2016, Table 1 (stochastic depth); Srivastava et al. 2014 (dropout)",
        [
            (
                "test error, without -> with stochastic depth (drop-path)",
                f"{PAPER_SD_ERR[0]:.2f}% -> {PAPER_SD_ERR[1]:.2f}% (ResNet-110, CIFAR-10+)",
                f"{pct(1 - none['test_top1_mean'])} -> {pct(1 - dp['test_top1_mean'])} (ResNet-20, Fashion-MNIST subset)",
            ),
            (
                "drop-path's gain in test top-1 (points)",
                f"+{PAPER_SD_ERR[0] - PAPER_SD_ERR[1]:.2f}",
                diff(gain["drop_path"]),
            ),
            (
                "dropout's gain in test top-1 (points)",
                "not compared (other nets and data)",
                diff(gain["dropout"]),
            ),
            (
                "narrowing of the train-test gap, drop-path (points)",
                "not reported",
                diff(narrowing["drop_path"]),
            ),
            ("narrowing of the train-test gap, dropout (points)", "not reported", diff(narrowing["dropout"])),
        ],
        _agreement(n),
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
        _paper(n),
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
