"""Helpers of the reliability tests: real ``python -m cnnkit`` child processes, stopped at a
chosen point by ``fault_hooks/sitecustomize.py`` and killed with SIGKILL, plus comparisons."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

HOOKS = Path(__file__).parent / "fault_hooks"

# 256 synthetic 12x12 images in batches of 32 (8 steps per epoch) and a 3-layer FMNet of
# 8/16/32 channels: a few seconds per process, most of it importing torch.
MODEL = ["--model", "fmnet", "--model-kwargs", "widths=[8,16,32]", "stem_width=8"]
DATA = ["--dataset", "synthetic", "--image-size", "12", "--train-subset", "256", "--test-subset", "64"]
MACHINE = ["--batch-size", "32", "--threads", "1", "--deterministic", "--no-progress", "--recipe", "plain"]
TINY = [*DATA, *MODEL, *MACHINE]
# every source of randomness the trainer has (crop, flip, mixup/cutmix, dropout, EMA) and a
# schedule that depends on the run's length
AUGMENTED = [
    "--epochs", "3", "--sched", "cosine", "--warmup-epochs", "0.5", "--lr", "0.05",
    "--crop-pad", "2", "--hflip", "0.5", "--mixup", "0.4", "--cutmix", "1.0", "--drop", "0.3",
    "--model-ema", "--model-ema-decay", "0.9", "--smoothing", "0.1",
]  # fmt: skip
STEPS_PER_EPOCH = 8
CHILD_TIMEOUT = 150  # seconds; a hung child fails its test instead of stalling CI
# pytest-xdist worker: the cores are already shared between workers, and each runs only some tests
UNDER_XDIST = "PYTEST_XDIST_WORKER" in os.environ


def cnnkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "cnnkit", *args]


def child_env(fault: str | None = None, fault_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNNKIT_FAULT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if fault:
        assert fault_dir is not None
        env["PYTHONPATH"] = os.pathsep.join([str(HOOKS), *filter(None, [env.get("PYTHONPATH")])])
        env.update(CNNKIT_FAULT=fault, CNNKIT_FAULT_DIR=str(fault_dir))
    return env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """stderr, which must be exactly one ``cnnkit: error:`` line and no traceback."""
        lines = self.stderr.strip().splitlines()
        assert "Traceback" not in self.stderr, self.stderr[-3000:]
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{self.stderr[-3000:]}"
        assert lines[0].startswith("cnnkit: error: "), lines[0]
        return lines[0]


def run(argv: Sequence[str], cwd: Path, timeout: float = CHILD_TIMEOUT) -> Result:
    proc = subprocess.run(
        list(argv), cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_many(jobs: Sequence[tuple[Sequence[str], Path]], workers: int | None = None) -> list[Result]:
    """Run independent commands side by side (most of each is importing torch, one core each)."""
    n = workers or max(2, min(4, len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda job: run(*job), jobs))


class Child:
    """A ``python -m cnnkit`` process that the fault hook stops at the point ``fault`` names."""

    def __init__(self, argv: Sequence[str], cwd: Path, fault: str | None = None) -> None:
        self.dir = cwd / f".fault-{time.monotonic_ns()}"
        self.dir.mkdir()
        self.out, self.err = open(self.dir / "stdout", "w+"), open(self.dir / "stderr", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(argv), cwd=cwd, env=child_env(fault, self.dir), stdout=self.out, stderr=self.err, text=True
        )

    def wait_paused(self, timeout: float = CHILD_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not (self.dir / "paused").exists():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the child exited ({self.proc.returncode}) before the fault point:\n{self.stderr()[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"the child did not reach the fault point in {timeout} s")
            time.sleep(0.02)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def let_go(self) -> None:
        (self.dir / "go").write_text("")

    def wait(self, timeout: float = CHILD_TIMEOUT) -> Result:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return Result(rc, self.stdout(), self.stderr())

    def stdout(self) -> str:
        self.out.flush()
        return (self.dir / "stdout").read_text()

    def stderr(self) -> str:
        self.err.flush()
        return (self.dir / "stderr").read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()


def kill_at(argv: Sequence[str], cwd: Path, fault: str) -> str:
    """Run until ``fault``, SIGKILL the process there; returns what it printed on stderr."""
    child = Child(argv, cwd, fault)
    try:
        child.wait_paused()
        child.kill9()
        return child.stderr()
    finally:
        child.close()


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal, f"{len(unequal)} of {len(a)} tensors differ, e.g. {unequal[0]}"


def temporaries(folder: Path) -> list[str]:
    """atomic_write's temporary files in ``folder`` (".<name>.<8 random chars>.tmp")."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


# the uninterrupted runs: name -> flags added to TINY + AUGMENTED
UNINTERRUPTED = {
    "reference": [],
    "repeat": [],  # the same command in another process
    "threads2": ["--threads", "2"],  # on two intra-op threads (overrides TINY's one)
}


class Uninterrupted:
    """Runs of ``TINY + AUGMENTED`` that nothing interrupts, shared by the session's tests.

    Each starts in the background on first request, so it uses a free core while a test kills
    and resumes other processes; :meth:`finished` waits for it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.children: dict[str, Child] = {}

    def start(self, *names: str) -> None:
        for name in names:
            if name not in self.children:
                argv = cnnkit(
                    "train", *TINY, *AUGMENTED, *UNINTERRUPTED[name], "--output", str(self.root / name)
                )
                self.children[name] = Child(argv, self.root)

    def finished(self, name: str) -> Path:
        self.start(name)
        res = self.children[name].wait()
        assert res.returncode == 0, res.stderr[-3000:]
        return self.root / name

    def close(self) -> None:
        for child in self.children.values():
            child.close()
