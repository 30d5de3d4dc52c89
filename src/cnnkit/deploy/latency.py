"""Measured CPU inference latency: the median wall time of a forward pass.

Timings are medians over repeated calls after warm-up (the median shrugs off the
odd slow call when other processes share the cores). To compare models on a shared
machine use :func:`compare_latency`, which interleaves them call by call, so a change
in the machine's load hits every model alike instead of whichever ran at that moment. They depend on the machine, its
load and ``torch.get_num_threads()``; record those beside any number (the benchmark
scripts in ``benchmarks/`` do). Mult-adds (:func:`cnnkit.analysis.summarize`) are the
machine-independent measure of cost; latency is what a deployment actually sees.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Latency", "compare_latency", "measure_latency"]


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


def compare_latency(
    models: Mapping[str, nn.Module],
    input_size: Sequence[int],
    batch_size: int = 1,
    *,
    rounds: int = 20,
    warmup: int = 2,
    channels_last: bool = False,
) -> dict[str, Latency]:
    """Median latency of each model, timed in interleaved rounds (one call of every model per round).

    Same inputs for all (random, (batch_size, *input_size)), eval mode and
    ``torch.inference_mode``; train/eval flags are restored.
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size is (C, H, W); got {tuple(input_size)}")
    if batch_size < 1 or rounds < 1:
        raise ValueError(f"need batch_size >= 1 and rounds >= 1; got {batch_size}, {rounds}")
    x = torch.randn(batch_size, *input_size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    flags = {name: m.training for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        with torch.inference_mode():
            for m in models.values():
                m.eval()
                for _ in range(warmup):
                    m(x)
            for _ in range(rounds):
                for name, m in models.items():
                    t0 = time.perf_counter()
                    m(x)
                    times[name].append(time.perf_counter() - t0)
    finally:
        for name, m in models.items():
            m.train(flags[name])
    return {
        name: Latency(batch_size, 1000 * statistics.median(t), 1000 * min(t), len(t))
        for name, t in times.items()
    }
