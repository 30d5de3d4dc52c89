"""The learning-rate range test: the ramp is Smith's exponential one, the test stops where
fastai's does, the model comes back bitwise (so a run trains the same with or without it),
and each rule picks the rate its definition gives on hand-made curves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnkit.train.lr_find import SMOOTHING_BETA, LRFind, choose_lr, find_lr, plot_lr_find


def tiny_model() -> nn.Sequential:
    """Conv, BN (running statistics), dropout (the global RNG), linear: everything a test touches."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def batches(seed: int, n: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)
    ]


def step_loss_of(
    model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]
) -> Callable[[int], torch.Tensor]:
    def step_loss(i: int) -> torch.Tensor:
        x, y = data[i % len(data)]
        return F.cross_entropy(model(x), y)

    return step_loss


def sgd(model: nn.Module) -> Callable[[float], torch.optim.Optimizer]:
    return lambda lr: torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )


def scripted(model: nn.Module, values: list[float]) -> Callable[[int], torch.Tensor]:
    """A step_loss whose value is ``values[i]`` but that still reaches the model's weights."""

    def step_loss(i: int) -> torch.Tensor:
        return model(torch.ones(2, 1, 8, 8)).sum() * 0 + values[i]

    return step_loss


# ---------------------------------------------------------------- the ramp and the stop


def test_the_rate_ramps_exponentially_from_start_to_end_and_each_step_trains_at_it() -> None:
    model = tiny_model()
    seen: list[float] = []
    made: list[torch.optim.Optimizer] = []

    def make(lr: float) -> torch.optim.Optimizer:
        made.append(
            torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[6].parameters()}], lr=lr)
        )
        return made[0]

    def step_loss(i: int) -> torch.Tensor:
        groups = made[0].param_groups
        assert groups[0]["lr"] == groups[1]["lr"]  # every group is set
        seen.append(groups[0]["lr"])
        return scripted(model, [1.0] * 20)(i)

    result = find_lr(model, step_loss, make, steps=20, start_lr=1e-4, end_lr=1.0)
    assert len(result.lrs) == 20 and result.lrs == seen
    assert result.lrs[0] == pytest.approx(1e-4) and result.lrs[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert ratios == pytest.approx([10 ** (4 / 19)] * 19)  # a constant factor: a straight line on a log axis
    assert result.losses == [1.0] * 20 and result.smoothed == pytest.approx([1.0] * 20)


def test_the_smoothed_loss_is_fastais_bias_corrected_average() -> None:
    model = tiny_model()
    values = [2.0, 1.0, 1.5, 0.5]
    result = find_lr(model, scripted(model, values), sgd(model), steps=4, diverge_factor=100)
    b = SMOOTHING_BETA
    s1 = (b * (1 - b) * 2.0 + (1 - b) * 1.0) / (1 - b**2)  # by hand: the first two steps
    assert result.smoothed[0] == pytest.approx(2.0) and result.smoothed[1] == pytest.approx(s1)
    assert result.losses == values


def test_the_test_stops_when_the_smoothed_loss_passes_four_times_its_minimum() -> None:
    model = tiny_model()
    values = [1.0] * 10 + [1000.0] * 90
    result = find_lr(model, scripted(model, values), sgd(model), steps=100)
    # with beta 0.98, one loss of 1000 lifts the bias-corrected average of ten 1.0s to ~107: stop there
    assert len(result.lrs) == 11 and result.smoothed[-1] > 4 * min(result.smoothed)
    assert "stopped: the smoothed loss passed 4x its minimum" in result.rule
    assert "11 of 100 steps" in result.rule


def test_the_test_stops_at_a_non_finite_loss_and_records_it() -> None:
    model = tiny_model()
    values = [1.0, 0.9, 0.8, math.nan, 0.5, 0.4]
    result = find_lr(model, scripted(model, values), sgd(model), steps=6, diverge_factor=100)
    assert len(result.losses) == 4 and math.isnan(result.losses[-1])
    assert "not finite" in result.rule
    data = result.to_dict()
    assert data["losses"][-1] is None and data["smoothed"][-1] is None  # plain JSON, no NaN
    assert data["lr"] == result.lr and data["lrs"] == result.lrs


def test_a_loss_non_finite_from_the_first_step_is_an_error_naming_the_cause() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="non-finite at the first step"):
        find_lr(model, scripted(model, [math.inf] * 5), sgd(model), steps=5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 1}, "at least 2 steps"),
        ({"start_lr": 1.0, "end_lr": 0.1}, "start_lr < end_lr"),
        ({"diverge_factor": 1.0}, "diverge_factor"),
        ({"rule": "median"}, "unknown lr-find rule"),
    ],
)
def test_bad_arguments_fail_before_any_step(kwargs: dict[str, Any], match: str) -> None:
    model = tiny_model()

    def never(i: int) -> torch.Tensor:
        raise AssertionError("a step was taken")

    with pytest.raises(ValueError, match=match):
        find_lr(model, never, sgd(model), **kwargs)


