"""The lab runner: arms train through the trainer into OUTPUT/runs/<experiment>/<arm>-seed<k>/,
cached runs are never retrained, a changed config is refused, a stopped run is a result,
and the test split the lab evaluates on is the trainer's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cnnkit.lab import runner
from cnnkit.lab.common import load_model, load_test_split
from cnnkit.lab.figures import new_figure, save_figure
from cnnkit.lab.report import render_report
from cnnkit.lab.spec import BUDGETS, Arm, Budget, Context, Experiment, FigureRef, Table, Verdict, combine
from cnnkit.train import loop

TINY = Budget(epochs=1, train_subset=128, test_subset=64, seeds=2, batch_size=32, dataset="synthetic")
ARM = Arm(
    "tiny",
    "fmnet",
    {"model_kwargs": {"widths": [8, 16, 32], "stem_width": 8}, "image_size": 12, "threads": 1},
)


def _measure(ctx: Context) -> dict[str, Any]:
    from cnnkit.train.loop import evaluate

    numbers: dict[str, Any] = {"top1": ctx.top1("tiny"), "errors": [r.error for r in ctx.runs["tiny"]]}
    runs = ctx.ok_runs("tiny")
    if runs:
        model, m, s = load_model(runs[0])
        x, y = load_test_split(ctx)
        numbers["relab_top1"] = evaluate(model, x, y, m, s)["top1"]
        numbers["n_test"] = len(y)
    return numbers


def _judge(n: dict[str, Any]) -> Verdict:
    return combine([("trained", bool(n["top1"]) or None)], f"{len(n['top1'])} run(s)")


def _figures(ctx: Context, n: dict[str, Any]) -> list[FigureRef]:
    fig = new_figure(3, 2)
    fig.add_subplot().plot([0, 1], [0, 1])
    return [save_figure(fig, ctx, "line", "a line")]


def tiny_experiment(budget: Budget = TINY, name: str = "tiny") -> Experiment:
    return Experiment(
        name=name,
        title="tiny",
        claim="a tiny net trains",
        slide="none",
        rule="trained: reproduced",
        budgets=dict.fromkeys(BUDGETS, budget),
        measure=_measure,
        judge=_judge,
        tables=lambda n: [Table("t", ["a"], [[1]])],
        figures=_figures,
        arms=(ARM,),
    )


def test_runs_are_trained_by_the_trainer_cached_and_evaluated_on_the_trainers_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = tiny_experiment()
    result = runner.run_experiment(exp, "smoke", output=tmp_path, device="cpu")
    for seed in (0, 1):
        folder = tmp_path / "runs" / "tiny" / f"tiny-seed{seed}"
        for f in ("config.yaml", "metrics.jsonl", "model.safetensors", "final.json"):
            assert (folder / f).is_file(), f
        final = json.loads((folder / "final.json").read_text())
        assert final["epochs"] == 1 and final["model"] == "fmnet"
    saved = json.loads((tmp_path / "tiny" / "result.json").read_text())
    assert saved["verdict"]["verdict"] == "reproduced" == result["verdict"]["verdict"]
    assert [r["seed"] for r in saved["runs"]] == [0, 1]
    assert saved["figures"] == [{"file": "tiny/line.png", "caption": "a line"}]
    # the lab's test split is the trainer's: the same model scores exactly the trainer's figure
    n = saved["numbers"]
    assert n["n_test"] == 64
    assert n["relab_top1"] == pytest.approx(n["top1"][0], abs=0)

    # a second run reads the cache: the trainer must not be called again
    def no_training(cfg: Any) -> dict[str, Any]:
        raise AssertionError(f"retrained {cfg.output}")

    monkeypatch.setattr(loop, "train", no_training)
    again = runner.run_experiment(exp, "smoke", output=tmp_path, device="cpu")
    assert again["numbers"]["top1"] == saved["numbers"]["top1"]
    # the cost from scratch is the runs' recorded training and evaluation, cached or not
    finals = [json.loads((tmp_path / r["run_dir"] / "final.json").read_text()) for r in saved["runs"]]
    cost = sum(f["train_seconds"] + f["eval_seconds"] for f in finals)
    assert again["compute_seconds"] == pytest.approx(cost) and saved["compute_seconds"] == pytest.approx(cost)
    page = render_report(tmp_path)
    assert page.name == "report.html" and (tmp_path / "report.md").is_file()
    md = (tmp_path / "report.md").read_text()
    assert "`cnnkit lab run all --budget smoke`" in md and f"| {cost / 60:.1f} |" in md


def test_a_changed_config_is_refused_unless_retrained(tmp_path: Path) -> None:
    one_seed = Budget(epochs=1, train_subset=128, test_subset=64, seeds=1, batch_size=32, dataset="synthetic")
    runner.run_experiment(tiny_experiment(one_seed), "smoke", output=tmp_path, device="cpu")
    longer = Budget(epochs=2, train_subset=128, test_subset=64, seeds=1, batch_size=32, dataset="synthetic")
    with pytest.raises(ValueError, match=r"trained with another config \(epochs: 1 -> 2\).*--retrain"):
        runner.run_experiment(tiny_experiment(longer), "smoke", output=tmp_path, device="cpu")
    result = runner.run_experiment(
        tiny_experiment(longer), "smoke", output=tmp_path, device="cpu", retrain=True
    )
    history = (tmp_path / "runs" / "tiny" / "tiny-seed0" / "metrics.jsonl").read_text().splitlines()
    assert len(history) == 2 and result["verdict"]["verdict"] == "reproduced"


def test_a_config_field_newer_than_the_cached_run_counts_as_its_default(tmp_path: Path) -> None:
    """A run trained before a field existed (its config.yaml lacks it) ran the field's default:
    still cached; a cached value that differs from the wanted one is still refused."""
    import yaml

    one_seed = Budget(epochs=1, train_subset=128, test_subset=64, seeds=1, batch_size=32, dataset="synthetic")
    runner.run_experiment(tiny_experiment(one_seed), "smoke", output=tmp_path, device="cpu")
    config = tmp_path / "runs" / "tiny" / "tiny-seed0" / "config.yaml"
    saved = yaml.safe_load(config.read_text())
    assert saved["tta_shift"] == 0
    del saved["tta_shift"]  # as written before --tta-shift existed
    config.write_text(yaml.safe_dump(saved))
    again = runner.run_experiment(tiny_experiment(one_seed), "smoke", output=tmp_path, device="cpu")
    assert again["runs"][0]["test_top1"] is not None
    saved["smoothing"] = 0.3  # a value the arm does not want
    config.write_text(yaml.safe_dump(saved))
    with pytest.raises(ValueError, match=r"smoothing: 0.3 -> 0.0"):
        runner.run_experiment(tiny_experiment(one_seed), "smoke", output=tmp_path, device="cpu")


def test_a_run_the_trainer_stops_is_recorded_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def diverge(cfg: Any) -> dict[str, Any]:
        Path(cfg.output).mkdir(parents=True, exist_ok=True)
        raise loop.TrainingError("non-finite loss at epoch 1, step 3")

    monkeypatch.setattr(loop, "train", diverge)
    one_seed = Budget(epochs=1, train_subset=128, test_subset=64, seeds=1, batch_size=32, dataset="synthetic")
    result = runner.run_experiment(tiny_experiment(one_seed), "smoke", output=tmp_path, device="cpu")
    failed = tmp_path / "runs" / "tiny" / "tiny-seed0" / "failed.json"
    assert json.loads(failed.read_text())["error"] == "non-finite loss at epoch 1, step 3"
    assert result["numbers"]["errors"] == ["non-finite loss at epoch 1, step 3"]
    assert result["verdict"]["verdict"] == "inconclusive"  # the judge saw no finished run
    # cached as well: not tried again
    monkeypatch.setattr(loop, "train", lambda cfg: pytest.fail("retried a stopped run"))
    runner.run_experiment(tiny_experiment(one_seed), "smoke", output=tmp_path, device="cpu")


def test_arm_config_layers_defaults_budget_and_arm(tmp_path: Path) -> None:
    budget = Budget(
        epochs=3,
        train_subset=100,
        test_subset=50,
        batch_size=10,
        overrides={"lr": 0.5, "weight_decay": 0.0, "model_kwargs": {"stem_width": 4}},
    )
    arm = Arm(
        "a",
        "fmnet",
        {"lr": 0.2, "warmup_epochs": lambda b: b.epochs / 3, "model_kwargs": {"widths": [4, 8, 8]}},
    )
    exp = tiny_experiment(budget)
    exp = Experiment(**{**exp.__dict__, "arms": (arm,)})
    cfg = runner.arm_config(exp, arm, 2, "quick", output=tmp_path, dataset="mnist", device="cpu")
    assert (cfg.model, cfg.dataset, cfg.seed, cfg.epochs, cfg.batch_size) == ("fmnet", "mnist", 2, 3, 10)
    assert (cfg.train_subset, cfg.test_subset) == (100, 50)
    assert (
        cfg.lr == 0.2 and cfg.weight_decay == 0.0 and cfg.warmup_epochs == 1.0
    )  # arm over budget over default
    assert cfg.model_kwargs == {"stem_width": 4, "widths": [4, 8, 8]}
    assert cfg.output == str(tmp_path / "runs" / "tiny" / "a-seed2")
    assert cfg.progress is False and cfg.recipe == "plain"


def test_run_experiments_checks_every_name_first(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown experiment 'separabel' \(did you mean separable\?\)"):
        runner.run_experiments(["dilation", "separabel"], "smoke", output=tmp_path)
    assert not (tmp_path / "dilation").exists()
