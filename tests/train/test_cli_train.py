"""`cnnkit train` options (YAML defaults, flag overrides, early errors) and the commands that
use a trained run: `cnnkit eval`, `cnnkit ensemble`, `cnnkit predict`.

The figures the commands print are recomputed here from the run's ``model.safetensors``
with the definitions written out (top-k: the label among the k highest scores; the
fusion: the mean of the members' softmaxes, the lecture's ILSVRC 2016 ensemble).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from cnnkit import cli
from cnnkit.data.sources import load_dataset
from cnnkit.models.registry import create_model
from cnnkit.train import loop
from cnnkit.train.config import (
    RECIPES,
    TrainConfig,
    config_from_args,
    load_config,
    parse_kwargs,
    resume_config,
)
from cnnkit.train.ensemble import ensemble_eval


def parse_train(*argv: str) -> TrainConfig:
    args = cli.build_parser().parse_args(["train", *argv])
    return config_from_args({k: v for k, v in vars(args).items() if k not in ("func", "command", "debug")})


# ---------------------------------------------------------------- configuration


def test_yaml_gives_defaults_and_flags_override(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: resnet20\nlr: 0.3\nepochs: 7\nmixup: 0.2\ndecay_milestones: [2, 4]\n"
        "model_kwargs: {stem_width: 4, widths: [8, 16, 32]}\n"
    )
    cfg = parse_train("-c", str(path), "--lr", "0.05", "--model-kwargs", "stem_width=8")
    assert (cfg.model, cfg.lr, cfg.epochs, cfg.mixup, cfg.decay_milestones) == (
        "resnet20",
        0.05,
        7,
        0.2,
        [2, 4],
    )
    assert cfg.model_kwargs == {"stem_width": 8, "widths": [8, 16, 32]}  # merged per key, the flag wins
    assert cfg.batch_size == TrainConfig().batch_size  # neither file nor flag: the dataclass default
    # with no file and no flag, the default recipe's value (README's main job)
    assert parse_train().lr == RECIPES["default"]["lr"]
    assert parse_train("--recipe", "plain").lr == TrainConfig().lr


def test_unknown_yaml_key_names_the_closest_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epoch: 3\n")
    with pytest.raises(ValueError, match=r"unknown option 'epoch' \(did you mean epochs"):
        load_config(path)
    assert cli.main(["train", "-c", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnkit: error:") and "did you mean epochs" in err and "\n" not in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr: fast\n", r"lr must be float; got 'fast'"),
        ("epochs: 2.5\n", r"epochs must be int"),
        ("decay_milestones: 30\n", r"decay_milestones must be a list of int"),
        ("model_kwargs: [1, 2]\n", r"model_kwargs must be a mapping"),
        ("- lr\n", r"must hold a mapping"),
        ("lr: [0.1\n", r"not valid YAML"),
    ],
)
def test_badly_typed_yaml_is_an_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_model_kwargs_flag_parses_plain_data() -> None:
    assert parse_kwargs(["widths=[8,16,32]", "stem_width=8", "act_layer=gelu", "logit_scale=0.5"]) == {
        "widths": [8, 16, 32],
        "stem_width": 8,
        "act_layer": "gelu",
        "logit_scale": 0.5,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_kwargs(["widths"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--model-kwargs", "1x=2"])


def test_resume_config_takes_the_runs_config_with_overrides(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("model: resnet20\nepochs: 3\nlr: 0.2\noutput: elsewhere\n")
    cfg = resume_config(tmp_path, {"epochs": 5, "resume": "x", "output": "y", "config": None})
    assert (cfg.model, cfg.epochs, cfg.lr) == ("resnet20", 5, 0.2)
    assert cfg.resume == cfg.output == str(tmp_path)
    with pytest.raises(ValueError, match="not a cnnkit run folder"):
        resume_config(tmp_path / "nothing", {})


def test_cli_bad_value_is_one_line_before_any_data(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the dataset was loaded before the options were checked")

    monkeypatch.setattr(loop, "load_dataset", fail)
    for flags, message in (
        (["--lr", "0"], "--lr must be a positive number"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--drop-path", "1.5"], "--drop-path must be in [0, 1)"),
        (["--model", "fmnett"], "did you mean fmnet"),
        (["--dataset", "fasion-mnist"], "did you mean fashion-mnist"),
    ):
        assert cli.main(["train", *flags, "--output", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("cnnkit: error:") and message in err and "\n" not in err, err
    with pytest.raises(ValueError, match="--lr"):  # --debug: the exception itself, traceback and all
        cli.main(["--debug", "train", "--lr", "0", "--output", str(tmp_path / "run")])


# ---------------------------------------------------------------- eval / ensemble / predict

# the default fmnet (so that `cnnkit eval` can rebuild it from the model name alone) on 28x28
# synthetic images, which is what `cnnkit eval --dataset synthetic` loads
TRAIN = [
    "train", "--dataset", "synthetic", "--train-subset", "256", "--test-subset", "64", "--epochs", "1",
    "--batch-size", "32", "--lr", "0.2", "--sched", "constant", "--threads", "1", "--no-progress",
    "--recipe", "plain",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    out = []
    for seed in (0, 1):
        assert cli.main([*TRAIN, "--seed", str(seed), "--output", str(root / f"seed{seed}")]) == 0
        out.append(root / f"seed{seed}")
    return out


def rebuild(run_dir: Path) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The trained model from model.safetensors, and its standardisation statistics."""
    path = run_dir / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    model = create_model(meta["model"], num_classes=meta["num_classes"], in_chans=meta["in_chans"])
    model.load_state_dict(load_file(str(path)))
    return model.eval(), torch.tensor(meta["mean"]), torch.tensor(meta["std"])


