"""The norm experiment: its verdict rule on fixed numbers (batch norm against no norm, and batch
norm's loss at batch 2 against group norm's, the control, both paired by seed), the paper
table's agreement sentence, and its standard budget."""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import mean, paired_difference
from cnnkit.lab.experiments import norm
from cnnkit.lab.runner import _seeds

OTHER = {
    "failed": [],
    "params": 292_656,
    "train_err_mean": 0.1,
    "images_per_s": 100.0,
    "train_seconds_mean": 1.0,
}


def numbers(top1: dict[str, list[float]]) -> dict[str, Any]:
    """What ``norm.measure`` returns for these per-seed accuracies (layer and instance norm at 0.8)."""
    top1 = {"layer": [0.8] * len(top1["none"]), "instance": [0.8] * len(top1["none"]), **top1}
    arms = {a: {**OTHER, "label": a, "model": "fmnet", "seeds": len(xs), "test_top1": xs, "test_top1_mean": mean(xs)}
            for a, xs in top1.items()}  # fmt: skip
    bn = [a - b for a, b in zip(top1["batch"], top1["batch-b2"], strict=True)]
    gn = [a - b for a, b in zip(top1["group"], top1["group-b2"], strict=True)]
    return {
        "arms": arms,
        "top1": {a: v["test_top1_mean"] for a, v in arms.items()},
        "bn_drop": mean(bn),
        "gn_drop": mean(gn),
        "bn_gain": paired_difference(top1["batch"], top1["none"]),
        "extra_drop": paired_difference(bn, gn),
    }


def verdict(none: list[float], bn: list[float], bn2: list[float], gn: list[float], gn2: list[float]) -> str:
    return norm.judge(
        numbers({"none": none, "batch": bn, "batch-b2": bn2, "group": gn, "group-b2": gn2})
    ).verdict


NONE, BN, GN = [0.10, 0.12, 0.11], [0.80, 0.81, 0.79], [0.79, 0.80, 0.78]


def test_rule_on_fixed_numbers() -> None:
    # small batches hurt batch norm only: 10 points lost against none for group norm
    assert verdict(NONE, BN, [0.70, 0.71, 0.69], GN, GN) == "reproduced"
    # no batch-size effect: batch norm helps, but its extra loss is zero
    assert verdict(NONE, BN, BN, GN, GN) == "partly"
    # batch norm loses 0.5 points more than group norm: beyond the noise, under the 1 point asked
    assert verdict(NONE, BN, [0.795, 0.805, 0.785], GN, GN) == "partly"
    # batch norm loses 3 points more on average, but the seeds disagree: within the noise
    assert verdict(NONE, BN, [0.70, 0.83, 0.78], GN, GN) == "partly"
    assert verdict([0.10], [0.80], [0.70], [0.79], [0.79]) == "partly"  # one seed: the noise is unknown
    # no help from batch norm, and batch 2 hurts group norm more
    assert verdict(BN, NONE, NONE, GN, [0.70, 0.71, 0.69]) == "not reproduced"
    assert verdict([], [], [], [], []) == "inconclusive"


def test_summaries_say_why() -> None:
    v = norm.judge(
        numbers({"none": NONE, "batch": BN, "batch-b2": [0.795, 0.805, 0.785], "group": GN, "group-b2": GN})
    )
    assert (
        "+0.50 points (standard error 0.00, at least 1 point needed: under 1 point or within the noise)"
        in v.summary
    )
    assert [ok for _, ok in v.checks] == [True, False]


def test_paper_table_agreement_follows_the_numbers() -> None:
    def table(bn2: list[float], gn2: list[float]) -> Any:
        n = numbers({"none": NONE, "batch": BN, "batch-b2": bn2, "group": GN, "group-b2": gn2})
        (t,) = [t for t in norm.tables(n) if t.caption.startswith("The paper beside")]
        return t

    t = table([0.70, 0.71, 0.69], GN)  # batch norm loses 10 points more
    assert "the direction agrees" in t.caption and "about the paper's size" in t.caption
    assert "11.1 points" in t.caption and t.rows[2][1] == "+11.1"
    assert t.rows[0][1] == "23.6% -> 34.7% (32 -> 2 per GPU)" and t.rows[1][1] == "24.1% -> 24.1%"
    assert "smaller than the paper's" in table([0.78, 0.79, 0.77], GN).caption
    assert "the direction disagrees" in table(BN, [0.70, 0.71, 0.69]).caption


def test_standard_budget_trains_every_arm_on_three_seeds_or_more() -> None:
    b = norm.EXPERIMENT.budgets["standard"]
    assert b != norm.EXPERIMENT.budgets["quick"]
    assert all(len(_seeds(arm, b)) >= 3 for arm in norm.EXPERIMENT.arms)
