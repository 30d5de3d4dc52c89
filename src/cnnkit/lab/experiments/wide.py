"""Wide vs deep at a similar parameter count (lecture slides "Wide Residual Networks (WRNs)";
Zagoruyko & Komodakis 2016, arXiv:1605.07146).

The lecture: "widening of ResNet provides a much more effective way of improving
performance" than depth, "50 times less layers and being more than 2 times faster"
(wide layers run in parallel; deep ones in sequence). Here a wide, shallow net and a deep,
thin one of about the same parameter count train on the same data: fmnet (7 convolutions,
up to 128 channels, 0.29M parameters) against the CIFAR ResNet-20 (19 convolutions, up to
64 channels, 0.27M), compared on accuracy and training time.
"""

from __future__ import annotations

import math
from typing import Any

from cnnkit.lab.common import (
    arm_table,
    budgets,
    cost_table,
    effect_text,
    experiment,
    mean,
    measure_arms,
    measured,
    paired_difference,
    paper_table,
    sd,
)
from cnnkit.lab.figures import Curves, Custom, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="wide",
    title="Wide beats deep per unit of time",
    claim="""
        Widening is a more effective way to improve performance than deepening: WRNs match far deeper
        thin ResNets with 50 times fewer layers, more than 2 times faster.
    """,
    slide="Wide Residual Networks (WRNs)",
    rule="""
        Precondition: parameter counts within 25% (else inconclusive). Check 1 (accuracy): the wide
        net's top-1 minus the deep net's, paired by seed and averaged over seeds, is not below zero
        by more than 0.5 points and one standard error of the paired difference (the claim: wide
        nets match deeper ones); a lead of the deep net counts only beyond both. Check 2 (time): the
        deep net's training time over the wide net's, per seed, averages above 1 by more than one
        standard error of those ratios (at least two seeds; with one seed, above 1). Both:
        reproduced; one: partly; none: not reproduced.
    """,
    notes="""
        The zoo's CIFAR ResNet builders fix their widths and its wide ResNets (WRN-16-4: 2.7M
        parameters) have no thin ResNet of similar size, so fmnet (a wide, shallow plain net) stands
        in for the wide side: the comparison is wide-shallow vs deep-thin at equal parameters, not WRN
        vs ResNet.
    """,
)

ARMS = (
    Arm("wide", "fmnet", label="wide + shallow: fmnet (7 conv layers)"),
    Arm("deep", "resnet20", label="deep + thin: ResNet-20 (19 conv layers)"),
)
BUDGETS = budgets(
    quick=Budget(epochs=3, train_subset=3000, test_subset=2000, seeds=2, batch_size=128),
    # standard: the quick budget (3,000 images, 3 epochs, 2 seeds) stopped both nets early in
    # training (ResNet-20 converges more slowly) with the noise barely measured; 3 seeds, twice the
    # images, 4 epochs at batch 64 (about 5x the quick budget's steps), channels_last for both (the
    # faster layout on CPUs: about 1.8x for fmnet, 1.4x for ResNet-20): about 5 minutes on 2 cores
    standard=Budget(
        epochs=4,
        train_subset=6000,
        test_subset=2000,
        seeds=3,
        batch_size=64,
        overrides={"channels_last": True},
    ),
    full=Budget(epochs=20, seeds=2, batch_size=128),
)
SIMILAR = 0.25  # parameter counts within 25% of each other count as "similar"
TOLERANCE = 0.005  # the deep net's top-1 lead that the claim "matches" allows
# the paper (top-1 error %, parameters in millions, layers; ms per batch of 16 where given):
# ImageNet, the lecture's table (Zagoruyko & Komodakis 2016, single crop), and CIFAR-10 (table 5)
PAPER_IMAGENET = {
    "wide": ("WRN-50-2-bottleneck", 21.9, 68.9, 50, 93),
    "deep": ("ResNet-152", 22.16, 60.2, 152, 115),
}
PAPER_CIFAR = {"wide": ("WRN-16-8", 4.27, 11.0, 16), "deep": ("pre-act-ResNet-1001", 4.92, 10.2, 1001)}
CONV_LAYERS = {"wide": 7, "deep": 19}  # convolutions of fmnet and of ResNet-20 (its 1x1-free option A)


