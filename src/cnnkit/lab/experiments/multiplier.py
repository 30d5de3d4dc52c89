"""MobileNet's width and resolution multipliers (lecture slide "MobileNets"; Howard et al. 2017,
arXiv:1704.04861, sec. 3.3-3.4 and tables 6-7).

The paper: the width multiplier alpha thins every layer to alpha times its channels and cuts
mult-adds and parameters "quadratically by roughly alpha^2"; the resolution multiplier rho
shrinks the input, and with it every feature map, and cuts mult-adds by rho^2, leaving the
parameters alone. Accuracy "drops off smoothly" as either shrinks, which gives a trade-off of
accuracy against cost (tables 6 and 7, figures 4 and 5). Here MobileNet (``mobilenet_v1``, the
stride-1 small-input stem) trains on Fashion-MNIST at alpha 1, 0.75, 0.5 and 0.25 at 28 px, and
at alpha 1 on the images resized to 24, 20 and 16 px (``--image-size``): rho 6/7, 5/7 and 4/7,
the paper's 192/224, 160/224 and 128/224. Costs are traced by :mod:`cnnkit.analysis`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from cnnkit.lab.common import (
    arm_table,
    budgets,
    experiment,
    measure_arms,
    measured,
    model_cost,
    paired_difference,
    paper_table,
    pm,
)
from cnnkit.lab.figures import Accuracy, Curves, Custom, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT", "arm_cost", "exponent"]

ABOUT = About(
    name="multiplier",
    title="Width and resolution multipliers: mult-adds fall as alpha^2 and rho^2, accuracy smoothly",
    claim="""
        The width multiplier alpha reduces mult-adds and parameters roughly by alpha^2; the resolution
        multiplier rho reduces mult-adds by rho^2 and leaves the parameters unchanged; accuracy drops
        off smoothly as either shrinks, a trade-off of accuracy against mult-adds (1.0 MobileNet-224:
        70.6% at 569M mult-adds; 0.25: 50.6% at 41M; 128 px: 64.4% at 186M).
    """,
    slide="MobileNets: width multiplier, resolution multiplier (Howard et al. 2017, tables 6 and 7)",
    rule="""
        Seven checks. (a) For each multiplier m (alpha; rho), the exponent k of the least-squares fit
        through the origin of log(mult-adds / the full net's) on log(m), over the arms with m < 1, is
        within 2 +- 0.2 (the paper's own counts give 1.90 for alpha and 1.99 for rho). (b) Every rho arm
        has exactly the full net's parameter count. (c) For each multiplier, no arm with a smaller m has a
        mean top-1 above an arm with a larger m by more than one standard error (SE) of their difference
        paired by seed (0.5 points with one seed). (d) For each multiplier, the smallest arm's mean top-1
        is below the full net's by more than one SE of their paired difference (0.5 points with one
        seed): the accuracy does fall, the trade-off is not flat. All seven hold: reproduced; none: not
        reproduced; otherwise partly; an accuracy check with an arm that did not finish is unknown, and
        the verdict inconclusive.
    """,
    notes="""
        At 28 px the per-arm mult-add ratios stray from rho^2 by up to 20%: the four stride-2 layers
        round odd maps up (28 -> 14 -> 7 -> 4 -> 2, 20 -> 10 -> 5 -> 3 -> 2), and the last stages, at
        2x2 and 4x4, hold most of the mult-adds; the paper's sizes (224 to 128, multiples of 32) divide
        exactly. Alpha's ratio sits above alpha^2 (by 1%, 3% and 10% at alpha 0.75, 0.5 and 0.25; the paper's
        own counts by 2%, 5% and 15%) because the depthwise convolutions, the stem and the classifier
        scale by alpha, not alpha^2. Both are in the cost table; the rule judges the fitted
        exponent. All arms train with channels_last (about 1.4x faster on CPUs, the same arithmetic).
    """,
)

MODEL = "mobilenet_v1"
FULL_SIZE = 28  # Fashion-MNIST's size: rho = size / 28
WIDTHS = (1.0, 0.75, 0.5, 0.25)  # the paper's alphas (table 6)
SIZES = (28, 24, 20, 16)  # 28 x (1, 6/7, 5/7, 4/7): the paper's 224, 192, 160, 128 (table 7)
FULL = "alpha-1.0"  # alpha 1 at 28 px: the first arm of both curves


def _arm(alpha: float, size: int) -> Arm:
    options: dict[str, Any] = {"model_kwargs": {"width_mult": alpha}, "small_input": True}
    if size == FULL_SIZE:
        return Arm(f"alpha-{alpha}", MODEL, options, label=f"alpha {alpha}, {size} px")
    rho = Fraction(size, FULL_SIZE)
    return Arm(
        f"rho-{size}", MODEL, {**options, "image_size": size}, label=f"alpha {alpha}, {size} px (rho {rho})"
    )


ARMS = tuple(_arm(a, FULL_SIZE) for a in WIDTHS) + tuple(_arm(1.0, s) for s in SIZES[1:])
# each curve: (its name, its symbol, [(multiplier, arm name)] from the full net down)
CURVES = (
    ("alpha", "alpha", [(a, f"alpha-{a}") for a in WIDTHS]),
    ("rho", "rho", [(1.0, FULL)] + [(s / FULL_SIZE, f"rho-{s}") for s in SIZES[1:]]),
)
# channels_last: about 1.4x faster for MobileNet on CPU; a warm-up epoch and lr 0.05: at the
# trainer's 0.1 from step 1 the first epoch's loss reached 27-31 and the full net's three seeds
# of a quick run ended at 75.9, 75.0 and 66.7% (the alpha curve lost in that noise)
_FAST = {"channels_last": True, "lr": 0.05, "warmup_epochs": 1.0}
BUDGETS = budgets(
    quick=Budget(epochs=4, train_subset=1200, test_subset=1000, seeds=3, batch_size=64, overrides=_FAST),
    # 2.5x the quick budget's images a run: 21 runs of 9,000 images, about 10 minutes on 2 cores
    standard=Budget(epochs=3, train_subset=3000, test_subset=2000, seeds=3, batch_size=64, overrides=_FAST),
    full=Budget(epochs=15, seeds=3, batch_size=128, overrides=_FAST),
    smoke=Budget(epochs=1, train_subset=128, test_subset=64, seeds=1, batch_size=64, dataset="synthetic"),
)
TOLERANCE = 0.2  # on the fitted exponent of the mult-adds (claim: 2)

# the paper: multiplier -> (ImageNet top-1 %, mult-adds in millions), tables 6 and 7
PAPER = {
    "alpha": {1.0: (70.6, 569), 0.75: (68.4, 325), 0.5: (63.7, 149), 0.25: (50.6, 41)},
    "rho": {1.0: (70.6, 569), 192 / 224: (69.1, 418), 160 / 224: (67.2, 290), 128 / 224: (64.4, 186)},
}
PAPER_PARAMS = {1.0: 4.2, 0.75: 2.6, 0.5: 1.3, 0.25: 0.5}  # millions, table 6


def exponent(multipliers: list[float], ratios: list[float]) -> float:
    """k of ``ratio = m^k`` by least squares through the origin in log-log (m = 1 excluded)."""
    pts = [(math.log(m), math.log(r)) for m, r in zip(multipliers, ratios, strict=True) if m < 1]
    return sum(x * y for x, y in pts) / sum(x * x for x, _ in pts) if pts else math.nan


def arm_cost(arm: Arm, *, num_classes: int = 10, in_chans: int = 1) -> tuple[int, int]:
    """(parameters, mult-adds per image) of ``arm`` at its image size, by cnnkit.analysis."""
    return model_cost(
        arm.model,
        num_classes=num_classes,
        in_chans=in_chans,
        image_size=int(arm.overrides.get("image_size", FULL_SIZE)),
        small_input=True,
        model_kwargs=arm.overrides["model_kwargs"],
    )


def imagenet_costs() -> dict[str, list[tuple[int, int]]]:
    """(parameters, mult-adds) of MobileNet at 224 px, 1000 classes, per multiplier of each curve
    (the paper's setting: its tables' counts, traced by cnnkit.analysis)."""

    def cost(alpha: float, size: int) -> tuple[int, int]:
        kwargs = {"width_mult": alpha}
        return model_cost(
            MODEL, num_classes=1000, in_chans=3, image_size=size, small_input=False, model_kwargs=kwargs
        )

    return {"alpha": [cost(a, 224) for a in WIDTHS], "rho": [cost(1.0, s * 8) for s in SIZES]}


def _curve(arms: dict[str, dict[str, Any]], points: list[tuple[float, str]]) -> dict[str, Any]:
    ms, names = [m for m, _ in points], [a for _, a in points]
    full = arms[names[0]]
    madds = [arms[a]["mult_adds"] / full["mult_adds"] for a in names]
    params = [arms[a]["params"] / full["params"] for a in names]
    top1 = [arms[a]["test_top1"] for a in names]
    pairs = [
        {"larger": names[i], "smaller": names[j], "gain": paired_difference(top1[j], top1[i])}
        for i in range(len(names))
        for j in range(i + 1, len(names))
    ]
    return {
        "multipliers": ms,
        "arms": names,
        "mult_add_ratio": madds,
        "param_ratio": params,
        "squares": [m * m for m in ms],
        "mult_add_exponent": exponent(ms, madds),
        "param_exponent": exponent(ms, params),
        "drop": [paired_difference(top1[0], t) for t in top1],  # the full net's top-1 minus each arm's
        "pairs": pairs,  # each smaller-multiplier arm's top-1 minus each larger one's
    }


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx, cost=True)
    for a in ctx.experiment.arms:  # an arm without a finished run: its cost from its spec
        if arms[a.name]["mult_adds"] is None:
            arms[a.name]["params"], arms[a.name]["mult_adds"] = arm_cost(a)
    imagenet = imagenet_costs()
    curves = {}
    for name, _, points in CURVES:
        c = _curve(arms, points)
        full = imagenet[name][0]
        c["imagenet_mult_adds"] = [m for _, m in imagenet[name]]
        c["imagenet_params"] = [p for p, _ in imagenet[name]]
        c["imagenet_exponent"] = exponent(c["multipliers"], [m / full[1] for _, m in imagenet[name]])
        curves[name] = c
    return {"arms": arms, "curves": curves}


def _monotone_check(name: str, c: dict[str, Any], labels: dict[str, str]) -> Check:
    gains = [p for p in c["pairs"] if measured(p["gain"]["mean"])]
    if len(gains) < len(c["pairs"]):
        return (f"{name}: accuracy falls with {name} (an arm did not finish)", None)

    def excess(p: dict[str, Any]) -> float:  # how far the smaller arm's lead passes its tolerance
        g = p["gain"]
        return g["mean"] - (g["se"] if measured(g["se"]) else 0.005)

    worst = max(gains, key=excess)
    g = worst["gain"]
    se = f"standard error {100 * g['se']:.2f}" if measured(g["se"]) else "one seed: 0.5 allowed"
    return (
        f"{name}: no smaller-{name} arm beats a larger one beyond the noise (closest: "
        f"{labels[worst['smaller']]} minus {labels[worst['larger']]} {100 * g['mean']:+.2f} points, {se})",
        excess(worst) <= 0,
    )


def judge(n: dict[str, Any]) -> Verdict:
    labels = {k: v["label"] for k, v in n["arms"].items()}
    checks: list[Check] = []
    for name, c in n["curves"].items():
        ratios = ", ".join(
            f"{r:.3f} vs {s:.3f}" for r, s in zip(c["mult_add_ratio"][1:], c["squares"][1:], strict=True)
        )
        k = c["mult_add_exponent"]
        checks.append(
            (
                f"{name}: mult-adds scale as {name}^{k:.2f} (2 +- {TOLERANCE}; per arm, "
                f"measured vs {name}^2: {ratios})",
                abs(k - 2) <= TOLERANCE,
            )
        )
    rho = n["curves"]["rho"]
    params = sorted({n["arms"][a]["params"] for a in rho["arms"]})
    checks.append(
        (
            f"rho: the parameters do not change ({', '.join(f'{p:,}' for p in params)})",
            len(params) == 1,
        )
    )
    checks += [_monotone_check(name, c, labels) for name, c in n["curves"].items()]
    checks += [_falls_check(name, c, labels) for name, c in n["curves"].items()]
    return combine(checks, _summary(n))


def _falls_check(name: str, c: dict[str, Any], labels: dict[str, str]) -> Check:
    d, smallest = c["drop"][-1], labels[c["arms"][-1]]
    if not measured(d["mean"]):
        return (f"{name}: accuracy falls to the smallest {name} (an arm did not finish)", None)
    tolerance = d["se"] if measured(d["se"]) else 0.005
    return (
        f"{name}: accuracy falls beyond the noise from the full net to {smallest} ({_points(d)} points)",
        d["mean"] > tolerance,
    )


def _drop_text(c: dict[str, Any], sym: str) -> str:
    d = c["drop"][-1]
    if not measured(d["mean"]):
        return f"{sym} {c['multipliers'][-1]:.2f}: top-1 not measured"
    return f"{sym} {c['multipliers'][-1]:.2f} costs {_points(d)} points of top-1"


def _summary(n: dict[str, Any]) -> str:
    a, r = n["curves"]["alpha"], n["curves"]["rho"]
    return (
        f"mult-adds scale as alpha^{a['mult_add_exponent']:.2f} and rho^{r['mult_add_exponent']:.2f}; "
        f"{_drop_text(a, 'alpha')}, {_drop_text(r, 'rho')}"
    )


def _points(d: dict[str, float]) -> str:
    if not measured(d["mean"]):
        return "n/a"
    se = f" +- {100 * d['se']:.2f}" if measured(d["se"]) else ""
    return f"{100 * d['mean']:+.2f}{se}"


def _scaling_table(n: dict[str, Any]) -> Table:
    rows = []
    for name, c in n["curves"].items():
        for i, arm in enumerate(c["arms"]):
            v = n["arms"][arm]
            rows.append(
                [
                    v["label"],
                    f"{name} {c['multipliers'][i]:.3f}",
                    f"{v['params']:,}",
                    f"{v['mult_adds'] / 1e6:.2f}M",
                    f"{c['mult_add_ratio'][i]:.3f}",
                    f"{c['squares'][i]:.3f}",
                    f"{100 * (c['mult_add_ratio'][i] / c['squares'][i] - 1):+.1f}%",
                    f"{c['param_ratio'][i]:.3f}",
                    pm(v["test_top1"]),
                    _points(c["drop"][i]) if i else "-",
                ]
            )
    return Table(
        "Cost and accuracy along each multiplier (ratios to alpha 1 at 28 px; the drop is the full "
        "net's top-1 minus the arm's, paired by seed, +- its standard error)",
        ["arm", "multiplier", "params", "mult-adds", "mult-adds ratio", "m^2", "ratio vs m^2",
         "params ratio", "test top-1", "drop (points)"],
        rows,
    )  # fmt: skip


def _agreement(n: dict[str, Any]) -> str:
    """One sentence from the numbers: the exponents beside the paper's, and whether accuracy falls
    the paper's way along both multipliers (and by how much of the paper's drop)."""
    parts, falls, close, sizes = [], [], [], []
    for name, c in n["curves"].items():
        paper = PAPER[name]
        paper_drop = paper[1.0][0] - paper[min(paper)][0]
        d = c["drop"][-1]["mean"]
        parts.append(
            f"{name}^{c['mult_add_exponent']:.2f} here against {name}^{c['imagenet_exponent']:.2f} in the "
            f"paper's counts; the smallest {name} costs "
            + (f"{100 * d:+.1f} points against {paper_drop:+.1f}" if measured(d) else "n/a")
        )
        falls.append(measured(d) and d > 0)
        close.append(abs(c["mult_add_exponent"] - c["imagenet_exponent"]) <= TOLERANCE)
        sizes.append(measured(d) and d >= 0.5 * paper_drop / 100)
    names = list(n["curves"])
    fall = [m for m, f in zip(names, falls, strict=True) if f]
    rise = [m for m, f in zip(names, falls, strict=True) if not f]
    direction = (
        "the direction agrees (accuracy falls along both multipliers)"
        if not rise
        else "the direction disagrees (accuracy does not fall along either multiplier)"
        if not fall
        else f"the direction agrees along {', '.join(fall)} only (accuracy does not fall along {', '.join(rise)})"
    )
    return (
        f"{direction}; the cost scaling is {'about the same' if all(close) else 'of a different size'} "
        f"and the accuracy cost {'about as large' if all(sizes) else 'smaller'} ({'; '.join(parts)})"
    )


def _paper(n: dict[str, Any]) -> Table:
    rows = []
    for name, c in n["curves"].items():
        for i, m in enumerate(c["multipliers"]):
            top1, madds = PAPER[name][min(PAPER[name], key=lambda k: abs(k - m))]
            what = f"{round(224 * m)} px / {round(FULL_SIZE * m)} px" if name == "rho" else f"alpha {m}"
            drop = "-" if i == 0 else f"{_points(c['drop'][i])} points"
            rows.append(
                (
                    f"{what}: top-1, mult-adds (ratio to the full net)",
                    f"{top1:.1f}%, {madds}M ({madds / PAPER[name][1.0][1]:.3f}); cnnkit counts "
                    f"{c['imagenet_mult_adds'][i] / 1e6:.1f}M",
                    f"{pm(n['arms'][c['arms'][i]]['test_top1'])} (drop {drop}), "
                    f"{n['arms'][c['arms'][i]]['mult_adds'] / 1e6:.2f}M ({c['mult_add_ratio'][i]:.3f})",
                )
            )
    a = n["curves"]["alpha"]
    rows.append(
        (
            "parameters along alpha (ratio to alpha 1)",
            ", ".join(f"{PAPER_PARAMS[m]}M" for m in WIDTHS)
            + f" (exponent {exponent(list(WIDTHS), [PAPER_PARAMS[m] / 4.2 for m in WIDTHS]):.2f})",
            ", ".join(f"{r:.3f}" for r in a["param_ratio"]) + f" (exponent {a['param_exponent']:.2f})",
        )
    )
    return paper_table("Howard et al. 2017, tables 6 and 7 (ImageNet, 224 px)", rows, _agreement(n))


def tables(n: dict[str, Any]) -> list[Table]:
    return [_scaling_table(n), _paper(n), arm_table(n["arms"])]


def _tradeoff(ctx: Context, n: dict[str, Any]) -> Any:
    """Top-1 against mult-adds (log x) along each multiplier: here, and the paper's tables 6-7."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = new_figure(10, 4)
    here, paper = fig.subplots(1, 2)
    for i, (name, c) in enumerate(n["curves"].items()):
        xs = [n["arms"][a]["mult_adds"] / 1e6 for a in c["arms"]]
        for x, arm in zip(xs, c["arms"], strict=True):
            seeds = n["arms"][arm]["test_top1"]
            here.plot([x] * len(seeds), [100 * t for t in seeds], ".", color=f"C{i}", alpha=0.4)
        ys = [100 * n["arms"][a]["test_top1_mean"] for a in c["arms"]]
        here.plot(xs, ys, "o-", color=f"C{i}", label=f"{name} (mean over seeds)")
        for x, y, m in zip(xs, ys, c["multipliers"], strict=True):
            if measured(y):
                here.annotate(_tag(name, m, FULL_SIZE), (x, y), xytext=(4, 4), **_SMALL)
        pts = sorted(PAPER[name].items(), reverse=True)
        paper.plot([p[1][1] for p in pts], [p[1][0] for p in pts], "o-", color=f"C{i}", label=name)
        for m, (top1, madds) in pts:
            paper.annotate(_tag(name, m, 224), (madds, top1), xytext=(4, -10), **_SMALL)
    here.set(title="here: MobileNet on Fashion-MNIST (28 px)")
    paper.set(title="paper: ImageNet, 224 px (tables 6 and 7)")
    for ax in (here, paper):
        ax.set(xlabel="mult-adds per image (millions, log scale)", ylabel="top-1 (%)", xscale="log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return fig


_SMALL: dict[str, Any] = {"textcoords": "offset points", "fontsize": 7}


def _tag(curve: str, m: float, full_size: int) -> str:
    """A point's name in the figure: alpha's value, or the image size along rho; the full net,
    shared by both curves, is named once."""
    if m == 1.0:
        return f"1, {full_size} px" if curve == "alpha" else ""
    return f"{m:g}" if curve == "alpha" else f"{round(full_size * m)} px"


FIGURES = plots(
    Custom(
        "tradeoff",
        "Top-1 against mult-adds (log scale) along the width multiplier alpha and the resolution "
        "multiplier rho (dots: seeds), beside the paper's tables 6 and 7 (its figures 4 and 5).",
        _tradeoff,
    ),
    Accuracy("Test top-1 of each arm; each dot is one seed.", title="accuracy (dots: seeds)"),
    Curves("Training error (thin) and test top-1 error (bold) by epoch, mean over seeds."),
)


EXPERIMENT = experiment(__name__)
