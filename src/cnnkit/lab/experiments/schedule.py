"""Learning rates: magnitude, decay and warmup (lecture slides "Learning Rates", "Step
Decay", "Exponential Decay", "Cosine Scheduler", "Warmup").

The lecture: the learning rate is "the most important hyperparameter" (0.1, 0.01, 0.001,
0.0001 "would be a good candidate"); the schedule matters too: step and exponential decay,
the cosine ``eta_t = eta_T + (eta_0 - eta_T)/2 (1 + cos(pi t / T))`` (Loshchilov & Hutter
2017); and warmup, "choosing a sufficiently small learning rate to prevent divergence in the
beginning" (Goyal et al. 2017). Every arm is the trainer's own schedule
(:class:`cnnkit.train.schedule.Schedule`), drawn in the report as it was stepped.
"""

from __future__ import annotations

import math
from typing import Any

from cnnkit.lab.common import (
    arm_table,
    best_of,
    budgets,
    effect_text,
    experiment,
    grade_effect,
    mean,
    measure_arms,
    measured,
    paired_difference,
    paper_table,
    pct,
)
from cnnkit.lab.figures import Curves, Custom, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="schedule",
    title="The learning rate's magnitude matters most; decay and warmup help",
    claim="""
        The learning rate is the most important hyperparameter (try 0.1 ... 0.0001); its decay (step,
        exponential, cosine) matters, and warmup prevents divergence at the start.
    """,
    slide="Learning Rates; Step Decay; Exponential Decay; Cosine Scheduler; Warmup",
    rule="""
        Three effects on test top-1, each paired by seed (the same training subset and order; a run
        stopped by a non-finite loss counts at chance, 10%), as the mean over seeds and the standard
        error of the paired difference: (1) the spread (best minus worst) over the peak rates 0.1 ...
        0.0001 minus the spread over the five schedules at 0.1; (2) the mean of step, exponential and
        cosine minus constant; (3) warmup minus no warmup at peak rate 0.8. An effect counts when it
        exceeds one standard error over at least two seeds. All three count: reproduced; none is
        above 0: not reproduced; otherwise partly (an effect within one standard error is below what
        the budget resolves); an arm without a finished run: inconclusive.
    """,
    notes="fmnet narrowed to 16-32-64 channels; SGD with Nesterov momentum 0.9 and weight decay 5e-4 throughout.",
)

