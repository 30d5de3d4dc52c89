"""The training loop: a real run reaches a stated accuracy, metrics follow their definitions,
non-finite steps stop (or are skipped) without losing the last good checkpoint, and bad
options fail before any data is read.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from cnnkit import cli
from cnnkit.run import load_state
from cnnkit.train import loop
from cnnkit.train.config import TrainConfig, config_from_args
from cnnkit.train.loop import TrainingError, evaluate, train

TINY = [
    "--dataset", "synthetic", "--image-size", "12", "--train-subset", "256", "--test-subset", "64",
    "--model", "fmnet", "--model-kwargs", "widths=[8,16,32]", "stem_width=8",
    "--batch-size", "32", "--threads", "1", "--deterministic", "--no-progress", "--recipe", "plain",
]  # fmt: skip
STEPS_PER_EPOCH = 8  # 256 / 32


def tiny_config(*flags: str) -> TrainConfig:
    """A TrainConfig from command-line flags, exactly as ``cnnkit train`` builds it."""
    args = cli.build_parser().parse_args(["train", *TINY, *flags])
    return config_from_args({k: v for k, v in vars(args).items() if k not in ("func", "command", "debug")})


def _fashion_mnist_present() -> bool:
    roots = [os.environ.get("CNNKIT_DATA"), "/usr/share/datasets", str(Path.home() / ".cache" / "cnnkit")]
    return any(r and (Path(r) / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file() for r in roots)


# ---------------------------------------------------------------- a real run on Fashion-MNIST


@pytest.mark.slow
@pytest.mark.skipif(
    not _fashion_mnist_present(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
)
def test_fashion_mnist_subset_reaches_80_percent_and_writes_the_run_folder(tmp_path: Path) -> None:
    """FMNet at widths 16/32/64 (75k parameters), 4000 training images, 3 epochs, one thread.

    Measured on this project's 2-core CI machine: 85.05%, 85.35%, 85.51% top-1 on the full
    10,000-image test set for seeds 0, 1, 2 (about 20 s of training). 80% leaves a margin
    of five points, while an untrained net scores about 10% and a run that stalls in the
    first epoch (50% after epoch 1 here) fails it. The per-epoch evaluation uses a fixed
    2,000-image test subset to keep the run short; the asserted figure is computed below on
    the full test set, from the saved weights, with top-1 written out from its definition.
    """
    from cnnkit.data.sources import load_dataset
    from cnnkit.models.registry import create_model

    out = tmp_path / "run"
    flags = [
        "train", "--dataset", "fashion-mnist", "--train-subset", "4000", "--test-subset", "2000",
        "--model", "fmnet", "--model-kwargs", "widths=[16,32,64]", "stem_width=16",
        "--epochs", "3", "--batch-size", "64", "--lr", "0.2", "--threads", "1", "--no-progress",
        "--recipe", "plain", "--output", str(out),
    ]  # fmt: skip
    t0 = time.perf_counter()
    assert cli.main(flags) == 0
    wall = time.perf_counter() - t0

    expected = {"config.yaml", "metrics.jsonl", "summary.csv", "model.safetensors", "checkpoint.pt"}
    assert expected | {"curves.png", "final.json"} <= {p.name for p in out.iterdir()}

    # config.yaml: the resolved configuration, loadable back into the dataclass
    saved = TrainConfig(**yaml.safe_load((out / "config.yaml").read_text()))
    assert (saved.model, saved.dataset, saved.train_subset, saved.epochs, saved.lr) == (
        "fmnet", "fashion-mnist", 4000, 3, 0.2
    )  # fmt: skip
    assert saved.model_kwargs == {"widths": [16, 32, 64], "stem_width": 16}

    # metrics.jsonl: one line per epoch, errors are 1 - accuracy, the cosine lr decreases to 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert 0 <= r["train_loss"] < 5 and 0 <= r["train_acc"] <= 1
        assert r["test_top1_err"] == pytest.approx(1 - r["test_top1"])
        assert r["test_top5_err"] == pytest.approx(1 - r["test_top5"])
        assert r["test_top5"] >= r["test_top1"]
        assert r["images_per_s"] > 0
    steps = 4000 // 64
    for r in rows:  # the lecture's cosine with eta_T = 0, sampled at the end of each epoch
        assert r["lr"] == pytest.approx(
            0.1 * (1 + math.cos(math.pi * r["epoch"] * steps / (3 * steps))), abs=1e-9
        )
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]

    # summary.csv holds the same rows
    with open(out / "summary.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in table] == [1, 2, 3]
    assert [float(r["test_top1"]) for r in table] == pytest.approx([r["test_top1"] for r in rows])

    # final.json
    final = json.loads((out / "final.json").read_text())
    assert 0 <= final["test_top1"] <= 1 and 0 <= final["test_top5"] <= 1
    assert final["test_top1"] == rows[-1]["test_top1"] and final["epochs"] == 3
    assert 0 < final["train_seconds"] < wall

    # curves.png is a real image
    with Image.open(out / "curves.png") as im:
        assert im.format == "PNG" and im.width > 600 and im.height > 200

    # checkpoint.pt loads safely and matches model.safetensors
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    weights = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(state["model"][k], weights[k]) for k in weights)

    # the accuracy, on the full test set, from the saved weights alone
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    model = create_model("fmnet", num_classes=10, in_chans=1, **meta["model_kwargs"]).eval()
    model.load_state_dict(weights)
    data = load_dataset("fashion-mnist")
    assert len(data.test_y) == 10_000
    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    correct = 0
    with torch.no_grad():
        for i in range(0, 10_000, 500):
            x = (data.test_x[i : i + 500].float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
            correct += int((model(x).argmax(1) == data.test_y[i : i + 500]).sum())
    top1 = correct / 10_000
    print(
        f"fashion-mnist full test top-1 {100 * top1:.2f}%, training {final['train_seconds']:.1f}s, wall {wall:.1f}s"
    )
    assert top1 >= 0.80


def test_short_run_writes_every_output_and_the_resolved_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    yaml_path = tmp_path / "cfg.yaml"
    yaml_path.write_text("epochs: 2\nlr: 0.03\nsched: constant\nhflip: 0.5\n")
    assert cli.main(["train", "-c", str(yaml_path), *TINY, "--lr", "0.02", "--output", str(out)]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["epochs"], saved["lr"], saved["sched"], saved["hflip"]) == (2, 0.02, "constant", 0.5)
    assert saved["output"] == str(out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == [0.02, 0.02]
    final = json.loads((out / "final.json").read_text())
    assert set(final) >= {"test_top1", "test_top5", "epochs", "train_seconds"}
    assert final["epochs"] == 2
    # top-1/top-5 on 64 test images are multiples of 1/64 in [0, 1]
    for key in ("test_top1", "test_top5"):
        assert 0 <= final[key] <= 1 and (final[key] * 64) == pytest.approx(round(final[key] * 64))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


# ---------------------------------------------------------------- evaluation against the definition


class LookupModel(nn.Module):
    """Returns row i of a fixed logit table for an image whose pixels all equal i."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[(x[:, 0, 0, 0] * 255).round().long()]


