"""``torch.compile`` against eager for the default recipe's training step (issue "Speed": "measure
again per machine before using it").

The step is the default recipe's: fmnet as the recipe builds it (ReLU, no stem batch norm),
channels_last, the precision ``--amp auto`` picks on this machine (bf16 where it is native),
cross-entropy with label smoothing 0.1, SGD with Nesterov momentum, a batch of 256. Each mode
runs in its own process; the compiled one with an empty inductor cache, so its first steps
include the whole compilation, as a first compiled training run would pay it. Reported:
the seconds of the first two steps (compilation included), the median step after warm-up,
images per second and compiled/eager. The trainer has no compile option: on the machines
measured the compiled step is no faster, and its compilation costs a third of a default run.

Run: ``python benchmarks/compile_step.py`` (writes ``benchmarks/results/compile_step_<kind>.{json,md}``);
``--smoke`` is a short check with a small batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def measure(mode: str, batch: int, steps: int) -> dict[str, Any]:
    """One mode's step times, in this process."""
    import torch.nn.functional as F

    from cnnkit.models.registry import create_model
    from cnnkit.train.precision import native_bf16

    torch.manual_seed(0)
    net = create_model("fmnet", num_classes=10, in_chans=1, stem_norm=False, act_layer="relu")
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    bf16 = bool(native_bf16())
    model = torch.compile(net) if mode == "compile" else net

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(2):
        step()
    first = time.perf_counter() - t0
    for _ in range(6):  # oneDNN picks its kernels in the first steps of each shape
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {
        "mode": mode,
        "precision": "bf16" if bf16 else "fp32",
        "first_two_steps_s": first,
        "median_step_ms": med * 1e3,
        "img_per_s": batch / med,
    }


def run_mode(mode: str, batch: int, steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        cmd = [sys.executable, __file__, "--mode", mode, "--batch", str(batch), "--steps", str(steps)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"compile_step: the {mode} run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="small batch, few steps")
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--mode", choices=("eager", "compile"), help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per mode")
    args = ap.parse_args()
    if args.mode:  # a child: one mode, one JSON line
        print(json.dumps(measure(args.mode, args.batch, args.steps)))
        return
    batch, steps = (32, 3) if args.smoke else (args.batch, args.steps)
    rows = [run_mode(m, batch, steps) for m in ("eager", "compile")]
    ratio = rows[1]["img_per_s"] / rows[0]["img_per_s"]
    info = machine_info()
    report = {"batch": batch, "steps": steps, "rows": rows, "compiled_over_eager": ratio, "machine": info}
    lines = [
        "# torch.compile against eager: the default recipe's training step",
        "",
        f"fmnet (ReLU, no stem batch norm), channels_last, batch {batch}, SGD; median of {steps} steps "
        "after 8 warm-up steps; the compiled process starts with an empty inductor cache.",
        "",
        "| mode | precision | first two steps (s) | median step (ms) | img/s |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['mode']} | {r['precision']} | {r['first_two_steps_s']:.1f} | {r['median_step_ms']:.1f} "
        f"| {r['img_per_s']:.0f} |"
        for r in rows
    ]
    lines += [
        "",
        f"compiled / eager: **{ratio:.2f}x** images per second.",
        "",
        f"Machine: {info['cpu']}, {info['threads']} threads, torch {info['torch']}. "
        "Command: `python benchmarks/compile_step.py`",
        "",
    ]
    write_results(args.output, RESULTS, "compile_step", args.smoke, report, "\n".join(lines))


if __name__ == "__main__":
    main()
