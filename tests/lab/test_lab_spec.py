"""Experiment specs: arms, budgets and verdicts are validated, and every arm of every
experiment is a configuration the trainer accepts at every budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnkit.lab.experiments import EXPERIMENTS, get_experiment
from cnnkit.lab.runner import arm_config
from cnnkit.lab.spec import BUDGETS, Arm, Budget, Experiment, Verdict, combine
from cnnkit.train.config import validate_config

ISSUE_LIST = {
    "separable", "residual", "init", "norm", "regularise", "augment", "schedule", "activation",
    "ensemble", "shuffle", "wide", "se", "dense", "dilation", "transposed", "stack",
    "bottleneck", "cardinality", "multiplier",
}  # fmt: skip
NO_TRAINING = {"dilation", "transposed"}


def test_the_catalogue_holds_every_experiment_of_the_issue() -> None:
    assert set(EXPERIMENTS) == ISSUE_LIST
    for e in EXPERIMENTS.values():
        assert set(e.budgets) == set(BUDGETS)
        assert e.claim and e.rule and e.slide
        assert e.trains == (e.name not in NO_TRAINING)


@pytest.mark.parametrize("name", sorted(ISSUE_LIST - NO_TRAINING))
def test_every_arm_is_a_valid_trainer_config_at_every_budget(name: str, tmp_path: Path) -> None:
    exp = get_experiment(name)
    for budget in BUDGETS:
        for arm in exp.arms:
            cfg = arm_config(exp, arm, 0, budget, output=tmp_path)
            validate_config(cfg)  # builds the model on the meta device with the arm's options
            assert cfg.output.endswith(f"runs/{name}/{arm.name}-seed0")
    smoke = exp.budgets["smoke"]
    assert smoke.dataset == "synthetic" and smoke.epochs == 1


def test_combine_follows_its_rule() -> None:
    assert combine([("a", True), ("b", True)], "").verdict == "reproduced"
    assert combine([("a", True), ("b", False)], "").verdict == "partly"
    assert combine([("a", False), ("b", False)], "").verdict == "not reproduced"
    assert combine([("a", True), ("b", None)], "").verdict == "inconclusive"
    assert combine([], "").verdict == "inconclusive"
    with pytest.raises(ValueError, match="verdict must be one of"):
        Verdict("confirmed", "")


def test_arms_and_budgets_validate() -> None:
    with pytest.raises(ValueError, match="names a folder"):
        Arm("Bad Name", "fmnet")
    with pytest.raises(ValueError, match="'seed' is set by the runner"):
        Arm("a", "fmnet", {"seed": 3})
    with pytest.raises(ValueError, match="epochs, seeds and batch_size >= 1"):
        Budget(epochs=0)
    assert Arm("a", "fmnet", {"lr": lambda b: b.epochs / 10}).resolve(Budget(epochs=5)) == {"lr": 0.5}
    assert get_experiment("dilation").title.startswith("Dilated")
    with pytest.raises(ValueError, match="did you mean residual"):
        get_experiment("residul")


def test_experiment_texts_are_paragraphs_with_white_space_folded() -> None:
    exp = get_experiment("dilation")
    folded = Experiment(**{**exp.__dict__, "claim": "\n    one\n    two  three\n", "notes": " a\tb "})
    assert (folded.claim, folded.notes) == ("one two three", "a b")
    for e in EXPERIMENTS.values():
        for text in (e.title, e.claim, e.slide, e.rule, e.notes):
            assert text == " ".join(text.split())
