"""Dropout and drop-path of the lecture ("Drop-out/Drop-path" slides).

- Dropout (Srivastava et al. 2014, "Dropout: a simple way to prevent neural
  networks from overfitting"): each unit is turned off with probability p and
  the survivors are scaled by 1/(1-p) ("inverted" dropout, so nothing changes
  at test time). torch's ``nn.Dropout`` does exactly this; ``Dropout`` only
  adds the argument check.
- Drop-path / stochastic depth (Huang et al. 2016, "Deep networks with
  stochastic depth"): during training a residual branch is dropped for a whole
  sample, so the block reduces to its identity shortcut. ``drop_path`` zeroes
  whole samples of the branch output with probability p and scales the rest by
  1/(1-p), as timm's ``layers/drop.py`` does, so the expected output equals the
  test-time output.
- The linear decay rule of the paper (eq. 4, the slide's fig. 2): the survival
  probability of block l of L is p_l = 1 - l/L (1 - p_L), so the drop rate
  1 - p_l = l/L * (1 - p_L) grows linearly and later blocks are dropped more
  often. ``drop_path_rates(L, 1 - p_L)`` returns these drop rates.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "Dropout", "drop_path", "drop_path_rates"]


def _check_rate(p: float, who: str) -> None:
    # p == 1 would divide by zero in the 1/(1-p) rescaling and drop everything.
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{who} needs a drop probability p in [0, 1); got p={p} (e.g. use p=0.1)")


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``p``; scale the survivors by 1/(1-p).

    Identity when ``training`` is False or ``p == 0``. The mask has shape (N, 1, 1, ...),
    one Bernoulli draw per sample (Huang et al. 2016), and is built on ``x``'s device
    and dtype.
    """
    _check_rate(p, "drop_path")
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(mask_shape).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Stochastic depth for a residual branch: ``x + DropPath(p)(branch(x))``; see :func:`drop_path`."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        _check_rate(p, "DropPath")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout(nn.Dropout):
    """torch's (inverted) ``nn.Dropout``, rejecting p outside [0, 1) at construction."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        _check_rate(p, "Dropout")
        super().__init__(p=p, inplace=inplace)


def drop_path_rates(num_blocks: int, final_drop: float) -> list[float]:
    """Drop rates of blocks l = 1..L under the linear decay rule of Huang et al. (2016), eq. 4.

    The survival probability of block l is p_l = 1 - l/L (1 - p_L), so its drop rate is
    ``l / L * final_drop`` with ``final_drop = 1 - p_L`` (the paper uses p_L = 0.5):

    >>> drop_path_rates(4, 0.5)
    [0.125, 0.25, 0.375, 0.5]
    """
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 0:
        raise ValueError(f"drop_path_rates needs an integer num_blocks >= 0; got {num_blocks!r}")
    _check_rate(final_drop, "drop_path_rates")
    return [final_drop * layer / num_blocks for layer in range(1, num_blocks + 1)]
