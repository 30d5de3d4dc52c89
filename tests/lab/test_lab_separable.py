"""The ``separable`` experiment (depthwise separable vs full convolutions; MobileNet table 4):
its verdict rule on fixed numbers, the paper's table beside the measurement, and its standard
budget."""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import paired_difference
from cnnkit.lab.experiments import separable
from cnnkit.lab.runner import _seeds


def numbers(conv: list[float], sep: list[float], ratio: float | None = 8.6) -> dict[str, Any]:
    """What ``measure`` would give for these top-1s per seed and this mult-add ratio."""

    def arm(label: str, top1: list[float], madds: float, params: int) -> dict[str, Any]:
        return {
            "label": label,
            "test_top1": top1,
            "test_top1_mean": sum(top1) / len(top1) if top1 else float("nan"),
            "mult_adds": madds,
            "params": params,
        }

    return {
        "arms": {
            "separable": arm("MobileNet", sep, 5e6, 200_000),
            "conv": arm("Conv MobileNet", conv, 5e6 * (ratio or 1), 1_600_000),
        },
        "mult_add_ratio": ratio,
        "param_ratio": 8.0,
        "accuracy_cost": paired_difference(conv, sep),
    }


CONV = [0.880, 0.885, 0.878]


def verdict(conv: list[float], sep: list[float], ratio: float | None = 8.6) -> str:
    return separable.judge(numbers(conv, sep, ratio)).verdict


def test_reproduced_when_cheaper_and_within_two_points() -> None:
    assert verdict(CONV, [0.870, 0.874, 0.866]) == "reproduced"  # the paper's 1.1 points
    assert verdict(CONV, [0.885, 0.889, 0.880]) == "reproduced"  # no cost at all


def test_partly_when_the_cost_passes_two_points_beyond_the_noise() -> None:
    v = separable.judge(numbers(CONV, [0.840, 0.846, 0.835]))  # 4 points, every seed
    assert v.verdict == "partly"
    assert [ok for _, ok in v.checks] == [True, False]
    assert "+4.07 points" in v.summary and "beyond the claim's 2 points by more than the noise" in v.summary


def test_not_reproduced_when_neither_holds() -> None:
    assert verdict(CONV, [0.80, 0.81, 0.79], ratio=3.0) == "not reproduced"


def test_inconclusive_when_the_cost_passes_two_points_within_the_noise() -> None:
    # +2.5 points on average, but +0.5, +5.5, +1.5 per seed: standard error 1.5 points
    v = separable.judge(numbers(CONV, [0.875, 0.830, 0.863]))
    assert v.verdict == "inconclusive"
    assert "within the noise" in v.summary
    assert verdict(CONV[:1], [0.85]) == "inconclusive"  # 3 points from one seed: the noise unknown
    assert verdict(CONV[:1], [0.87]) == "reproduced"  # 1 point from one seed: within the claim


def test_inconclusive_without_a_mult_add_ratio() -> None:
    assert verdict(CONV, [0.870, 0.874, 0.866], ratio=None) == "inconclusive"


def test_the_papers_table_and_its_sentence_follow_the_numbers() -> None:
    table = separable._paper(numbers(CONV, [0.870, 0.874, 0.866]))
    assert "Howard et al. 2017, table 4" in table.caption
    assert "the direction agrees" in table.caption and "about as large as the paper's" in table.caption
    assert table.rows[0][1] == "4866M / 569M = 8.55x"
    assert table.rows[-1][1] == "+1.1"
    larger = separable._paper(numbers(CONV, [0.840, 0.846, 0.835]))
    assert "the direction agrees" in larger.caption and "larger than the paper's" in larger.caption
    better = separable._paper(numbers(CONV, [0.890, 0.895, 0.888]))
    assert "the direction disagrees" in better.caption and "the opposite of" in better.caption
    dearer = separable._paper(numbers(CONV, [0.870, 0.874, 0.866], ratio=0.5))
    assert "disagrees (the separable net is not cheaper" in dearer.caption


def test_standard_budget_gives_every_arm_three_seeds() -> None:
    exp = separable.EXPERIMENT
    b = exp.budgets["standard"]
    assert all(len(_seeds(a, b)) >= 3 for a in exp.arms)
    assert b.train_subset is not None and b.train_subset > exp.budgets["quick"].train_subset  # type: ignore[operator]
