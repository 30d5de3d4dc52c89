"""Setting up a training run: processes, device, threads and the run folder, before any data.

:func:`start_session` turns a resolved :class:`~cnnkit.train.config.TrainConfig` into a
:class:`Session`: this process's rank among torchrun's workers (gloo on CPU, NCCL on
CUDA), the device, the intra-op threads, and the run folder, created and checked for
writing and free space. The folder's format is :mod:`cnnkit.run`'s; this module only
decides where it is and whether it can be written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.run import STATE, WEIGHTS, remove_stale_temporaries
from cnnkit.train.config import TrainConfig

__all__ = ["Session", "all_reduce", "check_disk_space", "gather", "start_session"]


@dataclass(frozen=True)
class Session:
    """Where this process trains: its rank among ``world`` processes, its device and its run folder."""

    rank: int
    world: int
    device: torch.device
    out: Path
    show_progress: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def _default_output(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.model}-{cfg.dataset}-{datetime.now():%Y%m%d-%H%M%S}"


def start_session(cfg: TrainConfig, cleanup: contextlib.ExitStack) -> Session:
    """Join the process group, pick the device and threads, and prepare the run folder.

    What it changes for the process (threads, deterministic mode, a process group it
    created, a run folder left empty by a failure) is undone through ``cleanup``.
    """
    rank, world, local_rank = _dist_env()
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if cfg.device == "auto" else cfg.device)
    given = cfg.resume or cfg.output
    out = Path(given) if given else None
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            cleanup.callback(dist.destroy_process_group)
        if out is None:  # rank 0's timestamped name for all (the ranks' clocks may tick apart)
            name = [str(_default_output(cfg))]
            dist.broadcast_object_list(name, src=0)
            out = Path(name[0])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu":
        torch.set_num_threads(max(len(os.sched_getaffinity(0)) // world, 1))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    from cnnkit.layers import fused

    cleanup.callback(fused.set_enabled, fused.is_enabled())
    fused.set_enabled(cfg.fused)
    out = out or _default_output(cfg)
    if rank == 0:
        created = _prepare_run_dir(out, resuming=bool(cfg.resume))
        # a run that fails before writing anything (bad data, a model too big for the input) leaves no folder
        cleanup.callback(_remove_empty, created)
    show = rank == 0 and (cfg.progress if cfg.progress is not None else sys.stderr.isatty())
    return Session(rank, world, device, out, show)


def _prepare_run_dir(out: Path, resuming: bool) -> list[Path]:
    """Create the run folder and check it for writing and free space before any data is read.

    Returns the folders this call created (deepest first), which are removed again if the
    run fails before writing anything, so a bad option leaves no empty folder.
    """
    if not resuming and (out / STATE).exists():
        raise ValueError(
            f"{out} already holds a run ({STATE}); continue it with --resume {out} or choose another --output"
        )
    created = [d for d in (out, *out.parents) if not d.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as e:
        _remove_empty(created)
        raise ValueError(
            f"cannot write to output folder {out} ({e.strerror}); choose another --output"
        ) from e
    free = shutil.disk_usage(out).free
    if free < 50 * 2**20:
        _remove_empty(created)
        raise ValueError(
            f"only {free // 2**20} MB free on the disk of {out}; free space or choose another --output"
        )
    if resuming:
        # temporary files of a process killed while writing (the files they were to replace are intact)
        for p in remove_stale_temporaries(out):
            print(f"{out}: removed {p.name}, left by an interrupted write", file=sys.stderr)
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; stop at the first that is not."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            return


def check_disk_space(cfg: TrainConfig, model: nn.Module, out: Path) -> None:
    """Fail before the first step when the disk cannot hold this run's checkpoints.

    The peak is reached while checkpoint.pt is replaced: model.safetensors, the old
    checkpoint.pt and the new one's temporary file side by side. checkpoint.pt holds the
    model state, the optimizer's per-parameter state (SGD momentum: one copy of the
    parameters; Adam: two) and the EMA copy.
    """
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    copies = 2 if cfg.opt in ("adam", "adamw") else int(cfg.momentum > 0)
    checkpoint = state + copies * params + (state if cfg.model_ema else 0)
    existing = sum(f.stat().st_size for f in (out / STATE, out / WEIGHTS) if f.exists())
    need = int(1.05 * (state + 2 * checkpoint)) + 2**20 - existing
    free = shutil.disk_usage(out).free
    if need > free:
        mb = 2**20
        raise ValueError(
            f"the checkpoints of this run need about {need // mb + 1} MB more on the disk of {out} "
            f"(checkpoint.pt ~{checkpoint // mb + 1} MB, twice while it is replaced, model.safetensors "
            f"~{state // mb + 1} MB); only {free // mb} MB free: free space or choose another --output"
        )


def all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    """Sum ``t`` over the ranks (in place); a no-op for one process."""
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj`` (for rank 0 to save), in rank order."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    objs: list[Any] = [None] * world
    dist.all_gather_object(objs, obj)
    return objs
