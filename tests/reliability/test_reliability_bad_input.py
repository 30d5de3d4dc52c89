"""Bad input and unsafe files through the real command line (issue 7, items 2, 3, 5 and 6).

Each case runs ``python -m cnnkit ...`` in a fresh process and must end with exit code 2,
exactly one ``cnnkit: error:`` line on stderr naming the problem (and the fix where there is
one), no traceback, nothing on stdout, and nothing written: the case's folder is the same
before and after, so no run folder, no ``runs/`` and no partial checkpoint. A crafted pickle
whose ``__reduce__`` would run ``touch pwned`` is put where ``cnnkit eval`` and ``cnnkit train
--resume`` read; it is rejected and the file never appears.

The processes run side by side (most of each is importing torch); the library-level
versions of these checks are in tests/train/test_loop.py and tests/train/test_checkpoint.py.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from reliability_support import DATA, MACHINE, MODEL, TINY, UNDER_XDIST, Result, cnnkit, run_many

from cnnkit import cli


class Evil:
    """Unpickling this runs a shell command that creates ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


@dataclass
class Case:
    argv: list[str]
    expect: str  # regex the error line must match
    setup: Callable[[Path], None] | None = None


def train(*flags: str) -> list[str]:
    return ["train", *flags, "--epochs", "1", "--output", "run"]  # relative to the case's folder


def images(folder: Path, n: int = 2, mode: str = "RGB") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new(mode, (12, 12), color=40 * i).save(folder / f"{i}.png")


def imagefolder(root: Path, broken: str | None = None) -> None:
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            images(root / split / cls)
    if broken == "unreadable":
        (root / "train" / "dog" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    elif broken == "no-images":
        (root / "train" / "bird").mkdir()
        (root / "train" / "bird" / "README.txt").write_text("the pictures are elsewhere\n")


def empty_imagefolder(root: Path) -> None:
    (root / "train").mkdir(parents=True)
    (root / "val").mkdir()


def fake_fashion_mnist(root: Path) -> None:
    root.mkdir()
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (root / f"{stem}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x04" + b"abcd"))


def file_in_the_way(root: Path) -> None:
    (root / "afile").write_text("not a folder\n")


def read_only_mount(root: Path) -> None:
    (root / "ro").mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(root / "ro")], capture_output=True
    )
    if proc.returncode != 0:
        raise CannotMount


class CannotMount(Exception):
    pass


MISSING_DATA = ["--dataset", "imagefolder", "--data-dir", "no-such-data"]  # an error if it were read first
SMALL_MODEL = [*MODEL, *MACHINE]


def imagefolder_train(*flags: str) -> list[str]:
    return train("--dataset", "imagefolder", "--data-dir", "data", "--image-size", "12", *SMALL_MODEL, *flags)


CASES: dict[str, Case] = {
    # options
    "unknown model": Case(
        train(*DATA, *MACHINE, "--model", "resnet2O"), r"unknown model 'resnet2O'.*did you mean.*resnet20"
    ),
    "unknown dataset": Case(
        train("--dataset", "fashion_mnist", *SMALL_MODEL),
        r"unknown dataset 'fashion_mnist'.*did you mean fashion-mnist",
    ),
    "images too small without --small-input": Case(
        train(*DATA, *MACHINE, "--model", "densenet_bc_100_12", "--no-small-input"),
        r"densenet_bc_100_12 needs inputs of at least 13x13; synthetic has 12x12; add --small-input$",
    ),
    "images too small for any stem": Case(
        train(*DATA, *SMALL_MODEL, "--image-size", "7"),
        r"fmnet needs inputs of at least 8x8; synthetic has 7x7$",
    ),
    "drop_path outside [0, 1)": Case(
        train(*TINY, "--drop-path", "1.5"), r"--drop-path must be in \[0, 1\); got 1.5"
    ),
    "dropout outside [0, 1)": Case(train(*TINY, "--drop", "1.0"), r"--drop must be in \[0, 1\); got 1.0"),
    "zero learning rate": Case(train(*TINY, "--lr", "0"), r"--lr must be a positive number; got 0"),
    "negative epochs": Case(
        ["train", *TINY, "--epochs", "-1", "--output", "run"], r"--epochs must be >= 1; got -1"
    ),
    "zero batch size": Case(train(*TINY, "--batch-size", "0"), r"--batch-size must be >= 1; got 0"),
    # data
    "image folder that does not exist": Case(
        imagefolder_train(), r"data/train does not exist: imagefolder needs .*/train/<class>/"
    ),
    "empty image folder": Case(
        imagefolder_train(),
        r"data/train: Couldn't find any class folder",
        lambda d: empty_imagefolder(d / "data"),
    ),
    "unreadable image": Case(
        imagefolder_train(),
        r"data/train/dog/2\.png: unreadable image .*remove or replace it",
        lambda d: imagefolder(d / "data", "unreadable"),
    ),
    "class folder with no images": Case(
        imagefolder_train(),
        r"data/train: class folder\(s\) with no images .*: bird",
        lambda d: imagefolder(d / "data", "no-images"),
    ),
    "checksum mismatch": Case(
        train("--dataset", "fashion-mnist", "--data-dir", "data", *SMALL_MODEL),
        r"data/t(rain|10k)-\w+-idx\d-ubyte\.gz: checksum mismatch .*delete it and reinstall or re-download",
        lambda d: fake_fashion_mnist(d / "data"),
    ),
    "wrong channel count": Case(
        ["eval", "--checkpoint", "run", "--dataset", "imagefolder", "--data-dir", "data"],
        r"run was trained on 1-channel images; imagefolder has 3-channel images \(evaluate it on 1-channel",
        lambda d: imagefolder(d / "data"),
    ),
    # output folder: refused before any data is read (the data folder does not exist either)
    "output folder under a file": Case(
        ["train", *MISSING_DATA, *SMALL_MODEL, "--output", "afile/run"],
        r"cannot write to output folder afile/run \(Not a directory\); choose another --output",
        file_in_the_way,
    ),
    "read-only output folder": Case(
        ["train", *MISSING_DATA, *SMALL_MODEL, "--output", "ro/run"],
        r"cannot write to output folder ro/run \(Read-only file system\); choose another --output",
        read_only_mount,
    ),
    # files that must not load
    "pickle as model.safetensors (eval)": Case(
        ["eval", "--checkpoint", "run", "--dataset", "synthetic"],
        r"run/model\.safetensors: truncated or not a safetensors file",
    ),
    "pickle as checkpoint.pt (resume)": Case(
        ["train", "--resume", "run"], r"run/checkpoint\.pt: rejected, it holds something other than tensors"
    ),
    "plain pickle as checkpoint.pt (resume)": Case(
        ["train", "--resume", "run"], r"run/checkpoint\.pt: rejected, it holds something other than tensors"
    ),
    "truncated checkpoint.pt (resume)": Case(
        ["train", "--resume", "run"], r"run/checkpoint\.pt: truncated or not a cnnkit checkpoint"
    ),
}
NEEDS_RUN = {k for k in CASES if "pickle" in k or "checkpoint.pt" in k or k == "wrong channel count"}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-channel fmnet run of one epoch on 12x12 synthetic images (in-process: no import to pay)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(["train", *TINY, "--epochs", "1", "--output", str(out)]) == 0
    return out


