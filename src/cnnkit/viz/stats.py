"""Per-layer activation and gradient statistics (lecture slides "Initialization").

The lecture's initialisation slides (after I2DL and CS231n) push Gaussian data through a
deep net and draw a histogram of every layer's activations: with N(0, 0.01^2) weights the
activations shrink towards zero layer by layer ("collapse"), with a large std they pile up
at the saturated ends of tanh, and with Xavier (tanh) or Kaiming (ReLU) they keep their
spread. :func:`layer_stats` records the same numbers for any model with forward hooks on
its activation modules: a sample of the values, their mean and std, and the std of the
loss gradient with respect to them (backward hooks on the outputs), plus the gradient
norm of every convolution and linear weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "LayerStats",
    "NetStats",
    "activation_module_types",
    "layer_stats",
    "plot_activation_histograms",
    "plot_layer_scales",
]


@dataclass
class LayerStats:
    """One call of one activation module: a sample of its output values and their spread."""

    name: str
    values: torch.Tensor  # a random sample of the output values (1-D, float32)
    mean: float
    std: float
    grad_std: float | None = None  # std of d loss / d output; None before backward

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mean": self.mean, "std": self.std, "grad_std": self.grad_std}


@dataclass
class NetStats:
    """What :func:`layer_stats` measured on one batch."""

    layers: list[LayerStats]
    weight_grad_norms: dict[str, float] = field(default_factory=dict)
    loss: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "layers": [s.to_dict() for s in self.layers],
            "weight_grad_norms": self.weight_grad_norms,
        }


def activation_module_types() -> tuple[type[nn.Module], ...]:
    """The module classes of :data:`cnnkit.layers.act.ACTIVATIONS` (``partial`` factories unwrapped)."""
    from cnnkit.layers.act import ACTIVATIONS

    types: list[type[nn.Module]] = []
    for factory in ACTIVATIONS.values():
        cls = getattr(factory, "func", factory)
        if isinstance(cls, type) and issubclass(cls, nn.Module) and cls is not nn.Identity:
            types.append(cls)
    return tuple(dict.fromkeys(types))


def layer_stats(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    module_types: Sequence[type[nn.Module]] | None = None,
    sample: int = 20000,
    seed: int = 0,
) -> NetStats:
    """Forward ``x`` (and backward the cross-entropy against ``y``, default: the predictions).

    Hooks the modules of ``module_types`` (default: the activation modules; convolutions and
    linear layers when the model has none). A module called twice in one forward pass gives
    two entries (``name#2``). The model runs in train mode, as at the first step of training,
    and its parameter gradients are restored to what they were.
    """
    kinds = tuple(module_types) if module_types is not None else activation_module_types()
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
    if not targets:
        kinds = (nn.Conv2d, nn.Linear)
        targets = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
    g = torch.Generator().manual_seed(seed)
    layers: list[LayerStats] = []
    outputs: list[torch.Tensor] = []
    calls: dict[str, int] = {}

    def hook(name: str) -> Any:
        def fn(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            if not isinstance(out, torch.Tensor):
                return
            calls[name] = calls.get(name, 0) + 1
            label = name if calls[name] == 1 else f"{name}#{calls[name]}"
            flat = out.detach().float().flatten().cpu()
            idx = torch.randperm(flat.numel(), generator=g)[:sample] if flat.numel() > sample else slice(None)
            layers.append(LayerStats(label, flat[idx].clone(), float(flat.mean()), float(flat.std())))
            if out.requires_grad:
                out.retain_grad()
            outputs.append(out)

        return fn

    saved = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
    handles = [m.register_forward_hook(hook(n)) for n, m in targets]
    was_training = model.training
    try:
        model.train()
        for p in model.parameters():
            p.grad = None
        logits = model(x)
        target = logits.argmax(1) if y is None else y
        loss = F.cross_entropy(logits.float(), target)
        loss.backward()
        for stats, out in zip(layers, outputs, strict=True):
            if out.grad is not None:
                stats.grad_std = float(out.grad.float().std())
            elif out.requires_grad:
                stats.grad_std = 0.0
        grads = {
            f"{n}.weight": float(m.weight.grad.norm())
            for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear) and m.weight.grad is not None
        }
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        for n, p in model.named_parameters():
            p.grad = saved[n]
    return NetStats(layers, grads, float(loss.detach()))


# ---------------------------------------------------------------------------- figures


def _pick(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def plot_activation_histograms(
    stats: Mapping[str, NetStats],
    *,
    columns: int = 6,
    output: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """One row per setting (e.g. init scheme), one histogram per layer, evenly spaced from
    the first to the last activation (the lecture's initialisation slides).

    Each row shares its x range (the largest |value| of the row), so a collapse shows as a
    spike at zero in the later layers and saturation as mass at the ends.
    """
    from matplotlib.figure import Figure

    if not stats:
        raise ValueError("plot_activation_histograms needs at least one setting")
    rows = list(stats.items())
    n_cols = max(len(_pick(len(s.layers), columns)) for _, s in rows)
    fig = Figure(figsize=(2.0 * n_cols + 1.2, 1.55 * len(rows) + 0.8), layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, (label, s) in enumerate(rows):
        picks = _pick(len(s.layers), columns)
        lim = max(
            (float(s.layers[i].values.abs().max()) for i in picks if s.layers[i].values.numel()), default=0.0
        )
        lim = lim if lim > 0 and math.isfinite(lim) else 1.0
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(picks):
                ax.axis("off")
                continue
            layer = s.layers[picks[c]]
            vals = layer.values[torch.isfinite(layer.values)].numpy()
            nonneg = all(float(s.layers[i].values.min()) >= 0 for i in picks if s.layers[i].values.numel())
            ax.hist(vals, bins=41, range=(0.0 if nonneg else -lim, lim), color=f"C{r}")
            ax.set_yticks([])
            ax.tick_params(labelsize=6)
            ax.set_title(f"{layer.name}\nstd {layer.std:.2g}", fontsize=6)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title or "activation histograms per layer (first to last)")
    if output is not None:
        fig.savefig(output, dpi=100)
    return fig


def plot_layer_scales(
    stats: Mapping[str, NetStats],
    *,
    output: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Activation std and gradient std per layer (log scale), one line per setting."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax_a, ax_g = fig.subplots(1, 2)
    floor = 1e-30  # zero on a log axis: drawn at the floor and said so in the label
    for i, (label, s) in enumerate(stats.items()):
        xs = list(range(1, len(s.layers) + 1))
        a = [max(layer.std, floor) for layer in s.layers]
        gr = [max(layer.grad_std or 0.0, floor) for layer in s.layers]
        ax_a.plot(xs, a, "o-", ms=3, color=f"C{i}", label=label)
        ax_g.plot(xs, gr, "o-", ms=3, color=f"C{i}", label=label)
    for ax, what in ((ax_a, "activation std"), (ax_g, "std of d loss / d activation")):
        ax.set_yscale("log")
        ax.set_xlabel("activation layer (forward order)")
        ax.set_ylabel(what + " (0 drawn at 1e-30)")
        ax.grid(alpha=0.3, which="both")
    ax_a.legend(fontsize=7)
    fig.suptitle(title or "scale of activations and gradients through the layers")
    if output is not None:
        fig.savefig(output, dpi=100)
    return fig
