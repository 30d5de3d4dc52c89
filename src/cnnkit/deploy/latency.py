"""Measured CPU inference latency: the median wall time of a forward pass.

Timings are medians over repeated calls after warm-up (the median shrugs off the
odd slow call when other processes share the cores). They depend on the machine, its
load and ``torch.get_num_threads()``; record those beside any number (the benchmark
scripts in ``benchmarks/`` do). Mult-adds (:func:`cnnkit.analysis.summarize`) are the
machine-independent measure of cost; latency is what a deployment actually sees.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Latency", "measure_latency"]


@dataclass
class Latency:
    """Median (and min) milliseconds per call of a batch, and the implied images per second."""

    batch_size: int
    median_ms: float
    min_ms: float
    repeats: int

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch_size / self.median_ms


def measure_latency(
    model: nn.Module,
    input_size: Sequence[int],
    batch_size: int = 1,
    *,
    warmup: int = 3,
    min_repeats: int = 5,
    max_repeats: int = 200,
    budget_s: float = 1.0,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Latency:
    """Time ``model`` (eval mode, ``torch.inference_mode``) on random (batch_size, *input_size) inputs.

    Calls repeat until ``budget_s`` seconds have passed (at least ``min_repeats``, at most
    ``max_repeats`` calls). ``dtype=torch.bfloat16`` runs the forward under CPU autocast.
    The model's train/eval flag is restored afterwards.
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size is (C, H, W); got {tuple(input_size)}")
    if batch_size < 1 or min_repeats < 1 or max_repeats < min_repeats:
        raise ValueError(
            f"need batch_size >= 1 and 1 <= min_repeats <= max_repeats; got {batch_size}, {min_repeats}, {max_repeats}"
        )
    x = torch.randn(batch_size, *input_size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
    times: list[float] = []
    try:
        with torch.inference_mode(), autocast:
            for _ in range(warmup):
                model(x)
            start = time.perf_counter()
            while len(times) < max_repeats and (
                len(times) < min_repeats or time.perf_counter() - start < budget_s
            ):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    return Latency(batch_size, 1000 * statistics.median(times), 1000 * min(times), len(times))
