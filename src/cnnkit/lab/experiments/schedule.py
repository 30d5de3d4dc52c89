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

from cnnkit.lab.common import arm_table, best_of, budgets, experiment, mean, measure_arms, measured, pct
from cnnkit.lab.figures import Curves, Custom, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict, combine

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
        Three checks on mean test top-1 (a run stopped by a non-finite loss counts at chance, 10%):
        the spread over peak rates exceeds the spread over schedules; the decaying schedules' mean
        beats constant; warmup beats no warmup at lr 0.8. All: reproduced; none: not reproduced; else
        partly.
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
    full=Budget(epochs=30, seeds=2, batch_size=128),
)


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx)
    chance = 0.1
    # a run the trainer stopped (non-finite loss: diverged) counts at chance accuracy
    acc = {
        k: (v["test_top1_mean"] if v["test_top1"] else (chance if v["failed"] else math.nan))
        for k, v in arms.items()
    }
    sched = [acc[k] for k in SCHEDULE_ARMS]
    sweep = [acc[k] for k in SWEEP]
    return {
        "arms": arms,
        "top1": acc,
        "schedule_spread": max(sched) - min(sched),
        "lr_spread": max(sweep) - min(sweep),
        "decay_mean": mean([acc["step"], acc["exponential"], acc["cosine"]]),
    }


def judge(n: dict[str, Any]) -> Verdict:
    acc = n["top1"]
    ls, ss = n["lr_spread"], n["schedule_spread"]
    known = measured(*acc.values())
    checks: list[Check] = [
        (
            f"the magnitude matters most: accuracy spread over lr 0.1..0.0001 ({100 * ls:.2f} points) exceeds "
            f"the spread over the five schedules at lr 0.1 ({100 * ss:.2f} points)",
            ls > ss if known else None,
        ),
        (
            f"decaying beats constant: mean of step, exponential and cosine {pct(n['decay_mean'])} > constant "
            f"{pct(acc['constant'])}",
            n["decay_mean"] > acc["constant"] if known else None,
        ),
        (
            f"warmup helps at a high peak rate ({HIGH_LR:g}): {pct(acc['high_lr_warmup'])} with vs "
            f"{pct(acc['high_lr'])} without",
            acc["high_lr_warmup"] > acc["high_lr"] if known else None,
        ),
    ]
    best = best_of({k: acc[k] for k in SWEEP})
    return combine(
        checks,
        f"best peak rate {SWEEP[best]:g} ({pct(acc[best])}); schedules at 0.1 span {100 * ss:.2f} points, "
        f"peak rates span {100 * ls:.2f}",
    )


def tables(n: dict[str, Any]) -> list[Table]:
    acc = n["top1"]
    return [
        arm_table(n["arms"]),
        Table(
            "Learning-rate magnitude (cosine schedule)",
            ["peak lr", "test top-1"],
            [[f"{v:g}", pct(acc[k])] for k, v in SWEEP.items()],
        ),
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
