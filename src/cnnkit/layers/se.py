"""The squeeze-and-excitation block (lecture slides "SENet - SE Block").

Hu, Shen & Sun 2018, "Squeeze-and-Excitation Networks" (CVPR; TPAMI 2019,
arXiv:1709.01507), the ILSVRC 2017 winner. A light-weight gate that models
channel-wise relationships and plugs into any block (the lecture's SE-Inception
and SE-ResNet modules):

- squeeze (paper eq. 2): global average pooling, ``z_c = 1/(HW) sum_ij u_c(i, j)``;
- excitation (eq. 3): ``s = sigmoid(W_2 relu(W_1 z))`` with ``W_1`` of shape
  ``(C/r, C)`` and ``W_2`` of shape ``(C, C/r)``, ``r`` the reduction ratio (16 in
  the paper);
- scale (eq. 4): ``x~_c = s_c u_c``.

The two fully connected layers are 1x1 convolutions with bias (as in the
authors' Caffe models and Cadene's ``pretrainedmodels``), so a block adds
``2 C^2 / r`` weights (paper sec. 4, the count behind SE-ResNet-50's 2.5M extra
parameters) plus ``C/r + C`` biases.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.layers.act import ActLayer, get_act

__all__ = ["SqueezeExcite", "squeeze_excite"]


def squeeze_excite(
    x: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    b1: torch.Tensor | None = None,
    b2: torch.Tensor | None = None,
    *,
    act: Callable[[torch.Tensor], torch.Tensor] = F.relu,
    gate: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid,
) -> torch.Tensor:
    """``x * gate(W2 act(W1 mean_hw(x) + b1) + b2)`` per sample and channel (Hu et al. 2018, eqs. 2-4).

    ``x`` is (N, C, H, W); ``w1`` is (C/r, C) and ``w2`` is (C, C/r), as fully
    connected weight matrices (1x1 conv weights of shape (out, in, 1, 1) work too).
    """
    if x.dim() != 4:
        raise ValueError(f"squeeze_excite expects (N, C, H, W) input; got shape {tuple(x.shape)}")
    w1 = w1.flatten(1)
    w2 = w2.flatten(1)
    if w1.shape[1] != x.shape[1] or w2.shape != (x.shape[1], w1.shape[0]):
        raise ValueError(
            f"squeeze_excite needs w1 of shape (C/r, C) and w2 of shape (C, C/r) for C={x.shape[1]}; "
            f"got w1 {tuple(w1.shape)} and w2 {tuple(w2.shape)}"
        )
    z = x.mean(dim=(2, 3))  # squeeze: (N, C)
    s = gate(F.linear(act(F.linear(z, w1, b1)), w2, b2))  # excitation: (N, C)
    return x * s[:, :, None, None]  # scale


class SqueezeExcite(nn.Module):
    """SE block: global average pool, FC ``C -> C/r``, act, FC ``C/r -> C``, gate, channel-wise scale.

    Args:
        channels: ``C``, the channels of the input (and output).
        reduction: the reduction ratio ``r``; the hidden width is
            ``max(min_channels, floor(C / r))``.
        act_layer: activation between the two FC layers (ReLU in the paper);
            a name for :func:`cnnkit.layers.act.get_act` or a zero-argument factory.
        gate_layer: the gating function (sigmoid in the paper).
        min_channels: lower bound on the hidden width, for small ``C``.

    The FC layers are the 1x1 convolutions ``fc1`` and ``fc2`` (with bias).
    """

    def __init__(
        self,
        channels: int,
        reduction: float = 16,
        *,
        act_layer: ActLayer = "relu",
        gate_layer: ActLayer = "sigmoid",
        min_channels: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"SqueezeExcite needs channels to be an integer >= 1; got {channels!r}")
        if not reduction > 0:
            raise ValueError(f"SqueezeExcite needs reduction > 0 (the paper uses 16); got {reduction!r}")
        if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 1:
            raise ValueError(f"SqueezeExcite needs min_channels to be an integer >= 1; got {min_channels!r}")
        hidden = max(min_channels, int(channels // reduction))
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.act = get_act(act_layer)()
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)
        self.gate = get_act(gate_layer)()
        self.channels = channels
        self.hidden_channels = hidden
        self.reduction = reduction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # squeeze
        s = self.gate(self.fc2(self.act(self.fc1(s))))  # excitation
        return x * s  # scale

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden_channels={self.hidden_channels}, reduction={self.reduction}"