_NET = {"model_kwargs": {"widths": [16, 32, 64], "stem_width": 16}}
LR, HIGH_LR = 0.1, 0.8
SCHEDULE_ARMS = ("constant", "step", "exponential", "cosine", "warmup_cosine")
SWEEP = {"cosine": LR, "lr0.01": 0.01, "lr0.001": 0.001, "lr0.0001": 0.0001}
ARMS = (
    Arm("constant", "fmnet", {**_NET, "lr": LR, "sched": "constant"}, label="constant"),
    Arm(
        "step",
        "fmnet",
        {**_NET, "lr": LR, "sched": "step", "decay_rate": 0.1, "decay_epochs": lambda b: b.epochs / 3},
        label="step (x0.1 every third of the run)",
    ),
    Arm(
        "exponential",
        "fmnet",
        {**_NET, "lr": LR, "sched": "exponential", "decay_rate": lambda b: 0.01 ** (1 / b.epochs)},
        label="exponential (to 1% at the end)",
    ),
    Arm("cosine", "fmnet", {**_NET, "lr": LR, "sched": "cosine"}, label="cosine, lr 0.1"),
    Arm(
        "warmup_cosine",
        "fmnet",
        {**_NET, "lr": LR, "sched": "cosine", "warmup_epochs": lambda b: min(1.0, b.epochs / 4)},
        label="warmup + cosine",
    ),
    *(
        Arm(k, "fmnet", {**_NET, "lr": v, "sched": "cosine"}, label=f"cosine, lr {v:g}")
        for k, v in SWEEP.items()
        if k != "cosine"
    ),
    Arm(
        "high_lr",
        "fmnet",
        {**_NET, "lr": HIGH_LR, "sched": "cosine"},
        label=f"cosine, lr {HIGH_LR:g}, no warmup",
    ),
    Arm(
        "high_lr_warmup",
        "fmnet",
        {**_NET, "lr": HIGH_LR, "sched": "cosine", "warmup_epochs": lambda b: min(1.0, b.epochs / 4)},
        label=f"cosine, lr {HIGH_LR:g}, warmup",
    ),
)
BUDGETS = budgets(
    quick=Budget(epochs=5, train_subset=2000, test_subset=1000, seeds=2, batch_size=64),
    # the quick budget (155 steps, 2 seeds) judged means without their noise; the schedules differ
    # most at the end of a run that has settled, so twice the images (overfitting matters little
    # here) and a sixth epoch: 372 steps, a full epoch of warmup; 3 seeds for paired standard
    # errors, 1,500 test images. About 15 s a run on 2 idle cores: 7.5 minutes for the 30 runs
    # (benchmarks/lab_budget.py).
    standard=Budget(epochs=6, train_subset=4000, test_subset=1500, seeds=3, batch_size=64),
    full=Budget(epochs=30, seeds=2, batch_size=128),
)
CHANCE = 0.1  # a run stopped by a non-finite loss (diverged) counts at chance accuracy
# Goyal et al. 2017, Table 1: ResNet-50 on ImageNet at batch 8k (peak lr 3.2), top-1 error (%)
# without warmup and with their gradual warmup (5 epochs), means of 5 runs
PAPER_WARMUP_ERROR = (24.84, 23.74)
# He et al. 2016, sec. 4.2: the CIFAR-10 ResNets start at lr 0.1, divided by 10 at 32k and 48k
# iterations (of 64k)
PAPER_PEAK_LR = 0.1


def _seed_top1(ctx: Context, arm: str) -> dict[int, float]:
    """Test top-1 of every run of ``arm`` by seed: a stopped run counts at :data:`CHANCE`."""
    out = {}
    for r in ctx.runs.get(arm, []):
        if r.ok and r.final is not None:
            out[r.seed] = float(r.final["test_top1"])
        elif r.error:
            out[r.seed] = CHANCE
    return out


def _spread(values: list[float]) -> float:
    return max(values) - min(values)


def effects(per_seed: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """The rule's three paired differences from every arm's top-1 at the same seeds (one list
    per arm, the seeds in the same order)."""
    n = min((len(v) for v in per_seed.values()), default=0)
    at = [{k: v[i] for k, v in per_seed.items()} for i in range(n)]
    return {
        "magnitude": paired_difference(
            [_spread([a[k] for k in SWEEP]) for a in at], [_spread([a[k] for k in SCHEDULE_ARMS]) for a in at]
        ),
        "decay": paired_difference(
            [mean([a["step"], a["exponential"], a["cosine"]]) for a in at], [a["constant"] for a in at]
        ),
        "warmup": paired_difference([a["high_lr_warmup"] for a in at], [a["high_lr"] for a in at]),
    }


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx)
    by_seed = {k: _seed_top1(ctx, k) for k in arms}
    acc = {k: mean(list(v.values())) for k, v in by_seed.items()}
    # the seeds at which every arm has a number: the paired differences use these
    common = sorted(set.intersection(*(set(v) for v in by_seed.values()))) if by_seed else []
    per_seed = {k: [v[s] for s in common] for k, v in by_seed.items()}
    sched = [acc[k] for k in SCHEDULE_ARMS]
    sweep = [acc[k] for k in SWEEP]
    return {
        "arms": arms,
        "top1": acc,
        "seeds": common,
        "per_seed": per_seed,
        "effects": effects(per_seed),
        "schedule_spread": max(sched) - min(sched),
        "lr_spread": max(sweep) - min(sweep),
        "decay_mean": mean([acc["step"], acc["exponential"], acc["cosine"]]),
    }


