"""The ``summary``, ``compare`` and ``rf`` subcommands, wired on a bare parser as ``cnnkit`` wires them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from cnnkit.analysis.cli_support import add_analysis_commands, compare_command, model_stats, summary_command
from cnnkit.models.registry import list_models

pytestmark = pytest.mark.skipif(
    not {"vgg16", "resnet18", "mobilenet_v1", "mobilenet_v1_conv"} <= set(list_models()),
    reason="the cnnkit models used here are not registered yet",
)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser(prog="cnnkit")
    add_analysis_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_summary_json_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    d = json.loads(_run(["summary", "vgg16", "--format", "json"], capsys))
    assert d["model"] == "vgg16" and d["input_size"] == [3, 224, 224]
    assert d["total_params"] == 138_357_544
    assert set(d["layers"][0]) >= {
        "name",
        "type",
        "output_shape",
        "params",
        "mult_adds",
        "activation_elements",
        "receptive_field",
    }


def test_summary_depth_and_input_size(capsys: pytest.CaptureFixture[str]) -> None:
    text = _run(
        [
            "summary",
            "resnet18",
            "--input-size",
            "1",
            "28",
            "28",
            "--small-input",
            "--num-classes",
            "10",
            "--depth",
            "1",
        ],
        capsys,
    )
    first = text.splitlines()[0]
    assert "Mult-adds (#/image)" in first
    assert "layer4" in text and "layer4.0" not in text
    assert "input 1 x 1 x 28 x 28" in text


def test_compare_is_the_lecture_table_4(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(["compare", "mobilenet_v1_conv", "mobilenet_v1", "--format", "csv"], capsys)
    rows = [line.split(",") for line in out.strip().splitlines()]
    assert rows[0][0] == "model" and [r[0] for r in rows[1:]] == ["mobilenet_v1_conv", "mobilenet_v1"]
    conv, sep = (int(r[2]) for r in rows[1:])
    assert round(conv / 1e6) in range(4842, 4891) and round(sep / 1e6) in range(
        566, 573
    )  # 4866M, 569M +-0.5%


def test_rf_writes_a_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rf.png"
    msg = _run(["rf", "vgg16", "--output", str(out)], capsys)
    assert out.stat().st_size > 1000
    assert "212 px" in msg


def test_pure_functions() -> None:
    params, madds = model_stats("vgg16")
    assert params == 138_357_544 and madds == 15_470_264_320
    assert "Total" in summary_command("vgg16", depth=1)
    with pytest.raises(ValueError, match="format"):
        compare_command(["vgg16"], fmt="xml")
