"""``python -m cnnkit.data.fetch`` (the main job's first step): nothing when the data is there;
Debian's package as root; torchvision's download; else the one command that would fetch it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cnnkit.data import fetch, sources

SYSTEM = Path("/usr/share/datasets/fashion-mnist")
needs_data = pytest.mark.skipif(not SYSTEM.is_dir(), reason="apt-get install dataset-fashion-mnist")


@pytest.fixture
def bare_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No copy anywhere: an empty system root, home and no $CNNKIT_DATA."""
    monkeypatch.setattr(sources, "_SYSTEM_ROOT", tmp_path / "system")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    return tmp_path


@needs_data
def test_nothing_to_do_when_the_data_is_there(capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch.main(["fashion-mnist"]) == 0 and capsys.readouterr().err == ""


@needs_data
def test_as_root_it_installs_debians_package_and_says_so(
    bare_machine: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    installed = []

    def apt(package: str) -> bool:  # what dataset-fashion-mnist does: the four IDX files in place
        installed.append(package)
        shutil.copytree(SYSTEM, bare_machine / "system" / "fashion-mnist")
        return True

    monkeypatch.setattr(fetch.os, "geteuid", lambda: 0)
    monkeypatch.setattr(fetch.shutil, "which", lambda cmd: f"/usr/bin/{cmd}")
    monkeypatch.setattr(fetch, "_apt_install", apt)
    assert fetch.ensure_dataset("fashion-mnist") and installed == ["dataset-fashion-mnist"]
    assert "installing Debian's dataset-fashion-mnist" in capsys.readouterr().err
    assert sources.load_dataset("fashion-mnist").train_x.shape == (60000, 1, 28, 28)


def test_without_root_or_network_it_names_the_command(
    bare_machine: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise sources.DatasetError("no network")

    monkeypatch.setattr(fetch.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sources, "_load_torchvision", offline)
    assert fetch.main(["fashion-mnist"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "cnnkit: fashion-mnist is missing and could not be fetched here; "
        "get it with: sudo apt-get install dataset-fashion-mnist"
    )