def test_evaluate_matches_the_top_k_definition() -> None:
    g = torch.Generator().manual_seed(3)
    n, k = 200, 10
    table = torch.randn(n, k, generator=g)
    labels = torch.randint(k, (n,), generator=g)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    res = evaluate(LookupModel(table), images, labels, torch.zeros(1), torch.ones(1), batch_size=7)
    # top-k error (the lecture's ILSVRC metric): the label is not among the k highest scores
    rank = (table > table.gather(1, labels[:, None])).sum(1)  # how many classes score higher
    assert res["top1"] == pytest.approx(float((rank == 0).float().mean()))
    assert res["top5"] == pytest.approx(float((rank < 5).float().mean()))
    assert res["loss"] == pytest.approx(float(F.cross_entropy(table, labels)), rel=1e-6)
    assert 0 < res["top1"] < res["top5"] < 1


# ---------------------------------------------------------------- non-finite loss


def inject_nan_at(monkeypatch: pytest.MonkeyPatch, global_step: int) -> None:
    """Make the batch of ``global_step`` (1-based) NaN: its loss and gradient are NaN."""
    real = loop._augment
    calls = 0

    def augment(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        x, target = real(*args)
        return (torch.full_like(x, math.nan), target) if calls == global_step else (x, target)

    monkeypatch.setattr(loop, "_augment", augment)


def test_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    inject_nan_at(monkeypatch, 11)  # epoch 2, step 3
    cfg = tiny_config("--epochs", "2", "--checkpoint-every", "2", "--output", str(out))
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 2, step 3 \(global step 11\)"):
        train(cfg)
    state = load_state(out / "checkpoint.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 2)  # after global step 10, not after 11
    assert all(bool(torch.isfinite(t).all()) for t in state["model"].values() if t.is_floating_point())
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(out)]) == 0  # the kept checkpoint finishes the run
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_huge_lr_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = tiny_config("--epochs", "1", "--lr", "1e30", "--sched", "constant", "--checkpoint-every", "1")
    cfg = dataclasses.replace(cfg, output=str(out))
    with pytest.raises(TrainingError) as err:
        train(cfg)
    # a non-finite loss or gradient at step N, or weights that overflowed in step N (caught before saving)
    found = re.search(
        r"non-finite (?:loss|gradient) at epoch 1, step (\d+) |after global step (\d+);", str(err.value)
    )
    assert found, str(err.value)
    step = int(found.group(1) or found.group(2))
    assert step > 1  # the first step, taken at a sane initialisation, is finite
    state = load_state(out / "checkpoint.pt")
    assert state["step_in_epoch"] == step - 1  # the checkpoint before the bad step, not overwritten
    assert all(bool(torch.isfinite(t).all()) for t in state["model"].values() if t.is_floating_point())