def _seconds(ctx: Context, arm: str) -> list[float]:
    return [float(r.final["train_seconds"]) for r in ctx.ok_runs(arm) if r.final is not None]


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx, cost=True)
    w, d = arms["wide"], arms["deep"]
    ratios = [dt / wt for dt, wt in zip(_seconds(ctx, "deep"), _seconds(ctx, "wide"), strict=False) if wt > 0]
    return {
        "arms": arms,
        "gain": paired_difference(w["test_top1"], d["test_top1"]),
        "param_ratio": (w["params"] / d["params"]) if w["params"] and d["params"] else None,
        "time_ratio": d["train_seconds_mean"] / w["train_seconds_mean"] if w["train_seconds_mean"] else None,
        "time_ratios": ratios,  # per seed: the deep net's training time over the wide net's
    }


def _time_check(n: dict[str, Any]) -> tuple[str, bool]:
    ratios = n.get("time_ratios") or [n["time_ratio"]]
    m = mean(ratios)
    if len(ratios) >= 2:
        se = sd(ratios) / math.sqrt(len(ratios))
        faster = m - 1 > se
        text = (
            f"the wide net trains faster: the deep net takes {m:.2f}x its time (mean over "
            f"{len(ratios)} seeds, standard error {se:.2f}: ratios beyond {1 + se:.2f} count)"
        )
    else:
        faster = m > 1
        text = f"the wide net trains faster: the deep net takes {m:.2f}x its time (one seed)"
    return text, faster


def judge(n: dict[str, Any]) -> Verdict:
    pr, tr, g = n["param_ratio"], n["time_ratio"], n["gain"]
    if pr is None or tr is None or g["n"] == 0 or not measured(g["mean"]):
        return Verdict("inconclusive", "an arm did not finish")
    if abs(pr - 1) > SIMILAR:
        return Verdict(
            "inconclusive", f"the nets' parameter counts differ by {pr:.2f}x; not a fair comparison"
        )
    allowed = max(TOLERANCE, g["se"] if g["n"] >= 2 and measured(g["se"]) else 0.0)
    matches = g["mean"] >= -allowed
    acc_text = effect_text(g, "wide minus deep top-1") + (
        f": the wide net matches the deep one (a deficit counts beyond {100 * allowed:.2f} points)"
        if matches
        else f": the deep net leads by more than {100 * allowed:.2f} points, beyond the claim's "
        f"{100 * TOLERANCE:.1f} and the noise"
    )
    time_text, faster = _time_check(n)
    checks: list[Check] = [(acc_text, matches), (time_text, faster)]
    why = []
    if not matches:
        why.append(f"the deep net is {100 * -g['mean']:.2f} points more accurate")
    if not faster:
        why.append("the wide net is not faster beyond the noise")
    return combine(
        checks,
        f"params ratio {pr:.2f}; wide minus deep top-1 {100 * g['mean']:+.2f} points"
        + (f" (standard error {100 * g['se']:.2f})" if measured(g["se"]) else " (one seed)")
        + f"; deep takes {tr:.2f}x the time"
        + "".join(f"; {w}" for w in why),
    )


def _agreement(n: dict[str, Any]) -> str:
    """One sentence from the numbers: the signs of the wide net's accuracy gain and speed-up here
    against the paper's (wide better and faster), and their sizes."""
    g, tr = n["gain"], n["time_ratio"]
    if not measured(g["mean"]) or tr is None:
        return "not compared: an arm did not finish"
    paper_gain_in = PAPER_IMAGENET["deep"][1] - PAPER_IMAGENET["wide"][1]
    paper_gain_c = PAPER_CIFAR["deep"][1] - PAPER_CIFAR["wide"][1]
    paper_speed = PAPER_IMAGENET["deep"][4] / PAPER_IMAGENET["wide"][4]
    here = 100 * g["mean"]
    acc = "more accurate" if here > 0 else "less accurate"
    fast = "faster" if tr > 1 else "slower"
    agree = here > 0 and tr > 1
    return (
        f"the direction {'agrees' if agree else 'disagrees'} (the wide net is {acc} and {fast} here; "
        f"more accurate and faster in the paper): {here:+.2f} points of top-1 here against "
        f"{paper_gain_in:+.2f} (ImageNet) and {paper_gain_c:+.2f} (CIFAR-10), a {tr:.2f}x speed-up "
        f"against {paper_speed:.2f}x"
    )


