"""``cnnkit decompose`` and ``cnnkit export`` on a real (tiny, synthetic) training run: the new run
folder reloads to the model the report measured, the export matches it, and bad flags fail
at parse time. Also the latency helper's contract.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnkit.data.sources import load_dataset
from cnnkit.deploy.cli_support import add_deploy_commands
from cnnkit.deploy.exporters import load_exported
from cnnkit.deploy.latency import compare_latency, measure_latency
from cnnkit.deploy.runs import decompose_run, recalibrate_bn
from cnnkit.run import load_run
from cnnkit.train.config import TrainConfig
from cnnkit.train.loop import evaluate, train


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnkit")
    add_deploy_commands(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "run"
    cfg = TrainConfig(
        model="fmnet",
        model_kwargs={"widths": [8, 16, 32], "stem_width": 8},  # load_run must pass these on
        dataset="synthetic",
        image_size=12,
        train_subset=256,
        test_subset=64,
        batch_size=32,
        epochs=1,
        threads=1,
        output=str(out),
        progress=False,
    )
    train(cfg)
    return out


def test_decompose_command_writes_a_run_that_reloads(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dec"
    flags = ["--finetune-epochs", "1", "--batch-size", "32", "--no-latency", "--format", "json"]
    where = ["--output", str(out), "--threads", "1"]
    args = _parser().parse_args(
        ["decompose", str(run_dir), "--method", "spatial_separable", "--rank", "4", *flags, *where]
    )
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "decompose.json", "decompose.md"}
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == [
        "original",
        "original, BN folded",
        "decomposed",
        "decomposed, BN re-estimated (256 images)",
        "decomposed + fine-tune (1 ep)",
        "decomposed + fine-tune (1 ep), BN folded",
    ]
    assert rows["decomposed"]["mult_adds"] < rows["original"]["mult_adds"]
    assert report["test_images"] == 64  # the source run's --test-subset
    assert rows["original"]["test_top1"] == rows["original, BN folded"]["test_top1"]
    # the new folder rebuilds the fine-tuned model: same accuracy, independently evaluated
    model, meta = load_run(out)
    assert meta["decomposition"]["method"] == "spatial_separable"
    assert set(meta["decomposition"]["ranks"]) == set(report["plan"]["layers"])
    data = load_dataset("synthetic", image_size=12, train_subset=256)
    keep = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(0))[:64]
    res = evaluate(
        model, data.test_x[keep], data.test_y[keep], torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    )
    assert res["top1"] == rows["decomposed + fine-tune (1 ep)"]["test_top1"]
    md = (out / "decompose.md").read_text()
    assert all(f"| {variant} |" in md for variant in rows)


def test_a_decomposed_run_loads_without_importing_deploy_first(run_dir: Path, tmp_path: Path) -> None:
    """cnnkit.run finds deploy's rebuild hook through its entry point: a fresh process that
    imports only cnnkit.run gets the decomposed model, equal to the one decompose wrote."""
    out = tmp_path / "dec"
    decompose_run(run_dir, "depthwise_separable", rank=2, output=out, latency=False, recalibrate=0)
    probe = tmp_path / "probe.safetensors"
    code = (
        "import sys; from cnnkit.run import load_run; from safetensors.torch import save_file\n"
        "m, meta = load_run(sys.argv[1]); save_file(m.state_dict(), sys.argv[2])\n"
        "print(meta['decomposition']['method'], 'cnnkit.deploy' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out), str(probe)], capture_output=True, text=True, check=True
    )
    assert proc.stdout.split() == ["depthwise_separable", "True"]  # the hook loaded deploy itself
    there = load_file(str(probe))
    here = load_run(out)[0].state_dict()
    assert there.keys() == here.keys()
    assert all(torch.equal(there[k], here[k]) for k in here)


def test_fine_tuning_is_a_trainer_run_that_resumes(run_dir: Path, tmp_path: Path) -> None:
    """Fine-tuning goes through the trainer: its folder is a run (config, checkpoint, metrics)
    that ``cnnkit train --resume`` continues, and the model stays decomposed."""
    from cnnkit import cli

    out = tmp_path / "dec"
    report = decompose_run(
        run_dir, "flattened", rank=2, output=out, finetune_epochs=1, batch_size=32, latency=False
    )
    assert [r["epoch"] for r in report["finetune_history"]] == [1]
    assert str(out / "decomposed.safetensors") in (out / "config.yaml").read_text()
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--progress"]) == 0
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    model, meta = load_run(out)
    assert meta["decomposition"]["method"] == "flattened" and meta["source_run"] == str(run_dir)
    decomposed = next(r for r in report["rows"] if r["variant"] == "decomposed")
    assert sum(p.numel() for p in model.parameters()) == decomposed["params"] < report["rows"][0]["params"]


def test_an_initial_checkpoint_of_another_model_is_refused_before_training(run_dir: Path) -> None:
    cfg = TrainConfig(model="resnet20", dataset="synthetic", initial_checkpoint=str(run_dir))
    with pytest.raises(ValueError, match=r"holds a fmnet .* this run trains a resnet20"):
        train(cfg)


def test_decompose_refuses_to_overwrite(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dec"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="already holds a model"):
        decompose_run(run_dir, "flattened", rank=1, output=out, latency=False)


def test_export_command_matches_the_run(run_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    args = _parser().parse_args(
        ["export", str(run_dir), "--format", "torchscript", "--output", str(path), "--fuse-bn"]
    )
    assert args.func(args) == 0
    model, _ = load_run(run_dir)
    x = torch.randn(4, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(path, "torchscript")(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "argv",
    [
        ["decompose", "RUN", "--method", "flattened"],  # neither --rank nor --energy
        ["decompose", "RUN", "--method", "flattened", "--rank", "2", "--energy", "0.9"],
        ["decompose", "RUN", "--method", "flattened", "--energy", "1.5"],
        ["decompose", "RUN", "--method", "flattened", "--rank", "0"],
        ["decompose", "RUN", "--method", "tucker", "--rank", "2"],
        ["export", "RUN", "--format", "tflite"],
    ],
)
def test_bad_flags_fail_at_parse_time(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(argv)


def test_measure_latency_contract() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Dropout(0.5)).train()
    lat = measure_latency(model, (1, 8, 8), 4, warmup=1, min_repeats=3, max_repeats=5, budget_s=0.0)
    assert lat.repeats == 3 and 0 < lat.min_ms <= lat.median_ms
    assert lat.images_per_s == pytest.approx(4000 / lat.median_ms)
    assert model.training  # restored
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        measure_latency(model, (8, 8))


def test_compare_latency_times_every_model_each_round() -> None:
    calls: list[str] = []

    class Probe(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.name)
            return x

    models = {"a": Probe("a").train(), "b": Probe("b").eval()}
    out = compare_latency(models, (1, 4, 4), 2, rounds=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up, then interleaved rounds
    assert set(out) == {"a", "b"} and all(v.repeats == 3 and v.batch_size == 2 for v in out.values())
    assert models["a"].training and not models["b"].training


def test_recalibrate_bn_recomputes_the_running_statistics() -> None:
    conv = nn.Conv2d(1, 3, 3)
    model = nn.Sequential(conv, nn.BatchNorm2d(3)).eval()
    images = torch.randint(0, 256, (40, 1, 6, 6), dtype=torch.uint8)
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    weights = conv.weight.clone()
    assert recalibrate_bn(model, images, mean, std, batch_size=10) == 1
    with torch.no_grad():
        z = conv((images.float() / 255 - 0.5) / 0.25)  # (40, 3, 4, 4)
    # momentum=None: the running stats are the plain average over the 4 batches (torch's BatchNorm docs)
    batches = z.reshape(4, 10, 3, 4, 4)
    torch.testing.assert_close(model[1].running_mean, batches.mean(dim=(1, 3, 4)).mean(0))
    torch.testing.assert_close(model[1].running_var, batches.var(dim=(1, 3, 4)).mean(0))
    assert model[1].momentum == 0.1 and not model.training
    assert torch.equal(conv.weight, weights)


def test_cli_choices_match_the_library() -> None:
    # cli_support repeats them so that `cnnkit --help` needs no torch import
    from cnnkit.deploy import cli_support
    from cnnkit.deploy.decomposition import METHODS
    from cnnkit.deploy.exporters import EXPORT_FORMATS

    assert cli_support.METHODS == METHODS and cli_support.FORMATS == EXPORT_FORMATS
