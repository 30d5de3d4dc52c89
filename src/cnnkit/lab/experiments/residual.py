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

from cnnkit.lab.common import (
    arm_table,
    budgets,
    by_arm,
    effect_text,
    experiment,
    measure_arms,
    measured,
    paired_difference,
    paper_table,
    pct,
)
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
        Final-epoch training errors, differences paired by seed (the same data subset and order),
        averaged over seeds; an effect counts beyond one standard error of its paired difference
        (at least two seeds; with one seed, beyond 1 point). Check 1 (degradation): plain-56's
        training error exceeds plain-20's. Check 2 (residual learning removes it): ResNet-56's does
        not exceed ResNet-20's, and the residual gap (ResNet-56 minus ResNet-20) lies below the
        plain gap (plain-56 minus plain-20; their difference paired by seed too). Both: reproduced;
        one: partly; none: not reproduced; a gap not measured: inconclusive.
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
    # standard: the quick budget (1,500 images, 4 epochs, one seed) left the noise unknown
    # (plain-56 34 points and ResNet-56 4.5 points above their 20-layer twins). The 56-layer nets
    # run at about 90 images/s on 2 cores and are 75% of the time, so the allocation (about 8
    # minutes) buys the 3 seeds at the quick budget's size, not more steps; a small test subset
    # (the rule reads training error; evaluation is a sixth of the time at 1,000)
    standard=Budget(
        epochs=4,
        train_subset=1500,
        test_subset=500,
        seeds=3,
        batch_size=64,
        overrides={"lr": 0.05, "warmup_epochs": 1.0},
    ),
    full=Budget(epochs=30, seeds=2, batch_size=128, overrides={"warmup_epochs": 1.0}),
)
MARGIN = 0.01  # one point of training error: the effect that counts when one seed leaves the noise unknown
# the paper: top-1 error % (table 2: ImageNet validation, 10-crop; table 6: CIFAR-10 test)
PAPER_IMAGENET = {"plain18": 27.94, "plain34": 28.54, "resnet18": 27.88, "resnet34": 25.03}
PAPER_CIFAR = {"resnet20": 8.75, "resnet56": 6.97}


def _per_seed_gap(deep: list[float], shallow: list[float]) -> list[float]:
    return [d - s for d, s in zip(deep, shallow, strict=False)]


def depth_effects(train_err: dict[str, list[float]], top1: dict[str, list[float]]) -> dict[str, Any]:
    """The depth effects the rule judges, from each arm's final training error and test top-1 per
    seed (in seed order): the deeper net minus the shallower, paired by seed."""
    plain = _per_seed_gap(train_err["plain56"], train_err["plain20"])
    residual = _per_seed_gap(train_err["resnet56"], train_err["resnet20"])
    return {
        # > 0: the deeper net ends with the higher training error
        "plain_gap": paired_difference(train_err["plain56"], train_err["plain20"]),
        "residual_gap": paired_difference(train_err["resnet56"], train_err["resnet20"]),
        # > 0: depth hurts the plain nets more than the residual ones
        "gap_difference": paired_difference(plain, residual),
        # test error of the deeper net minus the shallower (beside the paper's)
        "plain_test_gap": paired_difference(top1["plain20"], top1["plain56"]),
        "residual_test_gap": paired_difference(top1["resnet20"], top1["resnet56"]),
    }


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx)
    return {
        "arms": arms,
        "train_err": by_arm(arms, "train_err_mean"),
        "test_top1": by_arm(arms, "test_top1_mean"),
        **depth_effects(by_arm(arms, "train_err"), by_arm(arms, "test_top1")),
    }


def _noise(d: dict[str, float]) -> float:
    """The effect that counts: one standard error of the paired difference with at least two
    seeds, else :data:`MARGIN`."""
    return d["se"] if d["n"] >= 2 and measured(d["se"]) else MARGIN


def _points(d: dict[str, float]) -> str:
    if not measured(d["mean"]):
        return "n/a"
    se = f" +- {100 * d['se']:.2f}" if measured(d["se"]) else ""
    return f"{100 * d['mean']:+.2f}{se}"


