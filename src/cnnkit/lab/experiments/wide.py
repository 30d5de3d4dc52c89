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

from typing import Any

from cnnkit.lab.common import arm_table, budgets, cost_table, experiment, measure_arms, paired_difference
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
        Precondition: parameter counts within 25% (else inconclusive). Check 1: the wide net's mean
        top-1 is at least the deep net's minus 0.5 points. Check 2: it trains in less time. Both:
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
    full=Budget(epochs=20, seeds=2, batch_size=128),
)
SIMILAR = 0.25  # parameter counts within 25% of each other count as "similar"


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx, cost=True)
    w, d = arms["wide"], arms["deep"]
    return {
        "arms": arms,
        "gain": paired_difference(w["test_top1"], d["test_top1"]),
        "param_ratio": (w["params"] / d["params"]) if w["params"] and d["params"] else None,
        "time_ratio": d["train_seconds_mean"] / w["train_seconds_mean"] if w["train_seconds_mean"] else None,
    }


def judge(n: dict[str, Any]) -> Verdict:
    pr, tr, g = n["param_ratio"], n["time_ratio"], n["gain"]
    if pr is None or tr is None or g["n"] == 0:
        return Verdict("inconclusive", "an arm did not finish")
    if abs(pr - 1) > SIMILAR:
        return Verdict(
            "inconclusive", f"the nets' parameter counts differ by {pr:.2f}x; not a fair comparison"
        )
    checks: list[Check] = [
        (
            f"the wide net is at least as accurate, within 0.5 points ({100 * g['mean']:+.2f} points)",
            g["mean"] >= -0.005,
        ),
        (f"the wide net trains faster ({tr:.2f}x less time per run)", tr > 1.0),
    ]
    return combine(
        checks,
        f"params ratio {pr:.2f}; wide vs deep top-1 {100 * g['mean']:+.2f} points; deep takes {tr:.2f}x the time",
    )


def tables(n: dict[str, Any]) -> list[Table]:
    extra = [
        ("train s", lambda _, v: f"{v['train_seconds_mean']:.1f}"),
        ("train img/s", lambda _, v: f"{v['images_per_s']:.0f}"),
    ]
    return [cost_table("Wide vs deep", n["arms"], digits=1, extra=extra), arm_table(n["arms"])]


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
