"""Divergence in the first epoch, caught step by step (issue "Training that works out of the
box": divergence is never silent). The loop feeds every step's loss to a
:class:`DivergenceWatch`; what happens after (a restart at a lower rate cnnkit chose, or a
stop naming the rate the user gave) is the loop's (:func:`cnnkit.train.loop._after_divergence`).
"""

from __future__ import annotations

import math

__all__ = ["MAX_RESTARTS", "Diverged", "DivergenceWatch", "TrainingError"]


class TrainingError(RuntimeError):
    """Training stopped (non-finite loss or gradient); the last good checkpoint is kept."""


MAX_RESTARTS = 3  # a learning rate cnnkit chose is divided by 4 at most this often


class Diverged(Exception):
    def __init__(self, step: int, why: str) -> None:
        super().__init__(why)
        self.step, self.why = step, why


class DivergenceWatch:
    """Catches a loss that explodes in the first epoch, step by step.

    The loss has diverged when it is not finite, or when its running mean (decay 0.9, about
    ten steps)
    - is far above where it started: above ``max(3 ln K, ln K + 5, 2 x the first loss)`` for
      K classes (7.3 for 10 classes; a fresh network starts near the chance level ``ln K``,
      AlexNet-like nets without normalisation above it);
    - or stays above ``max(1.5 ln K, ln K + 1)`` (3.45 for 10 classes), worse than guessing,
      for ``STEPS`` steps in a row: measured on the photo folder of benchmarks/zoo_defaults.py,
      VGG-11-BN at lr 0.035 never passed 7.3 but ended at 39.6% (96.6% at 0.01);
    - or has risen for ``STEPS`` steps in a row to more than 1.5x its lowest value.
    The running mean, not a single step: on the same folder a MobileNet-v1 at lr 0.3 has
    one step at loss 27 and ends at 78%.
    """

    STEPS = 25

    def __init__(self, num_classes: int) -> None:
        self.chance = math.log(max(num_classes, 2))
        self.limit = max(3 * self.chance, self.chance + 5)
        self.high = max(1.5 * self.chance, self.chance + 1)
        self.mean: float | None = None
        self.lowest = math.inf
        self.rising = self.above = 0

    def update(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise Diverged(step, f"loss {loss}")
        if self.mean is None:
            self.limit = max(self.limit, 2 * loss)
        previous, self.mean = self.mean, loss if self.mean is None else 0.9 * self.mean + 0.1 * loss
        if self.mean > self.limit:
            raise Diverged(
                step, f"running loss {self.mean:.3g}, far above the chance level ln(K) = {self.chance:.2f}"
            )
        self.above = self.above + 1 if self.mean > self.high else 0
        if self.above >= self.STEPS:
            raise Diverged(
                step,
                f"running loss above {self.high:.3g} for {self.above} steps (chance: ln(K) = {self.chance:.2f})",
            )
        self.rising = self.rising + 1 if previous is not None and self.mean > previous else 0
        self.lowest = min(self.lowest, self.mean)
        if self.rising >= self.STEPS and self.mean > 1.5 * self.lowest:
            raise Diverged(step, f"running loss rose for {self.rising} steps to {self.mean:.3g}")