def judge(n: dict[str, Any]) -> Verdict:
    pg, rg, gd = n["plain_gap"], n["residual_gap"], n["gap_difference"]
    if not measured(pg["mean"], rg["mean"], gd["mean"]):
        checks: list[Check] = [
            (effect_text(pg, "plain-56 minus plain-20 final training error"), None),
            (effect_text(rg, "ResNet-56 minus ResNet-20 final training error"), None),
        ]
        return combine(checks, "a net did not finish: the depth effects are not measured")
    degrades = pg["mean"] > _noise(pg)
    res_flat, below = rg["mean"] <= _noise(rg), gd["mean"] > _noise(gd)
    why_plain = (
        "the deeper plain net trains worse"
        if degrades
        else "the deeper plain net does not train worse beyond the noise: no degradation on this data"
    )
    why_res = (
        "the deeper ResNet trains no worse and depth hurts it less than the plain net"
        if res_flat and below
        else "the deeper ResNet trains worse beyond the noise"
        if not res_flat
        else "depth does not hurt the plain net more than the ResNet beyond the noise"
    )
    checks = [
        (f"{effect_text(pg, 'plain-56 minus plain-20 final training error')}: {why_plain}", degrades),
        (
            f"{effect_text(rg, 'ResNet-56 minus ResNet-20 final training error')}; "
            f"{effect_text(gd, 'the plain gap minus the residual gap')}: {why_res}",
            res_flat and below,
        ),
    ]
    failed = [why for why, ok in ((why_plain, degrades), (why_res, res_flat and below)) if not ok]
    return combine(
        checks,
        f"going 20 -> 56 layers changes the final training error by {_points(pg)} points (plain) "
        f"and {_points(rg)} points (residual), paired by seed (+- one standard error)"
        + "".join(f"; {why}" for why in failed),
    )


def _agreement(n: dict[str, Any]) -> str:
    """One sentence from the numbers: the signs of the four depth effects here against the
    paper's (plain: worse with depth in training and test error; residual: better in both)."""
    pairs = [
        ("plain training error", n["plain_gap"]["mean"], 1),
        ("ResNet training error", n["residual_gap"]["mean"], -1),
        ("plain test error", n["plain_test_gap"]["mean"], 1),
        ("ResNet test error", n["residual_test_gap"]["mean"], -1),
    ]
    known = [(what, m, sign) for what, m, sign in pairs if measured(m)]
    if not known:
        return "not compared: no arm finished"
    agree = [what for what, m, sign in known if m * sign > 0]
    differ = [what for what, m, sign in known if m * sign <= 0]
    paper_plain = PAPER_IMAGENET["plain34"] - PAPER_IMAGENET["plain18"]
    paper_res = PAPER_CIFAR["resnet56"] - PAPER_CIFAR["resnet20"]
    here_plain, here_res = 100 * n["plain_test_gap"]["mean"], 100 * n["residual_test_gap"]["mean"]
    return (
        f"the direction agrees on {len(agree)} of {len(known)} depth effects"
        + (f" (not on {', '.join(differ)})" if differ else "")
        + f"; in test error going deeper changes the plain net by {here_plain:+.2f} points (ImageNet "
        f"18 -> 34: {paper_plain:+.2f}) and the ResNet by {here_res:+.2f} (CIFAR-10 20 -> 56: {paper_res:+.2f})"
    )


def _paper(n: dict[str, Any]) -> Table:
    imnet, cifar, err = PAPER_IMAGENET, PAPER_CIFAR, n["train_err"]
    test_err = {k: (1 - v if measured(v) else v) for k, v in n["test_top1"].items()}
    rows = [
        (
            "plain, deeper minus shallower: final training error (points)",
            "higher (fig. 4 left, ImageNet 18 -> 34; fig. 6 left, CIFAR-10 20 -> 56)",
            f"{pct(err['plain20'])} -> {pct(err['plain56'])}: {_points(n['plain_gap'])}",
        ),
        (
            "ResNet, deeper minus shallower: final training error (points)",
            "lower (fig. 4 right, ImageNet 18 -> 34)",
            f"{pct(err['resnet20'])} -> {pct(err['resnet56'])}: {_points(n['residual_gap'])}",
        ),
        (
            "plain, deeper minus shallower: top-1 error (points)",
            f"{imnet['plain18']}% -> {imnet['plain34']}%: {imnet['plain34'] - imnet['plain18']:+.2f} (table 2)",
            f"{pct(test_err['plain20'])} -> {pct(test_err['plain56'])}: {_points(n['plain_test_gap'])}",
        ),
        (
            "ResNet, deeper minus shallower: top-1 error (points)",
            f"{imnet['resnet18']}% -> {imnet['resnet34']}%: {imnet['resnet34'] - imnet['resnet18']:+.2f} "
            f"(table 2); CIFAR-10 {cifar['resnet20']}% -> {cifar['resnet56']}%: "
            f"{cifar['resnet56'] - cifar['resnet20']:+.2f} (table 6)",
            f"{pct(test_err['resnet20'])} -> {pct(test_err['resnet56'])}: {_points(n['residual_test_gap'])}",
        ),
    ]
    return paper_table(
        "He et al. 2016: ImageNet 18 and 34 layers (fig. 4, table 2), CIFAR-10 20 and 56 (fig. 6, table 6)",
        rows,
        _agreement(n),
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
        _paper(n),
    ]


FIGURES = plots(
    Curves(
        "As the lecture's fig. 4: training error (thin) and test error (bold) by epoch; left plain, "
        "right residual.",
        panels=(("plain nets", ["plain20", "plain56"]), ("ResNets", ["resnet20", "resnet56"])),
    )
)


EXPERIMENT = experiment(__name__)
