"""``cnnkit doctor``: what is wrong with this machine, data folder or output folder, before a
long run finds out (issue 7, "Reliability and security").

One line per check, ``OK``, ``INFO`` (a fact, neither good nor bad), ``WARN`` (works, but
slowly or with a caveat) or ``FAIL`` (``cnnkit train`` would stop); the exit status is 1
when any check fails. The checks read files and ask torch; they train nothing, download
nothing and write only a probe file (deleted at once) in the output folder. Run as
``cnnkit doctor [--data-dir DIR] [--output DIR]`` or ``python -m cnnkit.doctor``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.train.precision import cpu_flags

__all__ = ["Check", "add_doctor_command", "cpu_flags", "cpu_name", "main", "run_checks"]

# torch below this loads with a weights_only unpickler that has known bypasses (pyproject's floor)
_TORCH_FLOOR = (2, 10)
_TRAINER_FLOOR_MB = 50  # the trainer refuses an output disk with less free space (train/loop.py)
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")  # what cnnkit.data.imagefolder decodes


@dataclass(frozen=True)
class Check:
    status: str  # OK, INFO, WARN or FAIL
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status:<4} {self.name}: {self.detail}"


# ---------------------------------------------------------------- software


def _python() -> Iterator[Check]:
    v = sys.version_info
    ok = (v.major, v.minor) >= (3, 11)
    yield Check(
        "OK" if ok else "FAIL",
        "python",
        f"{platform.python_version()} ({sys.executable})" + ("" if ok else "; cnnkit needs 3.11 or newer"),
    )


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _torch() -> Iterator[Check]:
    import torch
    import torchvision

    if _version_tuple(torch.__version__) < _TORCH_FLOOR:
        yield Check(
            "FAIL",
            "torch",
            f"{torch.__version__}: checkpoints are read with torch.load(weights_only=True), whose unpickler "
            f"has known bypasses before {'.'.join(map(str, _TORCH_FLOOR))}; upgrade torch",
        )
    else:
        yield Check("OK", "torch", f"{torch.__version__} (torchvision {torchvision.__version__})")


def _packages() -> Iterator[Check]:
    import importlib.metadata as md

    needed = {  # module -> (distribution, what it is for)
        "safetensors": ("safetensors", "model.safetensors, the weights format that runs no code"),
        "yaml": ("PyYAML", "config.yaml"),
        "matplotlib": ("matplotlib", "curves.png"),
        "tqdm": ("tqdm", "the progress bar"),
    }
    for module, (dist, purpose) in needed.items():
        try:
            __import__(module)
            yield Check("OK", module, f"{md.version(dist)} ({purpose})")
        except ImportError:
            yield Check("FAIL", module, f"not installed; needed for {purpose}: pip install {dist}")
    try:
        __import__("tensorboard")
        yield Check("OK", "tensorboard", f"{md.version('tensorboard')} (--log tensorboard)")
    except ImportError:
        yield Check("INFO", "tensorboard", "not installed (optional: only --log tensorboard needs it)")


def _zoo() -> Iterator[Check]:
    from cnnkit import __version__
    from cnnkit.models.registry import list_models

    n = len(list_models())
    yield Check("OK" if n else "FAIL", "cnnkit", f"{__version__}, {n} models registered")


# ---------------------------------------------------------------- machine


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu() -> Iterator[Check]:
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    yield Check(
        "OK",
        "cpu",
        f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores for this process, torch kernels: {capability}",
    )
    flags = cpu_flags()
    if not flags:
        yield Check(
            "INFO", "bf16", "cannot read the CPU's features (no /proc/cpuinfo); --amp bf16 may be slow"
        )
    elif flags & {"avx512_bf16", "amx_bf16"}:
        native = ", ".join(sorted(flags & {"avx512_bf16", "amx_bf16"}))
        yield Check("OK", "bf16", f"native bf16 ({native}): --amp bf16 can be faster than fp32")
    else:
        yield Check(
            "WARN",
            "bf16",
            "no native bf16 (AVX512-BF16 or AMX): --amp bf16 is emulated, about 10x slower than fp32 "
            "on such CPUs; train in fp32 (the default)",
        )
    if not torch.backends.mkldnn.is_available():
        yield Check("WARN", "onednn", "torch was built without oneDNN: convolutions on the CPU are slow")
    from cnnkit.layers.fused import build_status

    state, detail = build_status()
    if state == "built":
        yield Check("OK", "fused", f"cnnkit's fused CPU kernels are built ({detail})")
    elif state == "unbuilt":
        yield Check("INFO", "fused", f"cnnkit's fused CPU kernels: the first training run builds them with {detail} (~10 s)")
    else:
        yield Check(
            "WARN",
            "fused",
            "no C++ compiler: training runs eager layers instead of cnnkit's fused CPU kernels "
            "(fmnet's step ~1.5x slower); install g++ or set CXX",
        )


def _threads() -> Iterator[Check]:
    import torch

    cores = len(os.sched_getaffinity(0))
    n = torch.get_num_threads()
    if n > cores:
        yield Check(
            "WARN",
            "threads",
            f"torch uses {n} threads on {cores} cores: oversubscribed; set --threads {cores}",
        )
    else:
        env = "".join(
            f", {k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ
        )
        yield Check(
            "OK", "threads", f"torch uses {n} of {cores} cores{env} (cnnkit train: --threads, default all)"
        )
    policy = os.environ.get("OMP_WAIT_POLICY")
    if policy is None:
        spin = os.environ.get("GOMP_SPINCOUNT", "300000 (libgomp's default)")
        yield Check(
            "INFO",
            "OMP_WAIT_POLICY",
            f"unset; idle threads spin {spin} times, then sleep (fastest alone; with other "
            "busy processes use fewer --threads)",
        )
    elif policy.upper() == "PASSIVE":
        yield Check(
            "OK", "OMP_WAIT_POLICY", "PASSIVE (idle threads sleep at once: safe, small nets ~1.4x slower)"
        )
    else:
        yield Check(
            "WARN",
            "OMP_WAIT_POLICY",
            f"{policy}: spinning threads slow training down several-fold when another process shares "
            "the cores; unset it (libgomp then spins a while, then sleeps) or set PASSIVE",
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > cores:
        yield Check(
            "WARN",
            "load",
            f"load average {load:.1f} on {cores} cores: other processes compete; timings will be slow",
        )
    else:
        yield Check("OK", "load", f"load average {load:.1f} on {cores} cores")


def _cuda() -> Iterator[Check]:
    import torch

    if not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        yield Check("INFO", "cuda", f"no CUDA device ({build} of torch); training runs on the CPU")
        return
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        bf16 = "bf16" if torch.cuda.is_bf16_supported() else "no bf16 (use --amp fp16)"
        yield Check(
            "OK",
            f"cuda:{i}",
            f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute {p.major}.{p.minor}, {bf16}",
        )


# ---------------------------------------------------------------- data


def _idx_datasets(data_dir: str | None) -> Iterator[Check]:
    """Each IDX dataset where ``load_dataset`` would look for it, its digests verified.

    Files at the top of ``--data-dir`` are searched for every IDX dataset (``root`` comes
    after ``root/<name>``), so one copy there is found three times: it is reported under the
    dataset it verifies as, or once as a failure when it verifies as none.
    """
    from cnnkit.data.sources import DatasetError, check_dataset_files, search_dirs

    results: dict[str, tuple[Path | None, Check]] = {}
    for name in ("fashion-mnist", "mnist", "kmnist"):
        try:
            hit = check_dataset_files(name, data_dir)
        except DatasetError as e:
            msg = str(e).splitlines()[0]
            folder = _folder_of(msg, name, data_dir)
            results[name] = (folder, Check("FAIL", name, msg))
            continue
        if hit is None:
            hint = " (apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
            searched = ", ".join(map(str, search_dirs(name, data_dir)))
            results[name] = (None, Check("INFO", name, f"not found{hint}; searched {searched}"))
        else:
            folder, files = hit
            results[name] = (folder, Check("OK", name, f"{folder}: {len(files)} files, checksums OK"))
    by_folder: dict[Path, list[str]] = {}
    for name, (folder, _) in results.items():
        if folder is not None:
            by_folder.setdefault(folder, []).append(name)
    for name, (folder, check) in results.items():
        shared = by_folder.get(folder, [name]) if folder is not None else [name]
        if len(shared) > 1 and check.status == "FAIL":
            ok = [n for n in shared if results[n][1].status == "OK"]
            if ok:
                check = Check("INFO", name, f"the IDX files in {folder} are {ok[0]}'s, not {name}'s")
            elif name != shared[0]:
                continue  # one failure line for a copy that verifies as none of them
            else:
                check = Check(
                    "FAIL",
                    "/".join(shared),
                    f"{check.detail} (these files are read for {', '.join(shared)}; "
                    "keep each dataset in a folder of its name)",
                )
        yield check


def _folder_of(message: str, name: str, data_dir: str | None) -> Path | None:
    """The searched folder a DatasetError message is about (messages start with a path)."""
    from cnnkit.data.sources import search_dirs

    for folder in search_dirs(name, data_dir):
        if message.startswith(f"{folder}/") or message.startswith(f"{folder}:"):
            return folder
    return None


def _cifar(data_dir: str | None) -> Iterator[Check]:
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import check_integrity

    root = Path(data_dir or os.environ.get("CNNKIT_DATA") or Path.home() / ".cache" / "cnnkit")
    for name, cls in (("cifar10", tvd.CIFAR10), ("cifar100", tvd.CIFAR100)):
        folder = root / cls.base_folder
        if not folder.is_dir():
            yield Check(
                "INFO", name, f"not found in {root} (torchvision downloads it when a network is there)"
            )
            continue
        bad = [f for f, md5 in (*cls.train_list, *cls.test_list) if not check_integrity(str(folder / f), md5)]
        if bad:
            yield Check(
                "FAIL",
                name,
                f"{folder}: missing or corrupt (MD5): {', '.join(bad)}; delete the folder and re-download",
            )
        else:
            yield Check("OK", name, f"{folder}: checksums OK")


def _imagefolder(data_dir: str | None) -> Iterator[Check]:
    if data_dir is None:
        return
    root = Path(data_dir)
    if not (root / "train").is_dir() and not (root / "val").is_dir():
        return
    classes: dict[str, list[str]] = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            yield Check(
                "FAIL",
                "imagefolder",
                f"{folder} does not exist: imagefolder needs {root}/train/<class>/ and {root}/val/<class>/",
            )
            return
        dirs = sorted(d for d in folder.iterdir() if d.is_dir())
        if not dirs:
            yield Check("FAIL", "imagefolder", f"{folder}: no class folders")
            return
        counts = {
            d.name: sum(1 for f in d.rglob("*") if f.is_file() and f.suffix.lower() in _IMAGE_EXTENSIONS)
            for d in dirs
        }
        empty = [c for c, n in counts.items() if n == 0]
        if empty:
            yield Check(
                "FAIL", "imagefolder", f"{folder}: class folder(s) with no images: {', '.join(empty[:5])}"
            )
            return
        classes[split] = list(counts)
        yield Check(
            "OK", f"imagefolder {split}", f"{folder}: {len(counts)} classes, {sum(counts.values())} images"
        )
    if classes["train"] != classes["val"]:
        only = sorted(set(classes["train"]) ^ set(classes["val"]))
        yield Check(
            "FAIL", "imagefolder", f"{root}: train and val have different classes ({', '.join(only[:5])})"
        )


def _data_dir(data_dir: str | None) -> Iterator[Check]:
    if data_dir is None:
        return
    root = Path(data_dir)
    if not root.is_dir():
        yield Check("FAIL", "data-dir", f"{data_dir} is not a folder")
        return
    from cnnkit.data.sources import _IDX_FILES

    names = {p.name.removesuffix(".gz") for p in root.rglob("*") if p.is_file()}
    known = names & set(_IDX_FILES) or any(
        (root / f).is_dir() for f in ("cifar-10-batches-py", "cifar-100-python", "train", "val")
    )
    if not known:
        yield Check(
            "WARN",
            "data-dir",
            f"{root}: nothing cnnkit reads (IDX files, cifar-10-batches-py, cifar-100-python, "
            "or train/<class>/ and val/<class>/ for --dataset imagefolder)",
        )
    else:
        yield Check("OK", "data-dir", f"{root}")


# ---------------------------------------------------------------- output


def _output(output: str | None) -> Iterator[Check]:
    out = Path(output) if output else Path("runs")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = f"{out} is a file" if existing == out else f"cannot create {out}: {existing} is a file"
        yield Check("FAIL", "output", f"{what}; choose another --output")
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=".cnnkit-doctor-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        yield Check("FAIL", "output", f"cannot write in {existing} ({e.strerror}); choose another --output")
        return
    free_mb = shutil.disk_usage(existing).free // 2**20
    where = f"{out} writable" + ("" if existing == out else f" (would be created in {existing})")
    if free_mb < _TRAINER_FLOOR_MB:
        yield Check(
            "FAIL",
            "output",
            f"{where}, only {free_mb} MB free: cnnkit train needs at least {_TRAINER_FLOOR_MB} MB",
        )
    elif free_mb < 1024:
        yield Check("WARN", "output", f"{where}, {free_mb} MB free: enough for small models only")
    else:
        yield Check("OK", "output", f"{where}, {free_mb / 1024:.1f} GB free")


# ---------------------------------------------------------------- driver


def _checks(data_dir: str | None, output: str | None) -> list[tuple[str, Callable[[], Iterator[Check]]]]:
    return [
        ("python", _python),
        ("torch", _torch),
        ("packages", _packages),
        ("cnnkit", _zoo),
        ("cpu", _cpu),
        ("threads", _threads),
        ("cuda", _cuda),
        ("data-dir", lambda: _data_dir(data_dir)),
        ("datasets", lambda: _idx_datasets(data_dir)),
        ("cifar", lambda: _cifar(data_dir)),
        ("imagefolder", lambda: _imagefolder(data_dir)),
        ("output", lambda: _output(output)),
    ]


def run_checks(
    data_dir: str | None = None, output: str | None = None, *, only: Sequence[str] | None = None
) -> Iterator[Check]:
    """Every check (or those of the groups in ``only``: python, torch, packages, cnnkit, cpu,
    threads, cuda, data-dir, datasets, cifar, imagefolder, output), in order, as it completes;
    a check that itself crashes is reported as FAIL."""
    groups = _checks(data_dir, output)
    if only is not None:
        unknown = set(only) - {name for name, _ in groups}
        if unknown:
            raise ValueError(f"unknown check group(s) {', '.join(sorted(unknown))}")
        groups = [(name, check) for name, check in groups if name in only]
    for name, check in groups:
        try:
            yield from check()
        except Exception as e:  # a broken install shows up here (e.g. an ImportError inside torch)
            first = str(e).splitlines()[0] if str(e) else ""
            yield Check("FAIL", name, f"check crashed: {type(e).__name__}: {first}")


def _cmd_doctor(args: argparse.Namespace) -> int:
    failed, found = False, []
    for check in run_checks(args.data_dir, args.output):
        if args.format == "json":
            found.append(dataclasses.asdict(check))
        else:
            print(check, flush=True)
        failed |= check.status == "FAIL"
    if args.format == "json":
        print(json.dumps(found))
    return 1 if failed else 0


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="dataset folder to check (also imagefolder layout)")
    p.add_argument("--output", default=None, help="output folder to check (default: runs)")
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="output format (default: text, one line a check)",
    )
    p.set_defaults(func=_cmd_doctor)


def add_doctor_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``doctor`` to ``cnnkit``'s subcommands (``subparsers`` from ``add_subparsers``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "doctor", help="check the environment, a data folder and an output folder; exit 1 on a problem"
    )
    _add_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cnnkit.doctor``: the same checks without the ``cnnkit`` command."""
    parser = argparse.ArgumentParser(
        prog="cnnkit doctor", description=__doc__.splitlines()[0] if __doc__ else None
    )
    _add_args(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
