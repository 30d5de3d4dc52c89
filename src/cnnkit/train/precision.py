"""The run's precision, chosen for the machine at hand (``--amp auto``, the default recipes').

- **CUDA**: bf16 where the GPU has it (Ampere and later), else fp16 with a gradient scaler.
- **A CPU without native bf16** (neither ``avx512_bf16`` nor ``amx_bf16`` in its flags: AVX2
  emulates bf16, about 8x slower than fp32 on 3x3 convolutions): fp32.
- **A CPU with native bf16**: timed, because whether bf16 pays depends on the model as much
  as on the CPU: on a Xeon with AVX512-BF16 (2 threads) fmnet's training step ran about 1.3x
  faster in bf16, while ResNet-18, GoogLeNet, MobileNet and DenseNet steps ran slower than in
  fp32 (their convolutions small, the casts around batch norm not). A few forward and backward
  passes of the run's own model on one of its own batches are timed in each precision, on a
  copy of the model (the run's weights and batch-norm statistics are not touched), and bf16
  is taken only when it is at least ``MIN_GAIN`` faster: where it barely pays, its rounding
  is not worth it. A run too short to pay for the timing (the trial's steps more than
  ``MAX_SHARE`` of the run's) keeps fp32 and says so.

:func:`machine_amp` decides where the machine alone can (``--print-config`` shows it);
:func:`timed_amp` times the model where it cannot. Each returns the choice and its reason,
the source ``config.yaml`` shows beside the value.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with the functions that use it: `cnnkit doctor`'s parser imports cpu_flags
    import torch
    from torch import nn

__all__ = ["MAX_SHARE", "MIN_GAIN", "TRIAL_STEPS", "cpu_flags", "machine_amp", "native_bf16", "timed_amp"]

TRIAL_STEPS = 3  # timed forward+backward passes per precision, after one warm-up pass each
MIN_GAIN = 1.1  # bf16 must be this much faster than fp32 to be chosen
MAX_SHARE = 0.02  # the trial's passes may be at most this share of the run's steps


def cpu_flags() -> set[str]:
    """The CPU feature flags the Linux kernel reports (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> str | None:
    """The CPU's native bf16 instruction sets (``"amx_bf16, avx512_bf16"``), or None."""
    native = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return ", ".join(native) if native else None


def _step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None) -> float:
    """The median time of ``TRIAL_STEPS`` forward+backward passes (after a warm-up one)."""
    import torch
    from torch import nn

    times = []
    for i in range(TRIAL_STEPS + 1):
        t0 = time.perf_counter()
        if dtype is None:
            logits = model(x)
        else:
            with torch.autocast(x.device.type, dtype=dtype):
                logits = model(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
        model.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_amp(device_type: str, run_steps: int) -> tuple[str, str]:
    """``(amp, why)`` for ``--amp auto`` where the machine decides alone; ``amp`` is none,
    bf16, fp16, or ``auto`` where only a timed pass of the model can (:func:`timed_amp`)."""
    if device_type == "cuda":
        import torch

        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: CUDA with bf16"
        return "fp16", "auto: CUDA without bf16, so fp16 with a gradient scaler"
    native = native_bf16()
    if native is None:
        return "none", "auto: no native bf16 on this CPU (bf16 would be emulated), so fp32"
    trial = 2 * (TRIAL_STEPS + 1)
    if trial > MAX_SHARE * run_steps:
        return "none", (
            f"auto: native bf16 ({native}), but a run of {run_steps} steps is too short to time "
            f"bf16 against fp32 ({trial} passes), so fp32"
        )
    return "auto", (
        f"auto: native bf16 ({native}); bf16 if a timed training pass of the model is at least "
        f"{MIN_GAIN}x faster in it than in fp32 (timed at the start of the run)"
    )


def timed_amp(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[str, str]:
    """``(amp, why)``: bf16 if forward+backward passes of ``model`` on the batch ``(x, y)`` run at
    least ``MIN_GAIN`` faster in it than in fp32, else none; timed on a copy of ``model``."""
    import torch

    trial_model = copy.deepcopy(model).train()
    fp32 = _step_seconds(trial_model, x, y, None)
    bf16 = _step_seconds(trial_model, x, y, torch.bfloat16)
    gain = fp32 / bf16
    timed = f"a training pass took {1000 * fp32:.0f} ms in fp32, {1000 * bf16:.0f} ms in bf16"
    if gain >= MIN_GAIN:
        return "bf16", f"auto: native bf16 ({native_bf16()}); {timed} ({gain:.2f}x)"
    return "none", f"auto: native bf16 ({native_bf16()}), but {timed} ({gain:.2f}x < {MIN_GAIN}x), so fp32"
