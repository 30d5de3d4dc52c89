"""The dense experiment: its verdict rule on fixed numbers (DenseNet-BC against a bigger and a
smaller ResNet, paired by seed), the paper table's agreement sentence, and its standard budget."""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import mean, paired_difference
from cnnkit.lab.experiments import dense
from cnnkit.lab.runner import _seeds

PARAMS = {"densenet": 769_738, "resnet18": 11_175_370, "resnet20": 269_434}
# the other numbers of common.arm_numbers that the tables print
OTHER = {
    "failed": [],
    "mult_adds": 10**7,
    "train_err_mean": 0.1,
    "images_per_s": 100.0,
    "train_seconds_mean": 1.0,
}


def numbers(top1: dict[str, list[float]]) -> dict[str, Any]:
    """What ``dense.measure`` returns for these per-seed accuracies (seed order kept)."""
    arms = {a: {**OTHER, "label": a, "model": a, "params": PARAMS[a], "seeds": len(xs), "test_top1": xs,
                "test_top1_mean": mean(xs)} for a, xs in top1.items()}  # fmt: skip
    return {"arms": arms, "vs": {r: paired_difference(top1["densenet"], top1[r]) for r in dense.RESNETS}}


def verdict(d: list[float], r18: list[float], r20: list[float]) -> str:
    return dense.judge(numbers({"densenet": d, "resnet18": r18, "resnet20": r20})).verdict


def test_rule_reproduced_when_densenet_matches_every_resnet() -> None:
    assert verdict([0.85, 0.86, 0.84], [0.85, 0.86, 0.85], [0.83, 0.84, 0.83]) == "reproduced"
    # below ResNet-18 by 1.5 points, but the noise is 1.5 points too: not beyond it
    assert verdict([0.80, 0.86, 0.84], [0.85, 0.86, 0.835], [0.80, 0.84, 0.83]) == "reproduced"


def test_rule_partly_when_densenet_falls_short_of_one_resnet() -> None:
    # 3 points below ResNet-18 on every seed: beyond 1 point and beyond the noise
    n = numbers(
        {"densenet": [0.82, 0.83, 0.81], "resnet18": [0.85, 0.86, 0.84], "resnet20": [0.80, 0.81, 0.80]}
    )
    v = dense.judge(n)
    assert v.verdict == "partly"
    assert [ok for _, ok in v.checks] == [False, True]
    assert "falls short of resnet18 by 3.00 points" in v.summary


def test_rule_not_reproduced_when_densenet_trails_both() -> None:
    assert verdict([0.80, 0.81, 0.79], [0.85, 0.86, 0.84], [0.83, 0.84, 0.82]) == "not reproduced"


def test_rule_one_seed_uses_the_one_point_allowance() -> None:
    assert verdict([0.845], [0.85], [0.80]) == "reproduced"  # 0.5 points below: within 1 point
    n = numbers({"densenet": [0.83], "resnet18": [0.85], "resnet20": [0.80]})
    v = dense.judge(n)
    assert v.verdict == "partly" and "one seed" in v.checks[0][0]


def test_rule_inconclusive_without_runs() -> None:
    assert verdict([], [0.85], [0.80]) == "inconclusive"
    n = numbers({"densenet": [0.85], "resnet18": [0.85], "resnet20": [0.80]})
    n["arms"]["resnet18"]["params"] = None
    assert dense.judge(n).verdict == "inconclusive"


def test_paper_table_agreement_follows_the_numbers() -> None:
    def sentence(d: list[float], r18: list[float]) -> str:
        (table,) = [t for t in dense.tables(numbers({"densenet": d, "resnet18": r18, "resnet20": [0.8] * len(d)}))
                    if t.caption.startswith("The paper beside")]  # fmt: skip
        assert table.rows[0][1] == "4.51%, 0.8M" and table.rows[1][1] == "ResNet-110: 6.41%, 1.7M"
        return table.caption

    assert "the direction agrees" in sentence([0.87, 0.88, 0.86], [0.85, 0.86, 0.84])  # +2 points
    assert "about the paper's size" in sentence([0.87, 0.88, 0.86], [0.85, 0.86, 0.84])
    assert "smaller than the paper's" in sentence([0.853, 0.863, 0.843], [0.85, 0.86, 0.84])
    assert "the direction differs but the claim holds" in sentence([0.845, 0.855, 0.835], [0.85, 0.86, 0.84])
    assert "the direction disagrees" in sentence([0.80, 0.81, 0.79], [0.85, 0.86, 0.84])
    assert "1.90 points" in sentence([0.80, 0.81, 0.79], [0.85, 0.86, 0.84])


def test_standard_budget_trains_every_arm_on_three_seeds_or_more() -> None:
    b = dense.EXPERIMENT.budgets["standard"]
    assert b != dense.EXPERIMENT.budgets["quick"]
    assert all(len(_seeds(arm, b)) >= 3 for arm in dense.EXPERIMENT.arms)