# the rule's effects: key, what is measured (in words)
EFFECTS = (
    ("magnitude", "spread over peak rates minus spread over schedules"),
    ("decay", "mean of step, exponential and cosine minus constant"),
    ("warmup", f"warmup minus no warmup at lr {HIGH_LR:g}"),
)


def judge(n: dict[str, Any]) -> Verdict:
    acc, eff = n["top1"], n["effects"]
    grades = {k: grade_effect(eff[k]) for k, _ in EFFECTS}
    checks: list[Check] = [
        (effect_text(eff[k], what), None if grades[k] == "unknown" else grades[k] == "beyond")
        for k, what in EFFECTS
    ]
    if any(g == "unknown" for g in grades.values()):
        return Verdict("inconclusive", "an arm has no finished run at a seed the others share", checks)
    best = best_of({k: acc[k] for k in SWEEP})
    summary = f"best peak rate {SWEEP[best]:g} ({pct(acc[best])}); paired by seed: " + "; ".join(
        f"{what} {100 * eff[k]['mean']:+.2f} points"
        + (f" (SE {100 * eff[k]['se']:.2f})" if measured(eff[k]["se"]) else " (one seed)")
        for k, what in EFFECTS
    )
    names = {g: [w for k, w in EFFECTS if grades[k] == g] for g in ("beyond", "within", "against")}
    if len(names["beyond"]) == len(EFFECTS):
        return Verdict("reproduced", summary + "; every effect beyond one standard error", checks)
    if len(names["against"]) == len(EFFECTS):
        return Verdict(
            "not reproduced", summary + "; no effect points the lecture's way on this data", checks
        )
    why = [
        "above 0 but not beyond one standard error over two seeds or more (below what this budget "
        f"resolves): {', '.join(names['within'])}"
        if names["within"]
        else "",
        f"the other way: {', '.join(names['against'])}" if names["against"] else "",
    ]
    return Verdict("partly", summary + "; " + "; ".join(w for w in why if w), checks)


def _paper(n: dict[str, Any]) -> Table:
    """Goyal et al. 2017, Table 1 (warmup at a high peak rate) and He et al. 2016, sec. 4.2 (peak
    rate 0.1 with step decay), beside the same comparisons here."""
    acc, w = n["top1"], n["effects"]["warmup"]
    before, after = PAPER_WARMUP_ERROR
    best = best_of({k: acc[k] for k in SWEEP})
    known = int(w["n"]) > 0 and measured(w["mean"])
    se = f", SE {100 * w['se']:.2f}" if measured(w["se"]) else ", one seed"
    rows = [
        (
            "top-1 error without -> with warmup (%)",
            f"{before:.2f} -> {after:.2f} (ResNet-50, ImageNet, batch 8k, peak lr 3.2)",
            f"{100 * (1 - acc['high_lr']):.2f} -> {100 * (1 - acc['high_lr_warmup']):.2f} "
            f"(fmnet, batch 64, peak lr {HIGH_LR:g})"
            if measured(acc["high_lr"], acc["high_lr_warmup"])
            else "not measured",
        ),
        (
            "warmup minus no warmup, top-1 (points)",
            f"{before - after:+.2f}",
            f"{100 * w['mean']:+.2f}{se}" if known else "n/a",
        ),
        (
            "peak learning rate",
            f"{PAPER_PEAK_LR:g}, divided by 10 at 32k and 48k of 64k iterations (He et al. 2016, CIFAR-10)",
            f"best of 0.1 ... 0.0001 (cosine): {SWEEP[best]:g}; step decay at 0.1: {pct(acc['step'])}, "
            f"constant 0.1: {pct(acc['constant'])}",
        ),
    ]
    lr = (
        f"the best peak rate here is the papers' {PAPER_PEAK_LR:g}"
        if math.isclose(SWEEP[best], PAPER_PEAK_LR)
        else f"the best peak rate here is {SWEEP[best]:g}, not the papers' {PAPER_PEAK_LR:g}"
    )
    if not known:
        agreement = f"warmup was not measured; {lr}."
    elif w["mean"] <= 0:
        agreement = (
            f"the direction disagrees: warmup does not help at lr {HIGH_LR:g} here "
            f"({100 * w['mean']:+.2f} points; "
            f"the paper: {before - after:.2f} points less error); {lr}."
        )
    else:
        ratio = w["mean"] / ((before - after) / 100)
        size = "about the same size" if 0.5 <= ratio <= 2 else "smaller" if ratio < 0.5 else "larger"
        noise = "beyond" if grade_effect(w) == "beyond" else "within"
        agreement = (
            f"the direction agrees: warmup lowers the error by {100 * w['mean']:.2f} points here against "
            f"{before - after:.2f} in the paper ({size}), {noise} one standard error; {lr}."
        )
    return paper_table("Goyal et al. 2017, Table 1; He et al. 2016, sec. 4.2", rows, agreement)


