"""Channel shuffle (Zhang et al. 2018, "ShuffleNet: An extremely efficient convolutional
neural network for mobile devices", sec. 3.1, fig. 1; the lecture's "Shuffled Convolution" slides).

Stacked group convolutions let each output channel see only the input channels of its
own group. Shuffling the channels between them lets the next group convolution take
inputs from every group: reshape the C channels to (g, C/g), transpose to (C/g, g) and
flatten. Output channel ``j g + i`` is input channel ``i (C/g) + j``. The inverse
shuffle is a shuffle with ``C/g`` groups.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ChannelShuffle", "channel_shuffle"]


def _check_groups(groups: int, who: str) -> None:
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{who} needs an integer groups >= 1; got groups={groups!r}")


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Shuffle the channels (dim 1) of ``x`` of shape (N, C, ...) across ``groups`` groups.

    ``out[:, j * groups + i] = x[:, i * (C // groups) + j]`` for group i and position j.
    """
    _check_groups(groups, "channel_shuffle")
    if x.dim() < 2:
        raise ValueError(f"channel_shuffle needs an input of shape (N, C, ...); got {tuple(x.shape)}")
    n, c = x.shape[0], x.shape[1]
    if c % groups:
        raise ValueError(f"channel_shuffle: groups={groups} must divide the {c} channels of the input")
    rest = x.shape[2:]
    return x.reshape(n, groups, c // groups, *rest).transpose(1, 2).reshape(n, c, *rest)


# A leaf for torch.fx: the argument checks above read the shape, which a symbolic trace cannot.
torch.fx.wrap("channel_shuffle")


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle`; no parameters."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        _check_groups(groups, "ChannelShuffle")
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
