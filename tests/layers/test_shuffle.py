"""Channel shuffle against its definition (Zhang et al. 2018, sec. 3.1; lecture "Shuffled Convolution")."""

from __future__ import annotations

import pytest
import torch

from cnnkit.layers.shuffle import ChannelShuffle, channel_shuffle

CASES = [(1, 4), (2, 4), (3, 12), (4, 12), (8, 16), (12, 12)]  # (groups, channels)


def _loop_reference(x: torch.Tensor, groups: int) -> torch.Tensor:
    """out[:, j*g + i] = in[:, i*(C/g) + j]: position j of group i goes to slot i of block j."""
    c = x.shape[1]
    out = torch.empty_like(x)
    for i in range(groups):
        for j in range(c // groups):
            out[:, j * groups + i] = x[:, i * (c // groups) + j]
    return out


@pytest.mark.parametrize(("groups", "channels"), CASES)
def test_matches_loop_definition(groups: int, channels: int) -> None:
    x = torch.randn(2, channels, 3, 5)
    torch.testing.assert_close(channel_shuffle(x, groups), _loop_reference(x, groups), rtol=0, atol=0)
    torch.testing.assert_close(ChannelShuffle(groups)(x), _loop_reference(x, groups), rtol=0, atol=0)


def test_paper_example_g3() -> None:
    # channels labelled by group: 3 groups of 2 -> after the shuffle each block of 3 holds one of each group
    x = torch.arange(6.0).view(1, 6, 1, 1)  # groups (0,1) (2,3) (4,5)
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]


@pytest.mark.parametrize(("groups", "channels"), CASES)
def test_is_a_permutation_and_inverse_restores(groups: int, channels: int) -> None:
    labels = torch.arange(channels, dtype=torch.float32).view(1, channels, 1, 1)
    perm = channel_shuffle(labels, groups).flatten().long()
    assert sorted(perm.tolist()) == list(range(channels))
    x = torch.randn(2, channels, 4, 4)
    y = channel_shuffle(x, groups)
    torch.testing.assert_close(y, x[:, perm])
    torch.testing.assert_close(channel_shuffle(y, channels // groups), x, rtol=0, atol=0)


def test_mixes_groups_for_the_next_group_conv() -> None:
    """After the shuffle, every group of g consecutive channels holds one channel from each input group."""
    g, c = 4, 16
    group_of = torch.arange(c).div(c // g, rounding_mode="floor").float().view(1, c, 1, 1)
    shuffled = channel_shuffle(group_of, g).flatten().view(c // g, g)
    for block in shuffled:
        assert sorted(block.tolist()) == list(range(g))
    # the next group conv with g groups takes c/g consecutive channels: each sees all input groups
    for chunk in channel_shuffle(group_of, g).flatten().view(g, c // g):
        assert set(chunk.tolist()) == set(range(g))


def test_works_on_other_ranks_and_keeps_gradients() -> None:
    x = torch.randn(3, 6, requires_grad=True)
    y = channel_shuffle(x, 2)
    torch.testing.assert_close(y, _loop_reference(x.detach(), 2))
    y.sum().backward()
    assert x.grad is not None and torch.all(x.grad == 1)


def test_validation() -> None:
    with pytest.raises(ValueError, match="groups=0"):
        ChannelShuffle(0)
    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="groups=4 must divide the 6 channels"):
        channel_shuffle(torch.zeros(1, 6, 2, 2), 4)
    assert "groups=3" in repr(ChannelShuffle(3))