def _paper(n: dict[str, Any]) -> Table:
    w, d, g = n["arms"]["wide"], n["arms"]["deep"], n["gain"]
    (wi, wi_err, wi_p, wi_l, wi_ms), (di, di_err, di_p, di_l, di_ms) = (
        PAPER_IMAGENET["wide"],
        PAPER_IMAGENET["deep"],
    )
    (wc, wc_err, wc_p, wc_l), (dc, dc_err, dc_p, dc_l) = PAPER_CIFAR["wide"], PAPER_CIFAR["deep"]

    def err(v: dict[str, Any]) -> str:
        return f"{100 * (1 - v['test_top1_mean']):.2f}%" if measured(v["test_top1_mean"]) else "n/a"

    def params(v: dict[str, Any]) -> str:
        return "n/a" if v["params"] is None else f"{v['params'] / 1e6:.2f}M"

    se = f" +- {100 * g['se']:.2f}" if measured(g["se"]) else ""
    tr = n["time_ratio"]
    rows = [
        (
            "nets (wide / deep)",
            f"{wi} / {di} (ImageNet); {wc} / {dc} (CIFAR-10)",
            f"{w['label']} / {d['label']}",
        ),
        (
            "layers (deep / wide)",
            f"{di_l} / {wi_l} = {di_l / wi_l:.1f}x; {dc_l} / {wc_l} = {dc_l / wc_l:.0f}x",
            f"{CONV_LAYERS['deep']} / {CONV_LAYERS['wide']} = {CONV_LAYERS['deep'] / CONV_LAYERS['wide']:.1f}x "
            "(convolutions)",
        ),
        (
            "parameters (wide / deep)",
            f"{wi_p}M / {di_p}M = {wi_p / di_p:.2f}x; {wc_p}M / {dc_p}M = {wc_p / dc_p:.2f}x",
            f"{params(w)} / {params(d)} = " + (f"{n['param_ratio']:.2f}x" if n["param_ratio"] else "n/a"),
        ),
        (
            "top-1 error (wide / deep)",
            f"{wi_err}% / {di_err}%; {wc_err}% / {dc_err}%",
            f"{err(w)} / {err(d)}",
        ),
        (
            "wide minus deep top-1 (points)",
            f"{di_err - wi_err:+.2f}; {dc_err - wc_err:+.2f}",
            f"{100 * g['mean']:+.2f}{se} (paired by seed)" if measured(g["mean"]) else "n/a",
        ),
        (
            "time (deep / wide)",
            f"{di_ms} / {wi_ms} ms per batch of 16 = {di_ms / wi_ms:.2f}x (ImageNet)",
            f"{d['train_seconds_mean']:.1f} / {w['train_seconds_mean']:.1f} s per run = "
            + (f"{tr:.2f}x" if tr else "n/a"),
        ),
    ]
    return paper_table(
        "Zagoruyko & Komodakis 2016: ImageNet single crop (the lecture's table) and CIFAR-10 (table 5)",
        rows,
        _agreement(n),
    )


def tables(n: dict[str, Any]) -> list[Table]:
    extra = [
        ("train s", lambda _, v: f"{v['train_seconds_mean']:.1f}"),
        ("train img/s", lambda _, v: f"{v['images_per_s']:.0f}"),
    ]
    return [cost_table("Wide vs deep", n["arms"], digits=1, extra=extra), _paper(n), arm_table(n["arms"])]


def _time(ctx: Context, n: dict[str, Any]) -> Any:
    fig = new_figure(5.5, 3.8)
    ax = fig.add_subplot()
    for i, (name, v) in enumerate(n["arms"].items()):
        for r in ctx.ok_runs(name):
            if r.final is not None:
                ax.plot(
                    float(r.final["train_seconds"]), 100 * float(r.final["test_top1"]), "o", color=f"C{i}"
                )
        ax.plot([], [], "o", color=f"C{i}", label=v["label"])
    ax.set(
        xlabel="training time (s)", ylabel="test top-1 (%)", title="accuracy against time (each dot a seed)"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


FIGURES = plots(
    Custom("time", "Accuracy against training time: up and left is better.", _time),
    Curves(),
)


EXPERIMENT = experiment(__name__)