# ---------------------------------------------------------------- what it leaves behind


def train_steps(model: nn.Module, steps: int = 6) -> None:
    """A seeded pipeline: its own data generator, dropout from the global RNG, SGD with Nesterov."""
    data = batches(seed=1, n=steps)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    model.train()
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def test_training_after_the_test_is_bitwise_what_it_is_without_it() -> None:
    torch.manual_seed(0)
    plain = tiny_model()
    torch.manual_seed(0)
    tested = tiny_model()
    # the state the run is in before it trains: seeded global RNG, eval mode as left by a check
    torch.manual_seed(123)
    train_steps(plain)
    plain_state = plain.state_dict()

    torch.manual_seed(123)
    tested.eval()
    before = {k: v.clone() for k, v in tested.state_dict().items()}
    moved: list[bool] = []

    def step_loss(i: int) -> torch.Tensor:
        assert tested.training  # the test trains in train mode (BN batch statistics, dropout on)
        moved.append(not torch.equal(tested.get_parameter("0.weight"), before["0.weight"]))
        return step_loss_of(tested, batches(seed=2))(i)

    result = find_lr(tested, step_loss, sgd(tested), steps=30, start_lr=1e-3, end_lr=1.0)
    assert len(result.lrs) > 5 and moved[-1]  # the weights did move during the test
    assert not tested.training and not any(m.training for m in tested.modules())
    for k, v in tested.state_dict().items():  # weights and BN running statistics, num_batches_tracked
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in tested.parameters())

    train_steps(tested)
    for k, v in tested.state_dict().items():
        assert torch.equal(v, plain_state[k]), k


def test_mixed_modes_gradients_and_frozen_parameters_are_left_as_they_were() -> None:
    model = tiny_model()
    model[1].eval()  # one module in eval mode, the others training
    frozen, conv_w = model.get_parameter("6.weight"), model.get_parameter("0.weight")
    frozen.requires_grad_(False)
    conv_w.grad = torch.full_like(conv_w, 0.5)
    params = [p for p in model.parameters() if p.requires_grad]

    def make(lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=0.9)

    find_lr(model, step_loss_of(model, batches(seed=3)), make, steps=10)
    assert model.training and not model[1].training
    assert not frozen.requires_grad and frozen.grad is None
    assert conv_w.grad is not None and torch.equal(conv_w.grad, torch.full((4, 1, 3, 3), 0.5))
    assert model.get_parameter("0.bias").grad is None


def test_the_parameters_are_the_same_objects_so_the_runs_optimizer_still_holds_them() -> None:
    model = tiny_model()
    ids = [id(p) for p in model.parameters()]
    find_lr(model, step_loss_of(model, batches(seed=4)), sgd(model), steps=5)
    assert [id(p) for p in model.parameters()] == ids


def test_the_state_is_restored_when_a_step_raises() -> None:
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    model.eval()

    def failing(i: int) -> torch.Tensor:
        if i == 3:
            raise RuntimeError("out of memory")
        return step_loss_of(model, batches(seed=5))(i)

    with pytest.raises(RuntimeError, match="out of memory"):
        find_lr(model, failing, sgd(model), steps=10)
    assert not model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- the rule, on hand-made curves

# 10 points per decade from 1e-4 to 10; the loss is a parabola in log10(lr) with its minimum at lr 1.0
LRS = [10 ** (-4 + i / 10) for i in range(51)]
BOWL = [1.0 + (math.log10(lr) - 0.0) ** 2 for lr in LRS]


def test_min_over_10_is_a_decade_below_the_minimum() -> None:
    lr, how = choose_lr(LRS, BOWL, rule="min/10")
    assert lr == pytest.approx(0.1)
    assert how.startswith("min/10") and "at lr 1" in how and "0.1" in how


