"""The ``residual`` experiment (plain vs residual nets at 20 and 56 layers; He et al. 2016): its
verdict rule on fixed numbers, the paper's table beside the measurement, and its standard
budget."""

from __future__ import annotations

from typing import Any

from cnnkit.lab.experiments import residual
from cnnkit.lab.runner import _seeds

TOP1 = {"plain20": [0.85] * 3, "plain56": [0.80] * 3, "resnet20": [0.86] * 3, "resnet56": [0.87] * 3}


def numbers(train_err: dict[str, list[float]], top1: dict[str, list[float]] = TOP1) -> dict[str, Any]:
    """What ``measure`` would give for these final training errors and test top-1s per seed."""
    mean = {k: sum(v) / len(v) if v else float("nan") for k, v in train_err.items()}
    return {
        "train_err": mean,
        "test_top1": {k: sum(v) / len(v) for k, v in top1.items()},
        **residual.depth_effects(train_err, top1),
    }


# the paper's picture: plain-56 ends 5 points above plain-20, ResNet-56 1 point below ResNet-20
PAPER_LIKE = {
    "plain20": [0.10, 0.11, 0.09],
    "plain56": [0.15, 0.17, 0.14],
    "resnet20": [0.08, 0.09, 0.08],
    "resnet56": [0.07, 0.08, 0.07],
}


def verdict(train_err: dict[str, list[float]]) -> str:
    return residual.judge(numbers(train_err)).verdict


def test_reproduced_when_only_the_plain_net_degrades() -> None:
    v = residual.judge(numbers(PAPER_LIKE))
    assert v.verdict == "reproduced"
    assert "+5.33" in v.summary and "-1.00" in v.summary


def test_partly_when_both_degrade_alike() -> None:
    both = {**PAPER_LIKE, "resnet56": [0.13, 0.15, 0.12]}  # ResNet-56 degrades like plain-56
    v = residual.judge(numbers(both))
    assert v.verdict == "partly"
    assert "the deeper ResNet trains worse beyond the noise" in v.summary


def test_a_plain_gap_within_the_noise_does_not_count() -> None:
    # plain-56 minus plain-20: +3, -2, +1 points (mean +0.67, standard error 1.45)
    noisy = {**PAPER_LIKE, "plain56": [0.13, 0.09, 0.10]}
    v = residual.judge(numbers(noisy))
    assert v.verdict == "partly"
    assert [ok for _, ok in v.checks] == [False, True]
    assert "no degradation on this data" in v.summary


def test_not_reproduced_when_depth_helps_the_plain_net_and_hurts_the_resnet() -> None:
    flipped = {
        "plain20": [0.15, 0.17, 0.14],
        "plain56": [0.10, 0.11, 0.09],
        **{"resnet20": [0.07, 0.08, 0.07], "resnet56": [0.12, 0.13, 0.12]},
    }
    assert verdict(flipped) == "not reproduced"


def test_inconclusive_when_an_arm_did_not_finish() -> None:
    assert verdict({**PAPER_LIKE, "plain56": []}) == "inconclusive"


def test_one_seed_counts_effects_beyond_one_point() -> None:
    one = {k: v[:1] for k, v in PAPER_LIKE.items()}
    assert verdict(one) == "reproduced"
    assert verdict({**one, "plain56": [0.105]}) == "partly"  # +0.5 points: below the 1-point margin


def test_the_papers_table_and_its_sentence_follow_the_numbers() -> None:
    table = residual._paper(numbers(PAPER_LIKE))
    assert table.caption.startswith("The paper beside this measurement (He et al. 2016")
    assert "the direction agrees on 4 of 4 depth effects" in table.caption
    assert "27.94% -> 28.54%: +0.60 (table 2)" in table.rows[2][1]
    assert "8.75% -> 6.97%: -1.78 (table 6)" in table.rows[3][1]
    top1 = {**TOP1, "plain56": [0.86] * 3, "resnet56": [0.85] * 3}  # test error flips for both
    flipped = residual._paper(numbers(PAPER_LIKE, top1))
    assert "agrees on 2 of 4 depth effects (not on plain test error, ResNet test error)" in flipped.caption


def test_standard_budget_gives_every_arm_three_seeds() -> None:
    exp = residual.EXPERIMENT
    b = exp.budgets["standard"]
    assert all(len(_seeds(a, b)) >= 3 for a in exp.arms)
    assert b.overrides["warmup_epochs"] == 1.0  # ResNet-56 diverges in its first epoch without one