@torch.no_grad()
def probabilities(run_dir: Path, images: torch.Tensor) -> torch.Tensor:
    model, mean, std = rebuild(run_dir)
    x = (images.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return model(x).softmax(1)


def top_k(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    higher = (probs > probs.gather(1, labels[:, None])).sum(1)
    return float((higher < k).float().mean())


def test_eval_json_matches_the_definition(runs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(runs[0]), "--dataset", "synthetic", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    data = load_dataset("synthetic")
    probs = probabilities(runs[0], data.test_x)
    assert out["test_top1"] == pytest.approx(top_k(probs, data.test_y, 1))
    assert out["test_top5"] == pytest.approx(top_k(probs, data.test_y, 5))
    assert out["test_top1"] > 0.2  # it learned something (chance: 0.1)


def test_eval_text_format(runs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert (
        cli.main(["eval", "--checkpoint", str(runs[0] / "model.safetensors"), "--dataset", "synthetic"]) == 0
    )
    assert re.search(r"top-1 \d+\.\d\d%\s+top-5 \d+\.\d\d%", capsys.readouterr().out)


def test_ensemble_fuses_by_mean_softmax(runs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    argv = ["ensemble", *map(str, runs), "--dataset", "synthetic", "--format", "json"]
    assert cli.main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["member"] for r in rows] == [*map(str, runs), "fusion (mean softmax)"]
    data = load_dataset("synthetic")
    probs = [probabilities(r, data.test_x) for r in runs]
    fused = torch.stack(probs).mean(0)
    for row, p in zip(rows, [*probs, fused], strict=True):
        assert row["top1"] == pytest.approx(top_k(p, data.test_y, 1))
        assert row["top5"] == pytest.approx(top_k(p, data.test_y, 5))
    assert cli.main(["ensemble", *map(str, runs), "--dataset", "synthetic"]) == 0
    assert "fusion (mean softmax)" in capsys.readouterr().out


def test_ensemble_eval_against_a_hand_computed_fusion() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (50, 1, 2, 2), dtype=torch.uint8)
    labels = torch.randint(0, 6, (50,))
    members = [
        (nn.Sequential(nn.Flatten(), nn.Linear(4, 6)), torch.tensor([0.5]), torch.tensor([0.25]))
        for _ in range(3)
    ]
    rows = ensemble_eval(members, images, labels, batch_size=16)
    with torch.no_grad():
        probs = [m((images.float() / 255 - mu) / sd).softmax(1) for m, mu, sd in members]
    for row, p in zip(rows, [*probs, torch.stack(probs).mean(0)], strict=True):
        assert row["top1"] == pytest.approx(top_k(p, labels, 1))
        assert row["top5"] == pytest.approx(top_k(p, labels, 5))
    with pytest.raises(ValueError, match="at least one member"):
        ensemble_eval([], images, labels)


def test_predict_gives_the_top_5_labels(
    runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    data = load_dataset("synthetic")
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(data.test_x[i, 0].numpy(), mode="L").save(p)
        paths.append(str(p))
    capsys.readouterr()
    assert cli.main(["predict", "--checkpoint", str(runs[0]), *paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    probs = probabilities(runs[0], data.test_x[:3])
    assert len(lines) == 3
    for line, path, p in zip(lines, paths, probs, strict=True):
        assert line.startswith(path + ": ")
        preds = re.findall(r"(class\d+) (\d+\.\d)%", line)
        assert len(preds) == 5
        assert preds[0][0] == f"class{int(p.argmax())}"
        values = [float(v) for _, v in preds]
        assert values == sorted(values, reverse=True) and sum(values) <= 100.05
        assert values[0] == pytest.approx(100 * float(p.max()), abs=0.051)
    # a bad file anywhere in the list: one error naming it, and no prediction printed before it
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    capsys.readouterr()
    assert cli.main(["predict", "--checkpoint", str(runs[0]), paths[0], str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert re.fullmatch(
        rf"cnnkit: error: {re.escape(str(bad))}: unreadable image .*remove or replace it\n", err
    )


def test_commands_on_a_missing_run_fail_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["eval", "--checkpoint", str(tmp_path / "nope"), "--dataset", "synthetic"],
        ["predict", "--checkpoint", str(tmp_path / "nope"), "x.png"],
        ["ensemble", str(tmp_path / "nope"), "--dataset", "synthetic"],
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("cnnkit: error:") and "nope" in err and "\n" not in err


def test_eval_of_a_run_with_model_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = [
        *TRAIN,
        "--model-kwargs",
        "widths=[8,16,32]",
        "stem_width=8",
        "--norm",
        "layer",
        "--output",
        str(out),
    ]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out), "--dataset", "synthetic", "--format", "json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["test_top1"] <= 1


def test_no_arguments_runs_the_default_recipe() -> None:
    """`cnnkit train` with no flags is the README's main job: the "default" recipe, not the bare fields."""
    from cnnkit.train.config import RECIPES, config_from_args

    cfg = config_from_args({})
    assert cfg.recipe == "default"
    for key, value in RECIPES["default"].items():
        assert getattr(cfg, key) == value, key
    # flags still override the recipe, and `--recipe plain` drops it
    assert config_from_args({"epochs": 1}).epochs == 1
    assert config_from_args({"recipe": "plain"}).hflip == 0.0


def test_default_recipe_keeps_fmnets_own_settings_to_fmnet() -> None:
    """The whitening stem, ReLU and the stem without batch norm were tuned for fmnet; another
    model gets the fields' defaults for them (resnet18's 3x3 stem has 64 channels, more than a
    whitening of 3x3 grey patches fills), the rest of the recipe as it is."""
    from cnnkit.train.config import RECIPES, config_from_args

    other = config_from_args({"model": "resnet18"})
    assert (other.whiten, other.act, other.model_kwargs) == (False, None, {})
    assert (other.model_ema, other.tta, other.epochs) == (True, True, RECIPES["default"]["epochs"])
    mine = config_from_args({"model_kwargs": {"widths": [8, 16, 32]}})
    assert mine.model_kwargs == {"stem_norm": False, "widths": [8, 16, 32]} and mine.whiten


def test_accurate_recipe_trains_the_wide_fmnet_with_ema_and_tta(tmp_path: Path) -> None:
    from cnnkit.models.fmnet import FMNet
    from cnnkit.train.config import config_from_args

    cfg = config_from_args(
        {
            "recipe": "accurate",
            "dataset": "synthetic",
            "epochs": 2,
            "train_subset": 512,
            "test_subset": 64,
            "threads": 1,
            "output": str(tmp_path / "r"),
        }
    )
    assert (cfg.model, cfg.model_ema, cfg.tta, cfg.whiten, cfg.epochs) == ("fmnet", True, True, True, 2)
    final = loop.train(cfg)
    wide = FMNet((64, 128, 256), stem_width=16, stem_norm=False, num_classes=10)
    assert final["params"] == sum(p.numel() for p in wide.parameters())
    assert 0 <= final["test_top1"] <= 1


@pytest.mark.parametrize(
    ("shape", "top_label", "message"),
    [
        ((3, 28, 28), 9, r"run was trained on 1-channel images; d has 3-channel images"),
        ((1, 28, 28), 99, r"run predicts 10 classes; d has labels up to 99"),
    ],
)
def test_eval_refuses_data_the_run_cannot_take(
    shape: tuple[int, int, int], top_label: int, message: str
) -> None:
    from types import SimpleNamespace

    data = SimpleNamespace(image_shape=shape, test_y=torch.tensor([0, top_label]))
    with pytest.raises(ValueError, match=message):
        cli._check_data("run", {"in_chans": 1, "num_classes": 10}, data, "d")
    ok = SimpleNamespace(image_shape=(1, 28, 28), test_y=torch.tensor([0, 9]))
    cli._check_data("run", {"in_chans": 1, "num_classes": 10}, ok, "d")  # the matching data passes


def test_cli_parser_and_help_import_no_torch() -> None:
    """`cnnkit --help` and every subcommand's parser come up without torch (~3 s of imports)."""
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io; from cnnkit import cli; p = cli.build_parser(); "
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit): p.parse_args(['--help'])\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules), 'summary' in out.getvalue())"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["[]", "True"], res.stdout


def test_fmnets_recipe_kwargs_do_not_leak_into_another_models_flag_kwargs() -> None:
    """`--model resnet20 --model-kwargs zero_init_residual=true` under the default recipe: the
    flag's kwargs alone (the recipe's stem_norm is fmnet's; resnet20 would refuse it)."""
    from cnnkit.train.config import config_from_args

    cfg = config_from_args({"model": "resnet20", "model_kwargs": {"zero_init_residual": True}})
    assert cfg.model_kwargs == {"zero_init_residual": True} and not cfg.whiten
