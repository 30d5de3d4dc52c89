"""``cnnkit doctor``: each problem it is meant to find is planted, and it must report it as
FAIL or WARN on one line and exit 1 on a FAIL (issue 7, deliverable "cnnkit doctor")."""

from __future__ import annotations

import argparse
import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from reliability_support import child_env

from cnnkit import doctor
from cnnkit.doctor import Check, add_doctor_command, run_checks

LINE = re.compile(r"^(OK|INFO|WARN|FAIL) +[\w:./ -]+: \S")
SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def checks(*only: str, data_dir: Path | None = None, output: Path | None = None) -> dict[str, Check]:
    found = list(
        run_checks(str(data_dir) if data_dir else None, str(output) if output else None, only=only or None)
    )
    for c in found:
        assert LINE.match(str(c)) and "\n" not in str(c), str(c)
    return {c.name: c for c in found}


def corrupt_fashion_mnist(root: Path) -> None:
    root.mkdir(parents=True)
    for stem in IDX:
        (root / f"{stem}.gz").write_bytes(gzip.compress(b"not the original bytes"))


def test_a_healthy_output_folder_and_the_software_checks_pass(tmp_path: Path) -> None:
    found = checks(
        "python", "torch", "packages", "cnnkit", "cpu", "threads", "output", output=tmp_path / "runs"
    )
    for name in ("python", "torch", "safetensors", "yaml", "matplotlib", "cnnkit", "cpu", "threads"):
        assert found[name].status == "OK", found[name]
    out = found["output"]
    assert out.status in ("OK", "WARN") and f"{tmp_path / 'runs'} writable" in out.detail
    assert not (tmp_path / "runs").exists()  # checking writes nothing that stays


def test_a_corrupt_dataset_fails_naming_the_file(tmp_path: Path) -> None:
    corrupt_fashion_mnist(tmp_path / "data" / "fashion-mnist")
    found = checks("data-dir", "datasets", "imagefolder", data_dir=tmp_path / "data")
    bad = found["fashion-mnist"]
    assert bad.status == "FAIL"
    assert re.search(r"data/fashion-mnist/t(rain|10k)-[\w-]+\.gz: checksum mismatch", bad.detail), bad.detail
    assert found["data-dir"].status == "OK"
    assert found["mnist"].status == "INFO"  # not installed: a fact, not a failure


def test_an_incomplete_dataset_fails(tmp_path: Path) -> None:
    corrupt_fashion_mnist(tmp_path / "data" / "fashion-mnist")
    (tmp_path / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    bad = checks("datasets", data_dir=tmp_path / "data")["fashion-mnist"]
    assert bad.status == "FAIL" and "missing t10k-labels-idx1-ubyte" in bad.detail


def test_files_at_the_top_of_data_dir_are_reported_once(tmp_path: Path) -> None:
    """They are searched for every IDX dataset; a corrupt copy is one failure, not three."""
    corrupt_fashion_mnist(tmp_path / "data")
    found = checks("datasets", data_dir=tmp_path / "data")
    assert [n for n, c in found.items() if c.status == "FAIL"] == ["fashion-mnist/mnist/kmnist"]
    assert "keep each dataset in a folder of its name" in found["fashion-mnist/mnist/kmnist"].detail


@pytest.mark.skipif(
    not (SYSTEM_FASHION / f"{IDX[0]}.gz").is_file(), reason="dataset-fashion-mnist not installed"
)
def test_a_good_copy_at_the_top_of_data_dir_is_named_for_what_it_is(tmp_path: Path) -> None:
    for stem in IDX:
        (tmp_path / f"{stem}.gz").symlink_to(SYSTEM_FASHION / f"{stem}.gz")
    found = checks("datasets", data_dir=tmp_path)
    assert found["fashion-mnist"].status == "OK" and "checksums OK" in found["fashion-mnist"].detail
    for name in ("mnist", "kmnist"):
        assert found[name].status == "INFO" and "are fashion-mnist's" in found[name].detail


def test_a_folder_without_data_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert checks("data-dir", data_dir=tmp_path)["data-dir"].status == "WARN"
    assert checks("data-dir", data_dir=tmp_path / "missing")["data-dir"].status == "FAIL"


def test_image_folders_are_checked(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / cls / "0.png")
    found = checks("imagefolder", data_dir=tmp_path)
    assert (
        found["imagefolder train"].status == "OK"
        and "2 classes, 2 images" in found["imagefolder train"].detail
    )
    (tmp_path / "val" / "bird").mkdir()
    bad = checks("imagefolder", data_dir=tmp_path)["imagefolder"]
    assert bad.status == "FAIL" and "class folder(s) with no images: bird" in bad.detail


@pytest.mark.parametrize("kind", ["under a file", "a file"])
def test_an_output_that_cannot_be_created_fails(tmp_path: Path, kind: str) -> None:
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "run" if kind == "under a file" else tmp_path / "afile"
    bad = checks("output", output=out)["output"]
    assert bad.status == "FAIL" and "is a file" in bad.detail and "--output" in bad.detail


def test_a_nearly_full_output_disk_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(
        doctor.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10 * 2**20, 10 * 2**20)
    )
    bad = checks("output", output=tmp_path)["output"]
    assert bad.status == "FAIL" and "only 10 MB free" in bad.detail