def tables(n: dict[str, Any]) -> list[Table]:
    acc = n["top1"]
    return [
        arm_table(n["arms"]),
        Table(
            "Learning-rate magnitude (cosine schedule)",
            ["peak lr", "test top-1"],
            [[f"{v:g}", pct(acc[k])] for k, v in SWEEP.items()],
        ),
        _paper(n),
    ]


def _steps_per_epoch(ctx: Context) -> int:
    b = ctx.budget
    n = b.train_subset
    if n is None:
        from cnnkit.data.sources import load_dataset

        n = len(load_dataset(ctx.dataset, data_dir=ctx.data_dir).train_y)
    return max(n // b.batch_size, 1)


def _schedules(ctx: Context) -> tuple[dict[str, Any], dict[str, float]]:
    """Every arm's schedule as the trainer steps it, and its peak rate, by arm title."""
    from cnnkit.train.schedule import Schedule

    spe, b = _steps_per_epoch(ctx), ctx.budget
    scheds, peaks = {}, {}
    for arm in ARMS:
        o = arm.resolve(b)
        scheds[arm.title] = Schedule.from_config({**o, "epochs": b.epochs}, spe)
        peaks[arm.title] = float(o["lr"])
    return scheds, peaks


def _five(ctx: Context, n: dict[str, Any]) -> Any:
    from cnnkit.viz.plots import plot_schedules

    scheds, peaks = _schedules(ctx)
    titles = [a.title for a in ARMS]
    return plot_schedules({t: scheds[t] for t in titles[:5]}, lr=peaks, title="the five schedules (lr 0.1)")


def _all(ctx: Context, n: dict[str, Any]) -> Any:
    from cnnkit.viz.plots import plot_schedules

    scheds, peaks = _schedules(ctx)
    return plot_schedules(scheds, lr=peaks, title="all arms (log scale)", log=True)


def _sweep(ctx: Context, n: dict[str, Any]) -> Any:
    fig = new_figure(5.5, 3.6)
    ax = fig.add_subplot()
    xs = list(SWEEP.values())
    ax.plot(xs, [100 * n["top1"][k] for k in SWEEP], "o-")
    ax.set_xscale("log")
    ax.set(xlabel="peak learning rate", ylabel="test top-1 (%)", title="magnitude sweep (cosine)")
    ax.grid(alpha=0.3, which="both")
    return fig


FIGURES = plots(
    Custom("schedules", "The learning rate at every optimiser step, as the trainer stepped it.", _five),
    Custom(
        "schedules_all",
        "Every arm's learning rate, including the magnitude sweep and the high-rate warmup pair.",
        _all,
    ),
    Curves(
        panels=(
            ("schedules at lr 0.1", SCHEDULE_ARMS),
            ("peak learning rate", list(SWEEP)),
            (f"lr {HIGH_LR:g}: warmup or not", ["high_lr", "high_lr_warmup"]),
        )
    ),
    Custom("sweep", "Test top-1 against the peak learning rate.", _sweep),
)


EXPERIMENT = experiment(__name__)