def test_valley_is_the_middle_of_the_longest_descent() -> None:
    # the first 5 points are skipped (a tenth of 51); the descent is then points 5..40 (lr 10^-3.5..1),
    # 36 points; fastai's start is one before (index 4, relative -1), its thirds 12: idx 5 - 1 + 12 + 6 = 22
    lr, how = choose_lr(LRS, BOWL, rule="valley")
    assert lr == pytest.approx(10**-1.8)
    assert how.startswith("valley") and "36 steps" in how


def test_steep_is_where_the_loss_falls_fastest() -> None:
    # a step-shaped fall between lr 1e-2 and 1e-1 (points 20..30), flat elsewhere; steepest at its middle
    curve = [2.0 - 1.5 / (1 + math.exp(-4 * (math.log10(lr) + 1.5))) for lr in LRS]
    lr, how = choose_lr(LRS, curve, rule="steep")
    assert lr == pytest.approx(10**-1.5, rel=0.3)  # the left end of the steepest segment, within one point
    assert how.startswith("steep")


def test_the_rule_is_clamped_to_its_bounds_and_says_so() -> None:
    rising = [1.0 + i for i in range(len(LRS))]  # never falls: the minimum is the first point kept
    lr, how = choose_lr(LRS, rising, rule="min/10", bounds=(1e-4, 1.0))
    assert lr == 1e-4 and "clamped to [0.0001, 1]" in how
    lr, _ = choose_lr(LRS, rising, rule="valley", bounds=(1e-4, 1.0))
    assert 1e-4 <= lr <= 1.0
    falling = [100.0 - i for i in range(len(LRS))]  # minimum at lr 10 -> 1.0, at the bound
    assert choose_lr(LRS, falling, rule="min/10", bounds=(1e-4, 0.5))[0] == 0.5


def test_the_curve_is_read_up_to_its_first_rise_not_past_a_spike() -> None:
    # a descent to 2.0 at lr 1e-2 (point 20), a spike to 3.0, then a steeper fall to 0.5 at lr 1:
    # past the first rise the run is unstable, so neither the later fall nor its minimum counts
    first = [3.0 - 0.05 * i for i in range(21)]  # points 0..20: 3.0 -> 2.0, 0.05 per point
    spike = [3.0] * 5  # points 21..25
    fall = [3.0 - 0.166 * (i + 1) for i in range(15)]  # points 26..40: 3.0 -> ~0.5
    curve = first + spike + fall + [5.0] * 10
    assert choose_lr(LRS, curve, rule="min/10")[0] == pytest.approx(1e-3)  # minimum at point 20
    lr, how = choose_lr(LRS, curve, rule="steep")
    assert lr < 1e-2 and how.startswith("steep")  # on the first descent, not the fall at 0.1..1


def test_the_rule_ignores_the_first_tenth_and_everything_from_a_non_finite_loss() -> None:
    curve = list(BOWL)
    curve[2] = 0.0  # a noisy start, lower than the real minimum: skipped
    assert choose_lr(LRS, curve, rule="min/10")[0] == pytest.approx(0.1)
    curve[42] = math.nan  # points from 42 on are dropped; the minimum (point 40) stays
    assert choose_lr(LRS, curve, rule="min/10")[0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown lr-find rule"):
        choose_lr(LRS, BOWL, rule="median")


# ---------------------------------------------------------------- a real curve and its figure


def test_a_real_curve_on_synthetic_data_and_its_figure(tmp_path: Path) -> None:
    from cnnkit.data.sources import load_dataset, normalize

    data = load_dataset("synthetic", train_subset=256, seed=0, image_size=8)
    mean, std = data.mean_std()
    torch.manual_seed(0)
    c = data.image_shape[0]
    model = nn.Sequential(
        nn.Conv2d(c, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, data.num_classes),
    )

    def step_loss(i: int) -> torch.Tensor:
        idx = torch.arange(32) + 32 * (i % 8)
        return F.cross_entropy(model(normalize(data.train_x[idx], mean, std)), data.train_y[idx])

    result = find_lr(model, step_loss, sgd(model), steps=60, start_lr=1e-4, end_lr=100.0)
    assert isinstance(result, LRFind) and 1e-4 <= result.lr <= 1.0 and result.seconds > 0
    assert len(result.lrs) < 60  # the rate reached divergence before 100
    assert result.rule.startswith(f"lr {result.lr:.3g} by ")

    path = tmp_path / "lr_find.png"
    plot_lr_find(result, path)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100
    assert [p.name for p in tmp_path.iterdir()] == ["lr_find.png"]  # no temporary file left