@pytest.mark.parametrize(
    ("flags", "status"),
    [
        ({"avx2", "fma"}, "WARN"),
        ({"avx2", "avx512f", "avx512_bf16"}, "OK"),
        ({"avx2", "amx_bf16", "amx_tile"}, "OK"),
    ],
)
def test_bf16_is_flagged_slow_without_native_support(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], status: str
) -> None:
    monkeypatch.setattr(doctor, "cpu_flags", lambda: flags)
    check = checks("cpu")["bf16"]
    assert check.status == status
    if status == "WARN":
        assert "--amp bf16" in check.detail and "slower than fp32" in check.detail


def test_bf16_check_reads_this_machines_cpu() -> None:
    """Against the kernel's own list: /proc/cpuinfo's flags (AVX2-only here, so a warning)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert checks("cpu")["bf16"].status == ("OK" if native else "WARN")


@pytest.mark.parametrize(("policy", "status"), [("ACTIVE", "WARN"), ("PASSIVE", "OK"), (None, "INFO")])
def test_omp_wait_policy(monkeypatch: pytest.MonkeyPatch, policy: str | None, status: str) -> None:
    if policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    assert checks("threads")["OMP_WAIT_POLICY"].status == status


def test_a_check_that_crashes_is_a_failure_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise ImportError("libtorch_cpu.so: cannot open shared object file\nmore")

    monkeypatch.setattr(doctor, "_cuda", broken)
    bad = checks("cuda")["cuda"]
    assert (
        bad.status == "FAIL"
        and bad.detail == "check crashed: ImportError: libtorch_cpu.so: cannot open shared object file"
    )


def test_add_doctor_command_wires_a_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="cnnkit")
    sub = parser.add_subparsers(dest="command", required=True)
    add_doctor_command(sub)
    corrupt_fashion_mnist(tmp_path / "data" / "fashion-mnist")
    args = parser.parse_args(["doctor", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path)])
    assert args.func(args) == 1  # the corrupt dataset
    lines = capsys.readouterr().out.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert [line.split()[1] for line in lines if line.startswith("FAIL")] == ["fashion-mnist:"]


@pytest.mark.timeout(120)
def test_python_m_cnnkit_doctor_in_a_fresh_process(tmp_path: Path) -> None:
    corrupt_fashion_mnist(tmp_path / "data" / "fashion-mnist")
    (tmp_path / "afile").write_text("x")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnkit.doctor",
            "--data-dir",
            str(tmp_path / "data"),
            "--output",
            str(tmp_path / "afile" / "x"),
        ],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr == ""
    assert all(LINE.match(line) for line in lines), lines
    assert {line.split(":")[0].split()[1] for line in lines if line.startswith("FAIL")} == {
        "fashion-mnist",
        "output",
    }


def test_a_cuda_device_is_described(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU on the test machines: torch.cuda's answers are stood in for."""
    from types import SimpleNamespace

    import torch

    props = SimpleNamespace(name="NVIDIA H200", total_memory=141 * 2**30, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    check = checks("cuda")["cuda:0"]
    assert check.status == "OK" and check.detail == "NVIDIA H200, 141 GiB, compute 9.0, bf16"


def test_a_torch_below_the_security_floor_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch, "__version__", "2.9.1+cpu")
    bad = checks("torch")["torch"]
    assert bad.status == "FAIL" and "weights_only" in bad.detail and "2.10" in bad.detail
