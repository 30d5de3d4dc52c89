"""The se experiment: its verdict rule on fixed numbers (the cost, and SE's gain paired by seed),
the paper table's agreement sentence, and its standard budget."""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import mean, paired_difference
from cnnkit.lab.experiments import se
from cnnkit.lab.runner import _seeds

OTHER = {"failed": [], "train_err_mean": 0.1, "images_per_s": 100.0, "train_seconds_mean": 1.0}


def numbers(
    base: list[float], with_se: list[float], extra_params: float = 0.008, extra_mult_adds: float = 0.0026
) -> dict[str, Any]:
    """What ``se.measure`` returns for these per-seed accuracies and relative costs."""
    arms = {
        a: {**OTHER, "label": a, "model": a, "seeds": len(xs), "params": p, "mult_adds": m,
            "test_top1": xs, "test_top1_mean": mean(xs)}
        for a, xs, p, m in (
            ("resnet18", base, 11_175_370, 10**8),
            ("seresnet18", with_se, int(11_175_370 * (1 + extra_params)), int(10**8 * (1 + extra_mult_adds))),
        )
    }  # fmt: skip
    return {
        "arms": arms,
        "gain": paired_difference(with_se, base),
        "extra_params": extra_params,
        "extra_mult_adds": extra_mult_adds,
    }


def test_rule_on_fixed_numbers() -> None:
    def verdict(base: list[float], with_se: list[float], **cost: float) -> str:
        return se.judge(numbers(base, with_se, **cost)).verdict

    assert verdict([0.85, 0.86, 0.84], [0.87, 0.875, 0.86]) == "reproduced"  # +1.67, SE 0.17
    assert verdict([0.85, 0.86, 0.84], [0.88, 0.85, 0.845]) == "partly"  # +0.83, SE 1.17: within the noise
    assert verdict([0.85], [0.87]) == "partly"  # one seed: the noise is unknown
    assert verdict([0.85, 0.86, 0.84], [0.84, 0.85, 0.83]) == "partly"  # cheap, no gain
    assert verdict([0.85, 0.86, 0.84], [0.87, 0.875, 0.86], extra_params=0.10) == "partly"  # not cheap
    assert verdict([0.85, 0.86, 0.84], [0.84, 0.85, 0.83], extra_params=0.10) == "not reproduced"
    assert verdict([], []) == "inconclusive"


def test_summaries_say_why() -> None:
    v = se.judge(numbers([0.85, 0.86, 0.84], [0.88, 0.85, 0.845]))
    assert "not beyond the seed-to-seed noise" in v.summary and "standard error 1.17" in v.summary
    v = se.judge(numbers([0.85, 0.86, 0.84], [0.84, 0.85, 0.83]))
    assert "-1.00 points" in v.summary and "no gain" in v.summary
    v = se.judge(numbers([0.85, 0.86, 0.84], [0.87, 0.875, 0.86], extra_params=0.10))
    assert "not cheap" in v.summary


def test_paper_table_agreement_follows_the_numbers() -> None:
    def table(base: list[float], with_se: list[float]) -> Any:
        (t,) = [t for t in se.tables(numbers(base, with_se)) if t.caption.startswith("The paper beside")]
        return t

    t = table([0.85, 0.86, 0.84], [0.865, 0.875, 0.855])
    assert "the direction agrees" in t.caption and "about the paper's size" in t.caption
    assert "beyond the noise" in t.caption and "+1.51" in t.caption
    assert t.rows[0][1] == "ResNet-50 24.80% -> SE-ResNet-50 23.29% (ImageNet)"
    assert "0.26%" in t.rows[2][1] and "0.26%" in t.rows[2][2]
    assert "larger than the paper's" in table([0.85, 0.86, 0.84], [0.90, 0.91, 0.89]).caption
    assert "the direction disagrees" in table([0.85, 0.86, 0.84], [0.84, 0.85, 0.83]).caption


def test_standard_budget_trains_every_arm_on_three_seeds_or_more() -> None:
    b = se.EXPERIMENT.budgets["standard"]
    assert b != se.EXPERIMENT.budgets["quick"] and b.overrides["warmup_epochs"] == 1.0
    assert all(len(_seeds(arm, b)) >= 3 for arm in se.EXPERIMENT.arms)
