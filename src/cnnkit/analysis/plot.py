"""How the receptive field grows layer by layer (lecture slides "Dilated Convolution", "Receptive Fields").

:func:`rf_growth` returns the data (one step per layer on the spatial path: its
field size and the jump between its units); :func:`plot_receptive_field` draws it
with matplotlib, imported only when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cnnkit.analysis.records import ModelSummary

__all__ = ["RFStep", "plot_receptive_field", "rf_growth"]


@dataclass(frozen=True)
class RFStep:
    """One layer on the spatial path: the field of its output units (largest axis), in input pixels."""

    index: int
    name: str
    type: str
    size: float
    jump: float
    start: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary(model: nn.Module | str | ModelSummary, input_size: Sequence[int]) -> ModelSummary:
    from cnnkit.analysis.records import ModelSummary
    from cnnkit.analysis.summary import summarize

    return model if isinstance(model, ModelSummary) else summarize(model, input_size)


def rf_growth(
    model: nn.Module | str | ModelSummary, input_size: Sequence[int] = (3, 224, 224)
) -> list[RFStep]:
    """The receptive field after each layer that still has a spatial layout, in execution order."""
    s = _summary(model, input_size)
    steps: list[RFStep] = []
    for r in s.layers:
        f = r.receptive_field
        if f is None or f.jump is None:
            continue
        ax = max(range(len(f.size)), key=lambda i: f.size[i])
        steps.append(
            RFStep(len(steps), r.name, r.type, float(f.size[ax]), float(f.jump[ax]), float(f.start[ax]))
        )
    return steps


def plot_receptive_field(
    model: nn.Module | str | ModelSummary,
    input_size: Sequence[int] = (3, 224, 224),
    *,
    output: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Draw field size and jump per layer (log scale), with the input size for reference.

    Uses matplotlib's object API (no pyplot, no GUI backend); ``output`` saves the
    figure (format from the suffix, e.g. ``rf.png``).
    """
    from matplotlib.figure import Figure

    s = _summary(model, input_size)
    steps = rf_growth(s)
    if not steps:
        raise ValueError(f"{s.model} has no layer with a spatial layout to plot (input size {s.input_size})")
    fig = Figure(figsize=(max(6.0, 0.12 * len(steps) + 4), 4.5), layout="constrained")
    ax = fig.add_subplot()
    xs = [st.index for st in steps]
    ax.step(xs, [st.size for st in steps], where="post", label="receptive field size (px)")
    ax.step(xs, [st.jump for st in steps], where="post", label="jump between units (px)", linestyle="--")
    side = max(s.input_size[1:]) if len(s.input_size) > 1 else None
    if side is not None:
        ax.axhline(side, color="grey", linewidth=0.8, linestyle=":", label=f"input size ({side} px)")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("layer (execution order, spatial path)")
    ax.set_ylabel("input pixels")
    ax.set_title(title or f"Receptive field of {s.model} at {'x'.join(str(v) for v in s.input_size[1:])}")
    ax.legend(loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    if len(steps) <= 40:
        ax.set_xticks(xs, [st.name for st in steps], rotation=90, fontsize=6)
    if output is not None:
        fig.savefig(output, dpi=120)
    return fig
