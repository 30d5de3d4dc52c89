"""Activation functions (lecture slides "Activation Functions": sigmoid and tanh, marked
"Saturated", then ReLU, LeakyReLU, PReLU, SoftPlus, Swish, GELU, Sine).

The lecture: sigmoid and tanh saturate -- their gradient vanishes for large |z| -- so nets
built on them train slowly; the ReLU family does not saturate for z > 0. Every activation
of :mod:`cnnkit.layers.act` trains the same net (fmnet, with its batch norm: without it and
with torch's default initialisation no activation leaves chance level within the quick
budget), with identity as the linear baseline.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from cnnkit.lab.common import (
    Column,
    arm_table,
    best_of,
    budgets,
    by_arm,
    experiment,
    mean,
    measure_arms,
    measured,
    pct,
    per_arm_table,
)
from cnnkit.lab.figures import Accuracy, Curves, Custom, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="activation",
    title="Saturating activations train slowly",
    claim="""
        Sigmoid and tanh saturate (their gradient vanishes for large |z|), so they train slower than
        ReLU, LeakyReLU, PReLU, SoftPlus, Swish and GELU.
    """,
    slide="Activation Functions",
    rule="""
        Per saturating activation: its mean training loss over the epochs exceeds the median of the
        eight non-saturating ones. Both: reproduced; one: partly; none: not reproduced.
    """,
    notes="""
        fmnet narrowed to 16-32-64 channels, with its batch norm, SGD at lr 0.05. A first version
        without normalisation left every activation at chance (mean loss 2.30 = ln 10) within the
        quick budget: torch's default initialisation shrinks the signal through the layers whatever
        the activation.
    """,
)

SATURATING = ("sigmoid", "tanh")
NON_SATURATING = ("relu", "leaky_relu", "prelu", "softplus", "swish", "gelu", "gelu_tanh", "quick_gelu")
OTHERS = ("sine", "identity")  # swish and silu are the same function; silu is left out
_NET = {"model_kwargs": {"widths": [16, 32, 64], "stem_width": 16}, "lr": 0.05}
ARMS = tuple(Arm(a, "fmnet", {**_NET, "act": a}, label=a) for a in (*SATURATING, *NON_SATURATING, *OTHERS))
BUDGETS = budgets(
    quick=Budget(epochs=3, train_subset=2000, test_subset=1000, seeds=1, batch_size=64),
    full=Budget(epochs=15, seeds=2, batch_size=128),
)


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx)
    # speed of training: the mean training loss over the epochs (the area under the loss curve)
    auc = {k: mean([mean([float(h["train_loss"]) for h in r.history]) for r in ctx.ok_runs(k)]) for k in arms}
    finite = [auc[k] for k in NON_SATURATING if measured(auc[k])]
    return {
        "arms": arms,
        "loss_auc": auc,
        "non_saturating_median": statistics.median(finite) if finite else float("nan"),
        "top1": by_arm(arms, "test_top1_mean"),
    }


def judge(n: dict[str, Any]) -> Verdict:
    auc, med = n["loss_auc"], n["non_saturating_median"]
    checks: list[Check] = [
        (
            f"{a} trains slower than the median non-saturating activation (mean training loss "
            f"{auc[a]:.3f} vs {med:.3f})",
            auc[a] > med if measured(auc[a], med) else None,
        )
        for a in SATURATING
    ]
    top = n["top1"]
    best = best_of(top)
    return combine(
        checks,
        f"mean training loss: sigmoid {auc['sigmoid']:.3f}, tanh {auc['tanh']:.3f}, non-saturating median "
        f"{med:.3f}; best test top-1 {best} {pct(top[best])}",
    )


def tables(n: dict[str, Any]) -> list[Table]:
    columns: list[Column] = [
        ("activation", lambda k, _: k),
        (
            "kind",
            lambda k, _: "saturating" if k in SATURATING else "other" if k in OTHERS else "non-saturating",
        ),
        ("mean train loss", lambda k, _: f"{n['loss_auc'][k]:.4f}"),
        ("test top-1", lambda k, _: pct(n["top1"][k])),
    ]
    return [
        per_arm_table("Speed of training and accuracy per activation", n["arms"], columns),
        arm_table(n["arms"]),
    ]


def _functions_figure() -> Any:
    from cnnkit.layers.act import get_act

    z = torch.linspace(-5, 5, 401, requires_grad=True)
    fig = new_figure(10, 3.6)
    ax_f, ax_d = fig.subplots(1, 2)
    for i, name in enumerate((*SATURATING, *NON_SATURATING, *OTHERS)):
        torch.manual_seed(0)
        f = get_act(name)()
        y = f(z.clone())
        (g,) = torch.autograd.grad(y.sum(), z)
        style = "-" if name in SATURATING else "--" if name in OTHERS else ":"
        ax_f.plot(
            z.detach(),
            y.detach(),
            style,
            color=f"C{i % 10}",
            label=name,
            lw=1.6 if name in SATURATING else 1.0,
        )
        ax_d.plot(z.detach(), g, style, color=f"C{i % 10}", lw=1.6 if name in SATURATING else 1.0)
    ax_f.set(title="activation", xlabel="z", ylim=(-1.5, 5))
    ax_d.set(title="derivative: saturating ones vanish for large |z|", xlabel="z", ylim=(-0.2, 1.3))
    ax_f.legend(fontsize=6, ncol=2)
    for ax in (ax_f, ax_d):
        ax.grid(alpha=0.3)
    return fig


FIGURES = plots(
    Custom("functions", "Each activation and its derivative (autograd).", lambda ctx, n: _functions_figure()),
    Curves(
        "Training loss by epoch (mean over seeds).",
        panels=(("saturating vs ReLU", ["sigmoid", "tanh", "relu", "gelu"]), ("all", None)),
        loss=True,
        stem="loss",
    ),
    Accuracy("Test top-1 per activation.", zoom=False),
)


EXPERIMENT = experiment(__name__)
