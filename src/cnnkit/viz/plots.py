"""Learning-rate schedules and receptive-field growth as figures (lecture slides "Learning
Rates", "Cosine Scheduler", "Warmup", "Dilated Convolution", "Receptive Fields").

Thin drawing code over the library's own numbers: the schedules are
:class:`cnnkit.train.schedule.Schedule` (the closed forms the trainer steps through), the
fields are :func:`cnnkit.analysis.plot.rf_growth` (the analysis package's arithmetic).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cnnkit.train.schedule import Schedule

__all__ = ["plot_rf_growth", "plot_schedules"]


def plot_schedules(
    schedules: Mapping[str, Schedule],
    *,
    lr: float | Mapping[str, float] = 1.0,
    output: str | Path | None = None,
    title: str | None = None,
    log: bool = False,
) -> Figure:
    """The learning rate of every optimiser step, per schedule, against epochs.

    ``lr`` is the peak rate eta_0 (one for all, or one per schedule name); ``log`` draws
    the rate on a log axis (for a learning-rate sweep).
    """
    from matplotlib.figure import Figure

    if not schedules:
        raise ValueError("plot_schedules needs at least one schedule")
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for name, s in schedules.items():
        peak = lr[name] if isinstance(lr, Mapping) else lr
        steps = range(s.total_steps)
        ax.plot([i / s.steps_per_epoch for i in steps], [peak * s(i) for i in steps], label=name)
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="learning rate", title=title or "learning-rate schedules")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if output is not None:
        fig.savefig(output, dpi=100)
    return fig


def plot_rf_growth(
    models: Mapping[str, nn.Module | str],
    input_size: Sequence[int] = (1, 28, 28),
    *,
    output: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Receptive-field size after each spatial layer, one line per model, on one log-2 axis."""
    from matplotlib.figure import Figure

    from cnnkit.analysis.plot import rf_growth

    if not models:
        raise ValueError("plot_rf_growth needs at least one model")
    fig = Figure(figsize=(6.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, model) in enumerate(models.items()):
        steps = rf_growth(model, input_size)
        ax.plot([s.index + 1 for s in steps], [s.size for s in steps], "o-", ms=3, color=f"C{i}", label=label)
    if len(input_size) > 1:
        ax.axhline(
            max(input_size[1:]), color="grey", lw=0.8, ls=":", label=f"input ({max(input_size[1:])} px)"
        )
    ax.set_yscale("log", base=2)
    ax.set(
        xlabel="layer on the spatial path",
        ylabel="receptive field (input pixels)",
        title=title or "receptive-field growth",
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    if output is not None:
        fig.savefig(output, dpi=100)
    return fig