def test_nan_with_on_nonfinite_skip_continues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    inject_nan_at(monkeypatch, 11)
    final = train(tiny_config("--epochs", "2", "--on-nonfinite", "skip", "--output", str(out)))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite_skipped"] for r in rows] == [0, 1]
    assert final["test_top1"] is not None
    # neither the weights nor batch norm's running statistics saw the NaN batch
    state = load_state(out / "checkpoint.pt")["model"]
    assert all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())
    assert int(state["stem.1.num_batches_tracked"]) == 2 * STEPS_PER_EPOCH - 1


# ---------------------------------------------------------------- bad options fail before any data is read


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the dataset was loaded before the options were checked")

    monkeypatch.setattr(loop, "load_dataset", fail)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "0"], r"--lr must be a positive number; got 0"),
        (["--lr", "-0.1"], r"--lr must be a positive number"),
        (["--epochs", "0"], r"--epochs must be >= 1; got 0"),
        (["--batch-size", "0"], r"--batch-size must be >= 1"),
        (["--drop-path", "1.5"], r"--drop-path must be in \[0, 1\); got 1.5"),
        (["--drop", "1.0"], r"--drop must be in \[0, 1\)"),
        (["--model", "resnet2O"], r"unknown model 'resnet2O'.*did you mean .*resnet20"),
        (["--dataset", "fashion_mnist"], r"unknown dataset 'fashion_mnist'.*did you mean fashion-mnist"),
        (["--opt", "sgdd"], r"unknown --opt 'sgdd'"),
        (["--sched", "cosin"], r"unknown --sched 'cosin'"),
        (["--norm", "batchh"], r"batchh"),
        (["--warmup-epochs", "5", "--epochs", "2"], r"--warmup-epochs .* shorter than --epochs"),
        (["--threads", "0"], r"--threads must be >= 1"),
        (["--test-subset", "0"], r"--test-subset must be >= 1"),
        (["--model-kwargs", "no_such_arg=1"], r"fmnet does not take .*no_such_arg"),
        (["--model-kwargs", "num_classes=3"], r"duplicates a trainer option"),
    ],
)
def test_bad_options_raise_before_loading_data(
    flags: list[str], message: str, no_data: None, tmp_path: Path
) -> None:
    cfg = tiny_config(*flags, "--output", str(tmp_path / "run"))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=message) as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert time.perf_counter() - t0 < 5


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--epochs", "1", "--output", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match=r"already holds a run .*--resume"):
        train(tiny_config("--epochs", "1", "--output", str(out)))
    assert (out / "checkpoint.pt").read_bytes() == before


def test_train_restores_the_process_settings_it_changes(tmp_path: Path) -> None:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    train(
        tiny_config(
            "--epochs", "1", "--train-subset", "64", "--threads", "2", "--output", str(tmp_path / "run")
        )
    )
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)


def test_whiten_makes_the_stem_a_frozen_whitening_of_the_training_patches(tmp_path: Path) -> None:
    """``--whiten``: the saved stem whitens the training images' 3x3 patches (output covariance
    I for the first half of the filters, the eps aside) and training left it untouched."""
    from cnnkit.data.sources import normalize
    from cnnkit.layers.init import whiten_conv_
    from cnnkit.run import load_run

    kwargs = ["--model-kwargs", "widths=[8,16,32]", "stem_width=8", "stem_norm=false"]
    cfg = tiny_config("--whiten", "--epochs", "1", "--output", str(tmp_path / "w"), *kwargs)
    train(cfg)
    model, _ = load_run(tmp_path / "w")
    assert yaml.safe_load((tmp_path / "w" / "config.yaml").read_text())["whiten"] is True
    data = loop._load_data(cfg)
    mean, std = data.mean_std()
    x = normalize(data.train_x, mean, std)
    w = model.stem[0].weight.detach()
    y = F.conv2d(x, w[:4]).transpose(0, 1).flatten(1)  # 4 of the 8 filters: the leading eigenvectors
    cov = y @ y.T / y.shape[1]
    torch.testing.assert_close(cov, torch.eye(4), atol=0.05, rtol=0)
    torch.testing.assert_close(w[4:], -w[:4])
    ref = nn.Conv2d(1, 8, 3)  # the whitening of all 256 training images, computed afresh
    whiten_conv_(ref, x)
    r = ref.weight.detach()
    diff = torch.minimum((w - r).flatten(1).norm(dim=1), (w + r).flatten(1).norm(dim=1))  # eigenvector signs
    assert float(diff.max()) < 1e-4 * float(r.abs().max())  # the epoch's steps left the stem as it was
    with pytest.raises(ValueError, match="--whiten replaces the first convolution's weights"):
        train(tiny_config("--whiten", "--pretrained"))
