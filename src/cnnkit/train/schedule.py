"""Learning-rate schedules as pure functions of the step (lecture: "Learning Rates").

``lr_factor(step)`` is the closed form of each schedule, relative to the peak rate
eta_0, so a schedule can be tested and plotted without a model. The trainer applies it
through ``torch.optim.lr_scheduler.LambdaLR``, stepped once per optimiser step:

- constant;
- step: eta_0 * rate^floor(epoch / decay_epochs) (torch's StepLR);
- multistep: eta_0 * rate^(number of milestones passed) (torch's MultiStepLR);
- exponential: eta_0 * rate^epoch, smooth in the step (torch's ExponentialLR per epoch);
- cosine: eta_t = eta_T + (eta_0 - eta_T)/2 (1 + cos(pi t / T)) (the lecture's formula;
  torch's CosineAnnealingLR; Loshchilov & Hutter 2017);
- any of them after a linear warmup from eta_0/warmup_steps to eta_0 (Goyal et al. 2017).

Written as closed forms rather than chained torch schedulers because SequentialLR's
warmup hand-off and CosineAnnealingLR's recursive form drift from the formula; the tests
check these closed forms against torch's own schedulers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cnnkit.train.config import TrainConfig

__all__ = ["SCHEDULES", "Schedule", "build_scheduler"]

SCHEDULES = ("constant", "step", "multistep", "exponential", "cosine")


@dataclass(frozen=True)
class Schedule:
    """A schedule over ``total_steps`` optimiser steps of ``steps_per_epoch`` each; call it with a step."""

    name: str
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # eta_T / eta_0
    decay_epochs: float = 30.0
    milestones: Sequence[int] = (30, 60, 90)
    decay_rate: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; choose from {', '.join(SCHEDULES)}")
        if self.total_steps < 1 or self.steps_per_epoch < 1:
            raise ValueError(
                f"schedule needs total_steps and steps_per_epoch >= 1; got {self.total_steps}, {self.steps_per_epoch}"
            )
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"warmup ({self.warmup_steps} steps) must be in 0..{self.total_steps}, the run's length "
                "(shorten --warmup-epochs)"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(
                f"the floor eta_T must lie between 0 and the peak rate eta_0; got eta_T/eta_0 = "
                f"{self.min_lr_ratio} (check --min-lr against --lr)"
            )
        if self.name == "step" and self.decay_epochs <= 0:
            raise ValueError(f"step schedule needs decay_epochs > 0; got {self.decay_epochs}")
        if self.name in ("step", "multistep", "exponential") and not 0 < self.decay_rate <= 1:
            raise ValueError(f"decay_rate must be in (0, 1]; got {self.decay_rate}")

    @classmethod
    def from_config(cls, cfg: TrainConfig | Mapping[str, Any], steps_per_epoch: int) -> Schedule:
        """The schedule a run of ``cfg`` steps through, at ``steps_per_epoch`` optimiser steps an epoch.

        ``cfg`` is a :class:`~cnnkit.train.config.TrainConfig` or a run's ``config.yaml`` as a
        mapping (fields it lacks take the dataclass defaults). The one place a schedule is
        made from a config: the trainer, ``cnnkit viz lr`` and the lab all call it.
        """
        if isinstance(cfg, Mapping):
            names = {f.name for f in dataclasses.fields(TrainConfig)}
            cfg = TrainConfig(**{k: v for k, v in cfg.items() if k in names})
        return cls(
            cfg.sched,
            steps_per_epoch * cfg.epochs,
            steps_per_epoch,
            warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
            min_lr_ratio=cfg.min_lr / cfg.lr,
            decay_epochs=cfg.decay_epochs,
            milestones=tuple(cfg.decay_milestones),
            decay_rate=cfg.decay_rate,
        )

    def __call__(self, step: int) -> float:
        """Learning rate at ``step`` (0-based) as a fraction of the peak rate."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        epoch = step / self.steps_per_epoch
        if self.name == "constant":
            return 1.0
        if self.name == "step":
            return self.decay_rate ** math.floor(epoch / self.decay_epochs + 1e-9)
        if self.name == "multistep":
            return self.decay_rate ** sum(1 for m in self.milestones if epoch + 1e-9 >= m)
        if self.name == "exponential":
            return self.decay_rate**epoch
        # cosine over the steps after warmup
        t = step - self.warmup_steps
        big_t = max(self.total_steps - self.warmup_steps, 1)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) / 2 * (
            1 + math.cos(math.pi * min(t, big_t) / big_t)
        )


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]
) -> torch.optim.lr_scheduler.LambdaLR:
    """Wrap a schedule as a per-step ``LambdaLR`` (its state_dict resumes the step count)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
