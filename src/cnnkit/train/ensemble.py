"""Ensembles by averaged softmax (lecture: "Ensemble of Diverse Architecture", ILSVRC 2016)."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.data.sources import normalize

__all__ = ["ensemble_eval"]


@torch.no_grad()
def ensemble_eval(
    members: list[tuple[nn.Module, torch.Tensor, torch.Tensor]],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1000,
) -> list[dict[str, float]]:
    """Top-1/top-5 of each (model, mean, std) member, then of the fusion (mean of their softmaxes)."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    k = len(members)
    correct = torch.zeros(k + 1, 2)
    for start in range(0, len(labels), batch_size):
        x8, y = images[start : start + batch_size], labels[start : start + batch_size]
        probs = []
        for model, mean, std in members:
            x = normalize(x8, mean, std)
            probs.append(model.eval()(x).float().softmax(1))
        probs.append(torch.stack(probs).mean(0))
        for i, p in enumerate(probs):
            top5 = p.topk(min(5, p.shape[1]), dim=1).indices
            correct[i, 0] += (top5[:, 0] == y).sum()
            correct[i, 1] += (top5 == y[:, None]).any(1).sum()
    n = len(labels)
    return [{"top1": float(c[0]) / n, "top5": float(c[1]) / n} for c in correct]
