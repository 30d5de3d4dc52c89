"""The ``shuffle`` experiment (channel shuffle in ShuffleNet; table 3 of Zhang et al. 2018): its
verdict rule on fixed numbers, the paper's table beside the measurement, and its standard
budget."""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import paired_difference
from cnnkit.lab.experiments import shuffle
from cnnkit.lab.runner import _seeds


def numbers(with_: list[float], without: list[float]) -> dict[str, Any]:
    arms = {
        "shuffle": {"label": "shuffle", "test_top1": with_, "test_top1_mean": sum(with_) / len(with_)},
        "no_shuffle": {
            "label": "no shuffle",
            "test_top1": without,
            "test_top1_mean": sum(without) / len(without),
        },
    }
    return {"arms": arms, "gain": paired_difference(with_, without)}


def verdict(with_: list[float], without: list[float]) -> str:
    return shuffle.judge(numbers(with_, without)).verdict


def test_shuffle_needs_both_arms_trained_before_comparing() -> None:
    assert verdict([0.80, 0.82, 0.81], [0.76, 0.77, 0.78]) == "reproduced"
    assert verdict([0.76, 0.77, 0.78], [0.80, 0.82, 0.81]) == "not reproduced"
    # one arm near chance: the difference says nothing about the shuffle
    assert verdict([0.31, 0.25, 0.12], [0.32, 0.55, 0.20]) == "inconclusive"
    assert verdict([0.80, 0.82, 0.81], [0.10, 0.11, 0.09]) == "inconclusive"


def test_a_gain_within_the_noise_is_partly_and_says_so() -> None:
    # +1, -1, +1.3 points: mean +0.43, standard error 0.72
    v = shuffle.judge(numbers([0.81, 0.80, 0.823], [0.80, 0.81, 0.81]))
    assert v.verdict == "partly"
    assert "+0.43 points" in v.summary and "standard error 0.72" in v.summary
    assert "not beyond the seed-to-seed noise" in v.summary
    assert verdict([0.81], [0.80]) == "partly"  # one seed: the noise unknown


def test_the_papers_table_and_its_sentence_follow_the_numbers() -> None:
    table = shuffle._paper(numbers([0.850, 0.853, 0.848], [0.837, 0.840, 0.835]))  # +1.3 points
    assert "Zhang et al. 2018, table 3" in table.caption
    assert "the direction agrees (the shuffle helps)" in table.caption
    assert "about as large as the paper's" in table.caption
    assert table.rows[2][1] == "56.3% / 55.0%" and table.rows[3][1] == "+1.3"
    small = shuffle._paper(numbers([0.841, 0.850, 0.842], [0.840, 0.848, 0.843]))
    assert "agrees (the shuffle helps), within the noise" in small.caption
    assert "smaller than the paper's" in small.caption
    worse = shuffle._paper(numbers([0.830, 0.833, 0.828], [0.850, 0.853, 0.848]))
    assert "the direction disagrees" in worse.caption


def test_standard_budget_gives_every_arm_three_seeds() -> None:
    exp = shuffle.EXPERIMENT
    b = exp.budgets["standard"]
    assert all(len(_seeds(a, b)) >= 3 for a in exp.arms)
    assert b.overrides["warmup_epochs"] == 1.0  # ShuffleNet diverges at lr 0.1 without a warm-up
