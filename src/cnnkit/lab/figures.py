"""The figures of ``cnnkit lab``: an experiment declares what it plots, :func:`plots` draws it.

An experiment's ``figures`` is ``plots(...)`` of its figures in report order, each one of

- :class:`Accuracy`: every arm's test top-1, a bar at the mean and a dot per seed
  (``accuracy.png``);
- :class:`Curves`: per-epoch training and test error (or training loss) of the arms, mean
  over seeds, one panel per group of arms (``curves.png``);
- :class:`Custom`: a figure only that experiment draws, from the context and its numbers.

Each is saved as ``<experiment folder>/<stem>.png`` with its caption. The drawing helpers
(:func:`new_figure`, :func:`bar_figure`, :func:`curves_figure`) serve the custom figures too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cnnkit.lab.common import mean
from cnnkit.lab.spec import Context, FigureRef, Figures

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CURVES_CAPTION",
    "Accuracy",
    "Curves",
    "Custom",
    "bar_figure",
    "curves_figure",
    "new_figure",
    "plots",
    "save_figure",
]

CURVES_CAPTION = "Training error (thin) and test error (bold) by epoch."

# (name, value of one epoch's metrics row, line style) per curve of an arm
_ERROR_METRICS: tuple[tuple[str, Callable[[dict[str, Any]], float], str], ...] = (
    ("train", lambda h: 100 * (1 - h["train_acc"]), "-"),
    ("test", lambda h: 100 * h["test_top1_err"], "-"),
)
_LOSS_METRICS: tuple[tuple[str, Callable[[dict[str, Any]], float], str], ...] = (
    ("train loss", lambda h: float(h["train_loss"]), "-"),
)


# ---------------------------------------------------------------------------- drawing


def save_figure(fig: Figure, ctx: Context, stem: str, caption: str) -> FigureRef:
    """Save ``fig`` as ``<experiment folder>/<stem>.png`` and return its reference."""
    path = ctx.folder / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return FigureRef(path.name, caption)


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def curves_figure(ctx: Context, panels: Sequence[tuple[str, Sequence[str]]], *, loss: bool = False) -> Figure:
    """One panel per ``(title, arm names)``; per arm and metric, the mean over seeds by epoch.

    The metrics: training error (thin, from the running accuracy of each epoch) and test
    top-1 error (bold), as in the lecture's ResNet figure; with ``loss``, the training loss.
    """
    metrics = _LOSS_METRICS if loss else _ERROR_METRICS
    fig = new_figure(5.2 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, arms) in zip(axes, panels, strict=True):
        for i, arm in enumerate(arms):
            runs = ctx.ok_runs(arm)
            if not runs:
                continue
            label = next(a.title for a in ctx.experiment.arms if a.name == arm)
            epochs = min(len(r.history) for r in runs)
            for j, (mname, fn, style) in enumerate(metrics):
                ys = [mean([fn(r.history[e]) for r in runs]) for e in range(epochs)]
                ax.plot(
                    range(1, epochs + 1),
                    ys,
                    style,
                    color=f"C{i}",
                    lw=0.9 if j == 0 and len(metrics) > 1 else 2.2,
                    marker="o" if j == 0 else "s",
                    ms=2.5 if j == 0 else 4,
                    label=f"{label} ({mname})",
                )
        ax.set(title=title, xlabel="epoch", ylabel="training loss" if loss else "error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def bar_figure(
    groups: Sequence[tuple[str, Sequence[float]]],
    *,
    ylabel: str,
    title: str,
    scale: float = 100.0,
    zoom: bool = True,
) -> Figure:
    """One bar per group at its mean, each seed as a dot; ``zoom`` starts the axis near the data."""
    fig = new_figure(max(4.5, 0.75 * len(groups) + 2), 3.6)
    ax = fig.add_subplot()
    vals_all = [scale * v for _, vs in groups for v in vs if math.isfinite(v)]
    for i, (_, vs) in enumerate(groups):
        fin = [scale * v for v in vs if math.isfinite(v)]
        if fin:
            ax.bar(i, mean(fin), color=f"C{i % 10}", alpha=0.75)
            ax.plot([i] * len(fin), fin, "k.", ms=5)
    ax.set_xticks(range(len(groups)), [g for g, _ in groups], rotation=30, ha="right", fontsize=8)
    if zoom and vals_all:
        lo, hi = min(vals_all), max(vals_all)
        pad = max((hi - lo) * 0.3, 0.5)
        ax.set_ylim(max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, axis="y")
    return fig


# ---------------------------------------------------------------------------- declared figures


@dataclass(frozen=True)
class Accuracy:
    """Every arm's test top-1 (``numbers["arms"]``, in order): a bar at the mean, a dot per seed.

    ``zoom`` starts the axis near the data; without it the axis starts at 0.
    """

    caption: str
    title: str = "accuracy"
    zoom: bool = True
    stem: str = "accuracy"

    def draw(self, ctx: Context, n: Mapping[str, Any]) -> Figure:
        groups = [(v["label"], v["test_top1"]) for v in n["arms"].values()]
        return bar_figure(groups, ylabel="test top-1 (%)", title=self.title, zoom=self.zoom)


@dataclass(frozen=True)
class Curves:
    """Curves by epoch, one panel per ``(title, arm names)``; ``None`` names every arm.

    Training error (thin) and test error (bold), or with ``loss`` the training loss.
    """

    caption: str = CURVES_CAPTION
    panels: Sequence[tuple[str, Sequence[str] | None]] = (("error by epoch", None),)
    loss: bool = False
    stem: str = "curves"

    def draw(self, ctx: Context, n: Mapping[str, Any]) -> Figure:
        every = [a.name for a in ctx.experiment.arms]
        panels = [(title, every if arms is None else arms) for title, arms in self.panels]
        return curves_figure(ctx, panels, loss=self.loss)


@dataclass(frozen=True)
class Custom:
    """A figure of one experiment: ``draw(ctx, numbers)``, or ``None`` where there is nothing to draw."""

    stem: str
    caption: str
    draw: Callable[[Context, dict[str, Any]], Figure | None]


Plot = Accuracy | Curves | Custom


def plots(*declared: Plot) -> Figures:
    """The ``figures`` function of an experiment: draws and saves ``declared`` in this order."""

    def figures(ctx: Context, n: dict[str, Any]) -> list[FigureRef]:
        out = []
        for p in declared:
            fig = p.draw(ctx, n)
            if fig is not None:
                out.append(save_figure(fig, ctx, p.stem, p.caption))
        return out

    return figures
