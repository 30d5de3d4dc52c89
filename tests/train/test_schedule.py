"""Learning-rate schedules against their closed forms and torch's own schedulers (lecture: "Learning Rates").

- step, multistep, exponential: torch.optim.lr_scheduler.StepLR / MultiStepLR / ExponentialLR,
  stepped once per epoch, compared at every epoch boundary (and, for the piecewise-constant ones,
  at every step inside the epoch);
- cosine: torch's CosineAnnealingLR(T_max, eta_min) stepped per step, and the lecture's formula
  eta_t = eta_T + (eta_0 - eta_T) / 2 (1 + cos(pi t / T)) written out here;
- linear warmup (Goyal et al. 2017) that reaches the peak;
- build_scheduler (LambdaLR): the optimizer's lr follows the schedule and resumes from state_dict.
"""

import io
import itertools
import math
from collections.abc import Callable

import pytest
import torch

from cnnkit.train.schedule import SCHEDULES, Schedule, build_scheduler

ETA0 = 0.4


def _opt(lr: float = ETA0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def _torch_lrs(
    make: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler], n: int
) -> list[float]:
    opt = _opt()
    sched = make(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _lecture_cosine(t: int, big_t: int, eta_0: float, eta_t: float) -> float:
    return eta_t + (eta_0 - eta_t) / 2 * (1 + math.cos(math.pi * t / big_t))


SPE, EPOCHS = 7, 12  # steps per epoch, epochs


@pytest.mark.parametrize(
    ("kwargs", "make"),
    [
        (
            {"name": "step", "decay_epochs": 3, "decay_rate": 0.5},
            lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
        ),
        (
            {"name": "multistep", "milestones": (2, 5, 9), "decay_rate": 0.3},
            lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5, 9], gamma=0.3),
        ),
        ({"name": "constant"}, lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0, total_iters=0)),
    ],
)
def test_piecewise_constant_schedules_equal_torch_per_epoch(kwargs: dict, make: Callable) -> None:
    ref = _torch_lrs(make, EPOCHS)  # one torch step per epoch
    s = Schedule(total_steps=SPE * EPOCHS, steps_per_epoch=SPE, **kwargs)
    for step in range(SPE * EPOCHS):
        assert ETA0 * s(step) == pytest.approx(ref[step // SPE], rel=1e-12), f"step {step}"


def test_exponential_equals_torch_at_epoch_boundaries_and_decays_smoothly() -> None:
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8), EPOCHS)
    s = Schedule("exponential", SPE * EPOCHS, SPE, decay_rate=0.8)
    for epoch in range(EPOCHS):
        assert ETA0 * s(epoch * SPE) == pytest.approx(ref[epoch], rel=1e-12)
    values = [s(i) for i in range(SPE * EPOCHS)]
    assert all(a > b for a, b in itertools.pairwise(values)), "smooth: decays at every step"
    for epoch in range(EPOCHS - 1):  # inside an epoch it lies between the two boundary values
        inner = values[epoch * SPE + 1 : (epoch + 1) * SPE]
        assert all(ref[epoch + 1] < ETA0 * v < ref[epoch] for v in inner)


@pytest.mark.parametrize("min_ratio", [0.0, 0.05])
def test_cosine_equals_torch_and_the_lecture_formula(min_ratio: float) -> None:
    total = SPE * EPOCHS
    eta_t = ETA0 * min_ratio
    ref = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=eta_t), total + 1
    )
    s = Schedule("cosine", total, SPE, min_lr_ratio=min_ratio)
    for t in range(total + 1):
        lecture = _lecture_cosine(t, total, ETA0, eta_t)
        assert ETA0 * s(t) == pytest.approx(lecture, rel=1e-12, abs=1e-15)
        assert ETA0 * s(t) == pytest.approx(ref[t], rel=1e-9, abs=1e-12)
    assert ETA0 * s(0) == pytest.approx(ETA0)
    assert ETA0 * s(total // 2) == pytest.approx((ETA0 + eta_t) / 2, rel=1e-3)
    assert ETA0 * s(total) == pytest.approx(eta_t, abs=1e-15)
    assert ETA0 * s(total + 50) == pytest.approx(eta_t, abs=1e-15), "stays at the floor eta_T after T"


@pytest.mark.parametrize("name", SCHEDULES)
def test_linear_warmup_reaches_the_peak(name: str) -> None:
    warm = 10
    s = Schedule(name, 100, 10, warmup_steps=warm, decay_epochs=3, milestones=(5,), min_lr_ratio=0.1)
    ramp = [s(i) for i in range(warm)]
    diffs = [b - a for a, b in itertools.pairwise(ramp)]
    assert all(d == pytest.approx(1 / warm) for d in diffs), "linear"
    assert ramp[0] == pytest.approx(1 / warm) and ramp[-1] == pytest.approx(1.0), (
        "starts above 0, reaches eta_0"
    )
    assert max(s(i) for i in range(100)) == pytest.approx(1.0), "never above the peak"


def test_cosine_after_warmup_is_the_lecture_formula_over_the_remaining_steps() -> None:
    warm, total = 15, 85
    s = Schedule("cosine", total, 5, warmup_steps=warm, min_lr_ratio=0.02)
    for step in range(warm, total + 1):
        want = _lecture_cosine(step - warm, total - warm, 1.0, 0.02)
        assert s(step) == pytest.approx(want, rel=1e-12)


def test_lambdalr_drives_the_optimizer_step_by_step_and_resumes() -> None:
    total, spe, cut = 60, 6, 23
    schedule = Schedule("cosine", total, spe, warmup_steps=9, min_lr_ratio=0.1)

    def run(
        opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, steps: range
    ) -> list[float]:
        lrs = []
        for step in steps:
            lr = opt.param_groups[0]["lr"]
            assert lr == pytest.approx(ETA0 * schedule(step), rel=1e-12), f"step {step}"
            lrs.append(lr)
            opt.step()
            sched.step()
        return lrs

    opt = _opt()
    full = run(opt, build_scheduler(opt, schedule), range(total))

    opt1 = _opt()
    sched1 = build_scheduler(opt1, schedule)
    first = run(opt1, sched1, range(cut))
    buf = io.BytesIO()
    torch.save({"opt": opt1.state_dict(), "sched": sched1.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # as checkpoints are loaded: plain data only

    opt2 = _opt(lr=123.0)  # a fresh optimizer built with any lr: the state restores it
    sched2 = build_scheduler(opt2, Schedule("cosine", total, spe, warmup_steps=9, min_lr_ratio=0.1))
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    rest = run(opt2, sched2, range(cut, total))
    assert first + rest == full


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "linear"},
        {"name": "cosine", "total_steps": 0},
        {"name": "cosine", "steps_per_epoch": 0},
        {"name": "cosine", "warmup_steps": 101},
        {"name": "cosine", "warmup_steps": -1},
        {"name": "cosine", "min_lr_ratio": 1.5},
        {"name": "cosine", "min_lr_ratio": -0.1},
        {"name": "step", "decay_epochs": 0},
        {"name": "step", "decay_rate": 0.0},
        {"name": "exponential", "decay_rate": 1.5},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    args = {"total_steps": 100, "steps_per_epoch": 10, **kwargs}
    with pytest.raises(ValueError):
        Schedule(**args)
