"""Defaults fitted to what is trained (cnnkit.train.defaults): the rules on fixed numbers, the
sources of every value, --print-config against what a run writes, and divergence in the
first epoch (a stop for a rate the user gave, a restart for one cnnkit chose)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from cnnkit import cli
from cnnkit.train import defaults
from cnnkit.train.config import RECIPES, TrainConfig, config_with_sources, resolve_config, validate_config
from cnnkit.train.defaults import FAMILY_LR, adapt, batch_rule
from cnnkit.train.loop import TrainingError, train

# a small synthetic run under the default recipe (the adaptive one); 2,048 images of 12x12
SMALL = [
    "--dataset", "synthetic", "--image-size", "12", "--train-subset", "2048", "--test-subset", "64",
    "--model", "fmnet", "--model-kwargs", "widths=[8,16,32]", "stem_width=8",
    "--threads", "1", "--no-progress", "--epochs", "1",
]  # fmt: skip


def resolved(*flags: str) -> tuple[TrainConfig, dict[str, str]]:
    args = cli.build_parser().parse_args(["train", *flags])
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "debug", "print_config")}
    return resolve_config(given)


def fitted(n_train: int, *flags: str, family: str = "resnet") -> tuple[TrainConfig, dict[str, str]]:
    cfg, sources = resolved(*flags)
    return adapt(cfg, sources, n_train=n_train, family=family, tuned_for="fmnet")


RESIDUAL = defaults.Traits(residual_branches=16, normalised=True)  # ResNet-50's
UNNORMALISED = defaults.Traits(residual_branches=0, normalised=False)


def test_batch_rule_leaves_25_steps_an_epoch() -> None:
    assert batch_rule(60_000) == 256  # Fashion-MNIST: 234 steps
    assert batch_rule(10_000) == 256  # 39 steps
    assert batch_rule(1_400) == 32  # 43 steps (64 would give 21)
    assert batch_rule(300) == 16  # the floor, even below 25 steps
    assert batch_rule(10) == 10  # never larger than the data
    assert all(n // batch_rule(n) >= 25 for n in range(16 * 25, 70_000, 997))


def test_family_rate_scales_with_the_square_root_of_the_batch() -> None:
    cfg, sources = fitted(1_400, "--model", "resnet18")
    assert cfg.batch_size == 32
    rule = FAMILY_LR["resnet"]
    assert cfg.lr == pytest.approx(rule.lr * math.sqrt(32 / rule.per))  # 0.1 at 256 -> 0.0354 at 32
    assert sources["lr"].startswith("family rule") and sources["batch_size"].startswith("data rule")
    # the model the recipe was tuned for keeps the recipe's rate at every batch
    cfg, sources = fitted(60_000, family="fmnet")
    assert (cfg.lr, cfg.batch_size) == (RECIPES["default"]["lr"], 256)
    cfg, sources = fitted(1_400, family="fmnet")
    assert (cfg.lr, cfg.batch_size) == (RECIPES["default"]["lr"], 32) and "kept at batch 32" in sources["lr"]


def test_vgg_with_batch_norm_takes_half_a_resnets_rate() -> None:
    bn, plain = defaults.Traits(0, True), UNNORMALISED
    cfg, sources = resolved("--model", "vgg11_bn")
    cfg, sources = adapt(cfg, sources, n_train=1_400, family="vgg", tuned_for="fmnet", traits=bn)
    assert cfg.lr == pytest.approx(0.05 * math.sqrt(32 / 256)) and "vgg_bn" in sources["lr"]
    cfg, sources = resolved("--model", "vgg11")
    cfg, sources = adapt(cfg, sources, n_train=1_400, family="vgg", tuned_for="fmnet", traits=plain)
    assert cfg.lr == pytest.approx(0.01 * math.sqrt(32 / 256)) and "Simonyan" in sources["lr"]


def test_flips_only_where_a_flip_keeps_the_label() -> None:
    for dataset, keeps in (("fashion-mnist", True), ("cifar10", True), ("mnist", False), ("kmnist", False)):
        cfg, sources = fitted(60_000, "--dataset", dataset)
        assert cfg.hflip == (0.5 if keeps else 0.0), dataset
        assert sources["hflip"].startswith("data rule")
    cfg, sources = fitted(60_000, "--dataset", "mnist", "--hflip", "0.3")  # a flag is never changed
    assert (cfg.hflip, sources["hflip"]) == (0.3, "flag")


def test_warm_up_has_a_floor_in_steps_but_a_flag_is_kept() -> None:
    # 1,400 images, batch 32: 43 steps an epoch; 10 epochs: 430 steps; floor min(100, 43) = 43 > 21.5
    cfg, sources = fitted(1_400, "--epochs", "10", "--warmup-epochs", "0.1")
    assert cfg.warmup_epochs == 0.1 and sources["warmup_epochs"] == "flag"
    cfg, sources = fitted(1_400, "--epochs", "10")
    steps = 1_400 // 32
    assert round(cfg.warmup_epochs * steps) == min(100, int(0.1 * steps * 10))
    assert sources["warmup_epochs"].startswith("data rule")


def test_residual_branches_start_at_zero_in_deep_residual_nets() -> None:
    # Goyal et al. 2017, sec. 5.1: each residual branch's last BN scale is 0, so every block
    # starts as its shortcut: a stride-1 basic block returns relu(x) for any input.
    import torch

    from cnnkit.models import create_model

    # the branches He et al. 2016 build: 3+4+6+3 bottlenecks, 2+2+2+2 and 3x3 basic blocks;
    # ShuffleNet's 16 units less the 3 that downsample by concatenation (Zhang et al. 2018)
    branches = {"resnext50_32x4d": 16, "shufflenet_v1_g3": 13, "resnet20": 9, "resnet18": 8, "seresnet18": 8}
    assert {m: defaults.model_traits(m).residual_branches for m in branches} == branches
    assert not any(
        defaults.model_traits(m).residual_branches for m in ("plain18", "vgg11_bn", "mobilenet_v1", "fmnet")
    )
    cfg, sources = resolved("--model", "resnet20")
    cfg, sources = adapt(cfg, sources, n_train=1_400, family="resnet", tuned_for="fmnet", traits=RESIDUAL)
    assert cfg.model_kwargs == {"zero_init_residual": True}
    assert sources["model_kwargs"].startswith("family rule: 16 residual branches")
    model = create_model("resnet20", num_classes=10, in_chans=1, **cfg.model_kwargs).eval()
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(model.layer1[0](x), torch.relu(x))
    # a shallow residual net is left as built: its branches would learn only through their scales
    shallow = defaults.Traits(residual_branches=8, normalised=True)
    cfg, sources = resolved("--model", "resnet18")
    assert (
        adapt(cfg, sources, n_train=1_400, family="resnet", tuned_for="fmnet", traits=shallow)[0].model_kwargs
        == {}
    )
    # a flag is kept, and the model the recipe was tuned for is left as tuned
    cfg, sources = resolved("--model", "resnet20", "--model-kwargs", "widths=[8,16,32]")
    cfg, _ = adapt(cfg, sources, n_train=1_400, family="resnet", tuned_for="fmnet", traits=RESIDUAL)
    assert cfg.model_kwargs == {"widths": [8, 16, 32]}
    cfg, sources = resolved()
    cfg, _ = adapt(cfg, sources, n_train=60_000, family="fmnet", tuned_for="fmnet", traits=RESIDUAL)
    assert cfg.model_kwargs == RECIPES["default"]["model_kwargs"]  # no zero-init added to the tuned model


def test_a_model_without_normalisation_gets_he_init() -> None:
    # He et al. 2015: Var[w] = 2 / fan_in keeps a ReLU signal's scale through the layers;
    # torch's default (1 / (3 fan_in)) shrinks it, which stalls an unnormalised stack at chance.
    import torch

    from cnnkit.models import create_model

    assert [defaults.model_traits(m).normalised for m in ("alexnet", "zfnet", "vgg11", "vgg11_bn")] == [
        False, False, False, True,
    ]  # fmt: skip
    cfg, sources = resolved("--model", "vgg11")
    cfg, sources = adapt(cfg, sources, n_train=1_400, family="vgg", tuned_for="fmnet", traits=UNNORMALISED)
    assert cfg.init == "kaiming_conv" and sources["init"].startswith("family rule")
    cfg, sources = resolved("--model", "vgg11", "--init", "xavier_normal")  # a flag is kept
    assert adapt(cfg, sources, n_train=1_400, family="vgg", tuned_for="fmnet", traits=UNNORMALISED)[
        0
    ].init == ("xavier_normal")

    def signal(init: str) -> tuple[float, float]:  # the last conv block's std, the first loss
        torch.manual_seed(0)
        model = create_model("vgg11", num_classes=10, small_input=True)
        if init != "default":
            from cnnkit.layers.init import init_weights

            init_weights(model, init)
        x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            return float(model.features(x).std()), float(loss)

    # He init in the convolutions keeps the signal ...
    assert signal("kaiming_conv")[0] > 10 * signal("default")[0]
    # ... and the small classifier (N(0, 0.01), torchvision's VGG init) starts near chance, ln 10 = 2.30,
    # where He init in the three wide linear layers too starts several times above it
    assert signal("kaiming_conv")[1] == pytest.approx(math.log(10), abs=0.3)
    assert signal("kaiming_normal")[1] > 2 * math.log(10)


def test_plain_recipe_and_given_values_adapt_nothing() -> None:
    cfg, sources = resolved("--recipe", "plain", "--model", "resnet18")
    assert adapt(cfg, sources, n_train=1_400, family="resnet", tuned_for=None) == (cfg, sources)
    cfg, sources = fitted(1_400, "--lr", "0.3", "--batch-size", "64")
    assert (cfg.lr, cfg.batch_size) == (0.3, 64)


def test_accurate_recipe_with_another_model_drops_fmnets_settings() -> None:
    cfg, sources = config_with_sources({"recipe": "accurate", "model": "resnet18"})
    assert cfg.model_kwargs == {} and sources["model_kwargs"] == "default"
    assert sources["lr"] == "default"  # then the family rule
    assert cfg.model_ema and cfg.tta  # the recipe's general settings stay
    validate_config(cfg)  # builds resnet18 on the meta device: no fmnet widths passed to it


def test_print_config_is_what_the_run_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert cli.main(["train", *SMALL, "--output", str(out), "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert not out.exists()  # --print-config trains nothing
    assert (
        "batch_size: 64  # data rule" in printed
        and "lr: 0.2  # recipe (0.2, tuned for fmnet; kept" in printed
    )
    assert cli.main(["train", *SMALL, "--output", str(out)]) == 0
    assert (out / "config.yaml").read_text() == printed
    assert yaml.safe_load(printed)["batch_size"] == 64
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(
        "fmnet on synthetic (2,048 images 1x12x12, 10 classes): 1 epochs, batch 64 (data rule)"
    )


def test_a_model_still_at_chance_after_epoch_one_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a rate so low that nothing moves: the test loss stays at ln K and top-1 at chance (1/K)
    cfg, sources = resolved(*SMALL, "--lr", "1e-9", "--output", str(tmp_path / "still"))
    final = train(cfg, sources)
    assert final["test_top1"] < 0.2  # synthetic has 10 classes
    assert "is still at chance" in capsys.readouterr().err
    cfg, sources = resolved(*SMALL, "--epochs", "3", "--output", str(tmp_path / "learns"))
    assert train(cfg, sources)["test_top1"] > 0.3  # well above chance (0.1)
    assert "is still at chance" not in capsys.readouterr().err


def test_divergence_with_a_given_rate_stops_and_keeps_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg, sources = resolved(*SMALL, "--lr", "1000", "--output", str(out))
    with pytest.raises(
        TrainingError, match=r"loss diverged in epoch 1, step \d+ .* at lr 1000 \(flag\); nothing"
    ):
        train(cfg, sources)
    assert not out.exists()


def test_divergence_watch_on_fixed_losses() -> None:
    from cnnkit.train.divergence import Diverged, DivergenceWatch

    # chance ln 10 = 2.30: limit max(6.9, 7.3, 2 x first loss) on the running mean (decay 0.9)
    watch = DivergenceWatch(10)
    for step, loss in enumerate([2.4, 2.2, 30.0, 1.9]):
        watch.update(step, loss)  # one spike: the running mean peaks at 5.14, a transient
    with pytest.raises(Diverged, match=r"running loss 7\.34, far above the chance level"):
        watch.update(4, 30.0)  # a second spike takes it to 7.34
    with pytest.raises(Diverged, match="loss nan"):
        DivergenceWatch(10).update(0, math.nan)
    # a net that starts far above chance (AlexNet-like, no normalisation) sets its own limit
    high_start = DivergenceWatch(10)
    for step, loss in enumerate([8.0, 12.0, 9.0, 6.0, 3.0]):
        high_start.update(step, loss)
    with pytest.raises(Diverged, match="far above"):
        for step in range(5, 40):
            high_start.update(step, 40.0)
    stuck = DivergenceWatch(10)  # worse than guessing for 25 steps: 3.5 > 1.5 ln 10 = 3.45
    for step in range(24):
        stuck.update(step, 3.5)
    with pytest.raises(Diverged, match=r"above 3\.45 for 25 steps"):
        stuck.update(24, 3.5)
    rising = DivergenceWatch(10)
    with pytest.raises(Diverged, match="rose for 25 steps"):
        for step in range(100):
            rising.update(step, 1.0 + 0.05 * step)  # a steady climb from 1.0, below the limit


def test_divergence_with_a_chosen_rate_restarts_lower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a family rule gone wrong: fmnet's rate 2,000x too high, and no recipe rate tuned for it
    monkeypatch.setitem(defaults.FAMILY_LR, "fmnet", defaults.FamilyLR(400.0, 64, "a bad rule"))
    monkeypatch.setattr("cnnkit.train.loop.RECIPE_TUNED", {})
    out = tmp_path / "run"
    cfg, sources = resolved(*SMALL, "--output", str(out))
    final = train(cfg, sources)
    err = capsys.readouterr().err
    assert "at lr 400 (family rule" in err and "restarting from the initial weights at lr 100\n" in err
    assert final["test_top1"] is not None
    written = yaml.safe_load((out / "config.yaml").read_text())["lr"]
    restarts = round(math.log(400.0 / written, 4))
    assert restarts >= 1 and written == pytest.approx(400.0 / 4**restarts)
    assert "/ 4 after a divergence" in (out / "config.yaml").read_text()


def test_lr_auto_runs_the_range_test_and_records_its_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    cfg, sources = resolved(*SMALL, "--lr", "auto", "--output", str(out))
    assert cfg.lr_find and sources["lr"] == "auto"
    train(cfg, sources)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("fmnet on synthetic") and "(auto)" in lines[0]
    assert lines[1].startswith("--lr auto: lr ") and "by steep" in lines[1]
    text = (out / "config.yaml").read_text()
    written = yaml.safe_load(text)["lr"]
    assert 1e-4 <= written <= 1.0 and f"lr: {written}  # auto: lr " in text
    assert (out / "lr_find.png").stat().st_size > 0
    assert yaml.safe_load((out / "lr_find.json").read_text())["lr"] == written


@pytest.mark.parametrize("precise", [2048, 0])
def test_precise_bn_sets_the_population_statistics_of_the_training_images(
    tmp_path: Path, precise: int
) -> None:
    # PreciseBN (Wu & Johnson 2021): before evaluating, each BN layer's running mean is the mean
    # of its input over the training images under the final weights, not a running average of
    # the batches it saw while the weights moved. Checked on the first BN layer.
    import torch

    from cnnkit.data.sources import normalize
    from cnnkit.run import load_run
    from cnnkit.train.loop import _load_data

    out = tmp_path / "run"
    cfg, sources = resolved(*SMALL, "--precise-bn", str(precise), "--lr", "0.5", "--output", str(out))
    assert cfg.precise_bn == precise
    train(cfg, sources)
    model, meta = load_run(out)
    data = _load_data(cfg)
    x = normalize(data.train_x, torch.tensor(meta["mean"]), torch.tensor(meta["std"]))
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen: list[torch.Tensor] = []
    bn.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        model.eval()(x)
    population = seen[0].mean(dim=(0, 2, 3))
    close = torch.allclose(bn.running_mean, population, atol=1e-4)
    assert close == bool(precise)  # without it, the running average of the moving weights' batches


def test_the_default_recipe_re_estimates_batch_norm_statistics() -> None:
    assert resolved()[0].precise_bn == 512 and resolved("--recipe", "plain")[0].precise_bn == 0