def plant_files(name: str, case_dir: Path, run_dir: Path) -> None:
    """Put the unsafe or damaged file of ``name`` in the case's copy of the trained run."""
    target = case_dir / "pwned"
    if name == "pickle as model.safetensors (eval)":
        (run_dir / "model.safetensors").write_bytes(pickle.dumps({"weight": Evil(target)}))
    elif name == "pickle as checkpoint.pt (resume)":
        torch.save({"model": Evil(target)}, run_dir / "checkpoint.pt")
    elif name == "plain pickle as checkpoint.pt (resume)":
        (run_dir / "checkpoint.pt").write_bytes(pickle.dumps({"model": Evil(target)}, protocol=4))
    elif name == "truncated checkpoint.pt (resume)":
        data = (run_dir / "checkpoint.pt").read_bytes()
        (run_dir / "checkpoint.pt").write_bytes(data[: len(data) // 2])


@dataclass
class Outcome:
    result: Result | None  # None: the case cannot be set up here (no mount rights)
    folder: Path
    before: dict[str, tuple[int, int]]


class Outcomes:
    """Each case's folder, set up, and the result of its command, run on first request.

    In a plain pytest run the first request runs every case side by side; under pytest-xdist
    (``-n 2``: the workers already fill the cores, and each worker runs only its share of the
    cases) a request runs only its own case.
    """

    def __init__(self, root: Path, trained_run: Path) -> None:
        self.root, self.trained_run = root, trained_run
        self.done: dict[str, Outcome] = {}
        self.mounts: list[Path] = []

    def __getitem__(self, name: str) -> Outcome:
        if name not in self.done:
            self._run([name] if UNDER_XDIST else [n for n in CASES if n not in self.done])
        return self.done[name]

    def _run(self, names: list[str]) -> None:
        ready: list[tuple[str, Path]] = []
        for name in names:
            folder = self.root / f"case{list(CASES).index(name):02d}"
            folder.mkdir()
            case = CASES[name]
            if name in NEEDS_RUN:
                shutil.copytree(self.trained_run, folder / "run")
                plant_files(name, folder, folder / "run")
            try:
                if case.setup:
                    case.setup(folder)
            except CannotMount:
                self.done[name] = Outcome(None, folder, {})
                continue
            if case.setup is read_only_mount:
                self.mounts.append(folder / "ro")
            ready.append((name, folder))
        befores = {name: snapshot(folder) for name, folder in ready}
        results = run_many([(cnnkit(*CASES[name].argv), folder) for name, folder in ready])
        for (name, folder), res in zip(ready, results, strict=True):
            self.done[name] = Outcome(res, folder, befores[name])

    def close(self) -> None:
        for m in self.mounts:
            subprocess.run(["umount", str(m)], capture_output=True)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, trained_run: Path) -> Iterator[Outcomes]:
    found = Outcomes(tmp_path_factory.mktemp("cases"), trained_run)
    yield found
    found.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_written(name: str, outcomes: Outcomes) -> None:
    out = outcomes[name]
    if out.result is None:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    res = out.result
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    line = res.error_line()
    assert re.search(CASES[name].expect, line), line
    assert res.stdout == ""
    assert snapshot(out.folder) == out.before  # nothing written, created or removed
    assert not (out.folder / "pwned").exists()  # no pickle payload ran
