"""A full disk (issue 7, item 6): on a real, small filesystem where the machine allows one.

A tmpfs mount (root only; skipped elsewhere) is filled up while a real ``python -m cnnkit
train`` is paused after its first checkpoint; when it goes on, the kernel refuses the next
checkpoint.pt write with ENOSPC. The run must stop with one line naming the file, keep
the previous checkpoint whole, leave no temporary file, and finish bitwise equal to an
uninterrupted run once space is freed and it is resumed. A run whose checkpoints cannot fit
at all is refused before its first step. Without mount rights, the same failures are
injected in-process (``torch.save`` raising mid-write), which always runs.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from reliability_support import (
    AUGMENTED,
    CHILD_TIMEOUT,
    DATA,
    MACHINE,
    TINY,
    Child,
    Uninterrupted,
    assert_bitwise_equal,
    cnnkit,
    run,
    temporaries,
    weights,
)

from cnnkit import cli
from cnnkit import run as checkpoint
from cnnkit.run import load_state


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Any]:
    """``small_disk(size)``: a fresh tmpfs of that size (e.g. "64m") under tmp_path, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str, *, read_only: bool = False) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); needs root")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` to the last byte, then give back ``leave`` bytes; returns the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (2**20, 4096, 1):
            block = b"\0" * chunk
            while True:
                try:
                    if os.write(fd, block) < chunk:
                        break
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    os.truncate(filler, max(filler.stat().st_size - leave, 0))
    return filler


@pytest.mark.slow
@pytest.mark.timeout(4 * CHILD_TIMEOUT)
def test_disk_full_at_a_checkpoint_keeps_the_previous_one_and_resume_finishes_the_run(
    small_disk: Any, tmp_path: Path, uninterrupted: Uninterrupted
) -> None:
    disk = small_disk("64m")  # above the trainer's 50 MB floor
    uninterrupted.start("reference")  # alongside, on the other core
    out = disk / "run"
    child = Child(cnnkit("train", *TINY, *AUGMENTED, "--output", str(out)), tmp_path, "after_save:1")
    try:
        child.wait_paused()  # epoch 1's model.safetensors and checkpoint.pt are written
        before = (out / "checkpoint.pt").read_bytes()
        # room for epoch 2's model.safetensors (81 kB here) and a metrics line, not for checkpoint.pt (275 kB)
        room = (out / "model.safetensors").stat().st_size + 16 * 4096
        assert (out / "checkpoint.pt").stat().st_size > room
        filler = fill(disk, room)
        child.let_go()
        res = child.wait()
    finally:
        child.close()
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]  # after the epoch-1 progress line
    assert last.startswith(
        f"cnnkit: error: cannot write {out / 'checkpoint.pt'} (No space left on device)"
    ), last
    assert "the previous checkpoint.pt, if any, is unchanged" in last
    assert (out / "checkpoint.pt").read_bytes() == before  # the kernel refused the new one; the old is whole
    assert (
        load_state(out / "checkpoint.pt")["epoch"],
        load_state(out / "checkpoint.pt")["step_in_epoch"],
    ) == (1, 0)
    assert temporaries(out) == []  # the failed write cleaned up after itself

    filler.unlink()  # space is back: the run finishes as if nothing happened
    resumed = run(cnnkit("train", "--resume", str(out)), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_bitwise_equal(weights(out), weights(uninterrupted.finished("reference")))


@pytest.mark.timeout(CHILD_TIMEOUT)
def test_checkpoints_that_cannot_fit_are_refused_before_the_first_step(
    small_disk: Any, tmp_path: Path
) -> None:
    disk = small_disk("56m")
    out = disk / "runs" / "big"
    # resnet18: 11.2 M parameters = 45 MB of weights, 90 MB of checkpoint with SGD momentum
    res = run(
        cnnkit("train", *DATA, *MACHINE, "--model", "resnet18", "--epochs", "1", "--output", str(out)),
        tmp_path,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    line = res.error_line()
    assert "the checkpoints of this run need about" in line and "choose another --output" in line, line
    # torchvision's resnet18 has 11,689,512 parameters; with 10 classes and 1 input channel
    # 11,175,370: 42.6 MiB of float32 weights (+ 0.04 MiB of batch-norm statistics) and the
    # same again of SGD momentum in checkpoint.pt
    assert "checkpoint.pt ~86 MB" in line and "model.safetensors ~43 MB" in line, line
    assert list(disk.iterdir()) == []  # no step taken, nothing written, the folders it made removed again


# ---------------------------------------------------------------- without mount rights (always runs)

SMALL = [*TINY, "--epochs", "2", "--lr", "0.05"]
FULL_DISK = shutil._ntuple_diskusage(10**9, 10**9, 0)  # what shutil.disk_usage says of a full disk


@pytest.mark.parametrize("how", ["enospc", "torch-runtime-error"])
def test_a_failed_checkpoint_write_keeps_the_previous_one_in_process(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """torch.save fails half-way through the second checkpoint.pt: as the OSError the kernel
    gives, or as the RuntimeError torch's zip writer turns it into (with the disk reported full)."""
    out = tmp_path / "run"
    real_save = torch.save
    writes = 0

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal writes
        writes += 1
        if writes < 2:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf)
        Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        if how == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: FULL_DISK)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", save)
    assert cli.main(["train", *SMALL, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"cnnkit: error: cannot write {out / 'checkpoint.pt'} (No space left on device); the previous "
        f"checkpoint.pt, if any, is unchanged (free space on the disk of {out})"
    )
    monkeypatch.undo()
    assert load_state(out / "checkpoint.pt")["epoch"] == 1
    assert temporaries(out) == []
