"""First-layer filters, feature maps and saliency maps (lecture slide "ZFNet").

- Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks" (ECCV):
  showing the first layer's filters and the feature maps an image produces is how they
  found AlexNet's dead and aliased first-layer filters, and shrank ZFNet's first layer
  from 11x11 stride 4 to 7x7 stride 2 (the lecture's ZFNet slide). Each filter is shown
  scaled to [0, 1] on its own, as in their fig. 6.
- Simonyan, Vedaldi & Zisserman 2014, "Deep inside convolutional networks: visualising
  image classification models and saliency maps" (ICLR workshop), sec. 3: the saliency of
  pixel (i, j) is ``max_c |d S_k / d x_{c,i,j}|``, the gradient of the (unnormalised) class
  score S_k with respect to the input, largest over the colour channels.

Images are standardised float tensors (C, H, W), as the model sees them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "feature_maps",
    "first_layer_filters",
    "plot_feature_maps",
    "plot_filters",
    "plot_saliency",
    "saliency",
]


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise ValueError(f"{type(model).__name__} has no Conv2d layer to show")


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """The weights of the first ``nn.Conv2d`` in module order, (out, in, kh, kw), detached on the CPU."""
    return _first_conv(model)[1].weight.detach().float().cpu().clone()


def _check_image(image: torch.Tensor) -> None:
    if image.dim() != 3 or not image.is_floating_point():
        raise ValueError(
            f"expected one standardised float image (C, H, W); got {tuple(image.shape)} {image.dtype}"
        )


def feature_maps(model: nn.Module, image: torch.Tensor, layer: str | None = None) -> tuple[str, torch.Tensor]:
    """The output of module ``layer`` (default: the first convolution) for one image: (name, (C, H, W)).

    The model runs in eval mode; its training mode is restored afterwards.
    """
    _check_image(image)
    modules = dict(model.named_modules())
    if layer is None:
        layer = _first_conv(model)[0]
    if layer not in modules:
        spatial = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)][:8]
        raise ValueError(f"no module {layer!r} in the model; convolutions are e.g. {', '.join(spatial)}")
    seen: list[torch.Tensor] = []
    handle = modules[layer].register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(image[None])
    finally:
        handle.remove()
        model.train(was_training)
    if not seen or seen[0].dim() != 4:
        raise ValueError(f"module {layer!r} does not output a feature map (N, C, H, W)")
    return layer, seen[0][0].float().cpu()


def saliency(model: nn.Module, image: torch.Tensor, target: int | None = None) -> tuple[torch.Tensor, int]:
    """Simonyan et al.'s saliency map of one image, (H, W), and the class it explains.

    ``target`` defaults to the predicted class. Gradients of the model's parameters are
    left untouched (the input is the only tensor that requires a gradient).
    """
    _check_image(image)
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    x = image[None].detach().clone().requires_grad_(True)
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        scores = model(x)
        k = int(scores.argmax(1).item()) if target is None else int(target)
        if not 0 <= k < scores.shape[1]:
            raise ValueError(f"target class {k} is out of range for {scores.shape[1]} classes")
        scores[0, k].backward()
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    assert x.grad is not None
    return x.grad[0].abs().amax(0).cpu(), k


# ---------------------------------------------------------------------------- figures


def _grid(n: int, max_cols: int = 8) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _unit(t: torch.Tensor) -> torch.Tensor:
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)


def _show(ax: object, img: torch.Tensor, cmap: str | None = "gray") -> None:
    """Draw a (C, H, W) or (H, W) tensor: one channel in ``cmap``, three as RGB."""
    if img.dim() == 3 and img.shape[0] == 3:
        ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")  # type: ignore[attr-defined]
    else:
        ax.imshow((img[0] if img.dim() == 3 else img).numpy(), cmap=cmap, interpolation="nearest")  # type: ignore[attr-defined]
    ax.set_xticks([])  # type: ignore[attr-defined]
    ax.set_yticks([])  # type: ignore[attr-defined]


def plot_filters(
    weights: torch.Tensor | nn.Module,
    *,
    output: str | Path | None = None,
    title: str | None = None,
    max_filters: int = 64,
) -> Figure:
    """The first layer's filters, each scaled to [0, 1] on its own (Zeiler & Fergus, fig. 6).

    One input channel is drawn in grey, three as colour; other channel counts show
    channel 0. ``weights`` may be a model (its first convolution is used).
    """
    from matplotlib.figure import Figure

    w = first_layer_filters(weights) if isinstance(weights, nn.Module) else weights.detach().float().cpu()
    if w.dim() != 4:
        raise ValueError(f"filters must be (out, in, kh, kw); got {tuple(w.shape)}")
    w = w[:max_filters]
    if w.shape[1] not in (1, 3):
        w = w[:, :1]
    rows, cols = _grid(len(w))
    fig = Figure(figsize=(1.1 * cols + 0.4, 1.1 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < len(w):
            _show(ax, _unit(w[i]))
        else:
            ax.axis("off")
    fig.suptitle(title or f"first-layer filters ({w.shape[0]} of {w.shape[1]}x{w.shape[2]}x{w.shape[3]})")
    if output is not None:
        fig.savefig(output, dpi=100)
    return fig


def plot_feature_maps(
    image: torch.Tensor,
    maps: torch.Tensor,
    *,
    layer: str = "",
    output: str | Path | None = None,
    max_maps: int = 32,
) -> Figure:
    """The input image beside the feature maps it produces (one panel per channel, each scaled alone)."""
    from matplotlib.figure import Figure

    _check_image(image)
    if maps.dim() != 3:
        raise ValueError(f"feature maps must be (C, H, W); got {tuple(maps.shape)}")
    maps = maps[:max_maps]
    rows, cols = _grid(len(maps) + 1)
    fig = Figure(figsize=(1.2 * cols + 0.4, 1.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i == 0:
            _show(ax, _unit(image))
            ax.set_title("input", fontsize=8)
        elif i <= len(maps):
            _show(ax, _unit(maps[i - 1]), cmap="viridis")
            ax.set_title(f"ch {i - 1}", fontsize=7)
        else:
            ax.axis("off")
    fig.suptitle(f"feature maps of {layer or 'a layer'} ({maps.shape[1]}x{maps.shape[2]})")
    if output is not None:
        fig.savefig(output, dpi=100)
    return fig


def plot_saliency(
    images: Sequence[torch.Tensor],
    maps: Sequence[torch.Tensor],
    *,
    titles: Sequence[str] | None = None,
    output: str | Path | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Each image above its saliency map (Simonyan et al. fig. 2)."""
    from matplotlib.figure import Figure

    if len(images) != len(maps) or not images:
        raise ValueError(f"need as many saliency maps as images (>= 1); got {len(images)} and {len(maps)}")
    n = len(images)
    fig = Figure(figsize=(1.6 * n + 0.4, 3.6), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        _show(axes[0, i], _unit(images[i]))
        _show(axes[1, i], _unit(maps[i]), cmap="hot")
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=7)
    axes[0, 0].set_ylabel("image")
    axes[1, 0].set_ylabel("saliency")
    fig.suptitle(suptitle or "saliency: |d class score / d pixel|")
    if output is not None:
        fig.savefig(output, dpi=100)
    return fig
