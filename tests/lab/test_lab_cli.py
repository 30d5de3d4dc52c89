"""``cnnkit lab`` and ``cnnkit viz`` as registered by ``add_lab_commands``: listing, argument
errors, re-rendering without training, and each viz figure written from a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from cnnkit.lab.cli import add_lab_commands, list_text
from cnnkit.train.config import TrainConfig
from cnnkit.train.loop import train


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnkit")
    add_lab_commands(p.add_subparsers(dest="command", required=True))
    return p


def run(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    return int(args.func(args))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "tiny"
    torch.manual_seed(0)
    cfg = TrainConfig(
        model="fmnet",
        model_kwargs={"widths": [8, 16, 32], "stem_width": 8},
        dataset="synthetic",
        image_size=16,
        train_subset=128,
        test_subset=32,
        epochs=2,
        batch_size=32,
        sched="step",
        decay_epochs=1,
        threads=1,
        progress=False,
        output=str(out),
    )
    train(cfg)
    return out


def test_lab_list_names_every_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("lab", "list") == 0
    out = capsys.readouterr().out
    assert out.strip() == list_text()
    assert "dilation" in out and "no training" in out and "residual" in out


def test_lab_run_parses_budgets_and_rejects_unknown_ones() -> None:
    args = parser().parse_args(["lab", "run", "all", "--budget", "smoke", "--output", "x"])
    assert (args.names, args.budget, args.output) == (["all"], "smoke", "x")
    with pytest.raises(SystemExit):
        parser().parse_args(["lab", "run", "init", "--budget", "huge"])


def test_lab_run_dilation_then_report_rerenders_without_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lab"
    assert run("lab", "run", "dilation", "--budget", "smoke", "--output", str(out)) == 0
    text = capsys.readouterr().out
    assert "dilation: reproduced" in text
    result = json.loads((out / "dilation" / "result.json").read_text())
    (out / "report.html").unlink()
    assert run("lab", "report", "--output", str(out)) == 0
    page = (out / "report.html").read_text()
    for f in result["figures"]:
        assert f'src="{f["file"]}"' in page and (out / f["file"]).is_file()
    with pytest.raises(ValueError, match="holds no experiment results"):
        run("lab", "report", "--output", str(tmp_path / "empty"))


@pytest.mark.parametrize(
    "figure, extra",
    [
        ("filters", []),
        ("features", ["--index", "3"]),
        ("saliency", ["--count", "3"]),
        ("histograms", ["--count", "16"]),
        ("lr", []),
    ],
)
def test_viz_figures_of_a_run(figure: str, extra: list[str], tiny_run: Path, tmp_path: Path) -> None:
    png = tmp_path / f"{figure}.png"
    assert run("viz", figure, str(tiny_run), *extra, "-o", str(png)) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_viz_histograms_of_a_fresh_model_and_rf(tmp_path: Path) -> None:
    png, scales = tmp_path / "h.png", tmp_path / "s.png"
    args = ["viz", "histograms", "--model", "resnet20", "--init", "kaiming_normal", "--dataset", "synthetic"]
    assert run(*args, "--count", "8", "--scales", str(scales), "-o", str(png)) == 0
    assert png.is_file() and scales.is_file()
    assert run("viz", "rf", "resnet20", "-o", str(tmp_path / "rf.png")) == 0
    with pytest.raises(ValueError, match="a run folder or --model"):
        run("viz", "histograms", "-o", str(png))
    with pytest.raises(ValueError, match="not a cnnkit run folder"):
        run("viz", "filters", str(tmp_path))


def test_registering_the_commands_imports_neither_torch_nor_matplotlib() -> None:
    import subprocess
    import sys

    code = (
        "import argparse, sys; from cnnkit.lab.cli import add_lab_commands; "
        "p = argparse.ArgumentParser(); add_lab_commands(p.add_subparsers()); "
        "print(sorted(m for m in ('torch', 'matplotlib', 'cnnkit.models') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lab_run_says_how_far_it_is_and_the_time_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cnnkit.lab.runner import run_experiments

    run_experiments(["separable"], "smoke", output=tmp_path, device="cpu", threads=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if " seed 0 (" in line]
    assert lines[0].endswith("[run 1 of 2]")  # nothing trained yet: no estimate
    assert lines[1].endswith("[run 2 of 2; under a minute left]")
    run_experiments(["separable"], "smoke", output=tmp_path, device="cpu", threads=1)  # read back
    again = [line for line in capsys.readouterr().err.splitlines() if " seed 0 (" in line]
    assert again[1].endswith("[run 2 of 2]")  # a run read back from disk does not make an estimate
