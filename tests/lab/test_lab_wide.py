"""The ``wide`` experiment (wide-shallow vs deep-thin at equal parameters; Zagoruyko & Komodakis
2016): its verdict rule on fixed numbers, the paper's table beside the measurement, and its
standard budget."""

from __future__ import annotations

from typing import Any

from cnnkit.lab.common import paired_difference
from cnnkit.lab.experiments import wide
from cnnkit.lab.runner import _seeds

DEEP = [0.870, 0.875, 0.868]


def numbers(
    wide_top1: list[float],
    deep_top1: list[float] = DEEP,
    ratios: list[float] | None = None,
    params: float = 1.09,
) -> dict[str, Any]:
    """What ``measure`` would give: top-1 per seed, the deep net's time over the wide net's per seed."""
    ratios = [2.1, 2.0, 2.2] if ratios is None else ratios

    def arm(label: str, top1: list[float], seconds: float, p: int) -> dict[str, Any]:
        return {
            "label": label,
            "test_top1": top1,
            "test_top1_mean": sum(top1) / len(top1),
            "params": p,
            "train_seconds_mean": seconds,
        }

    return {
        "arms": {
            "wide": arm("fmnet", wide_top1, 100.0, int(270_000 * params)),
            "deep": arm("ResNet-20", deep_top1, 100.0 * sum(ratios) / len(ratios), 270_000),
        },
        "gain": paired_difference(wide_top1, deep_top1),
        "param_ratio": params,
        "time_ratio": sum(ratios) / len(ratios),
        "time_ratios": ratios,
    }


def verdict(wide_top1: list[float], **kwargs: Any) -> str:
    return wide.judge(numbers(wide_top1, **kwargs)).verdict


def test_reproduced_when_as_accurate_and_faster() -> None:
    assert verdict([0.872, 0.878, 0.870]) == "reproduced"
    assert verdict([0.867, 0.872, 0.865]) == "reproduced"  # 0.3 points behind: within the claim's 0.5


def test_partly_when_the_deep_net_leads_beyond_half_a_point_and_the_noise() -> None:
    v = wide.judge(numbers([0.850, 0.856, 0.849]))  # 1.93 points behind on every seed
    assert v.verdict == "partly"
    assert [ok for _, ok in v.checks] == [False, True]
    assert "the deep net is 1.93 points more accurate" in v.summary


def test_a_deep_lead_within_the_noise_does_not_count() -> None:
    # wide minus deep: -3, +1, -1 points (mean -1, standard error 1.15): within the noise
    assert verdict([0.840, 0.885, 0.858]) == "reproduced"


def test_time_must_be_shorter_beyond_the_noise() -> None:
    v = wide.judge(numbers([0.872, 0.878, 0.870], ratios=[1.5, 0.7, 1.0]))  # mean 1.07, error 0.23
    assert v.verdict == "partly"
    assert "the wide net is not faster beyond the noise" in v.summary
    assert verdict([0.80, 0.81, 0.79], ratios=[0.5, 0.6, 0.55]) == "not reproduced"


def test_inconclusive_at_unequal_parameters_or_without_runs() -> None:
    assert verdict([0.872, 0.878, 0.870], params=1.5) == "inconclusive"
    n = numbers([0.872, 0.878, 0.870])
    assert wide.judge({**n, "gain": paired_difference([], [])}).verdict == "inconclusive"


def test_the_papers_table_and_its_sentence_follow_the_numbers() -> None:
    table = wide._paper(numbers([0.872, 0.878, 0.870]))
    assert "Zagoruyko & Komodakis 2016" in table.caption
    assert "the direction agrees (the wide net is more accurate and faster here" in table.caption
    assert "+0.26 (ImageNet) and +0.65 (CIFAR-10)" in table.caption and "against 1.24x" in table.caption
    assert table.rows[3][1] == "21.9% / 22.16%; 4.27% / 4.92%"
    worse = wide._paper(numbers([0.850, 0.856, 0.849]))
    assert "the direction disagrees (the wide net is less accurate and faster" in worse.caption
    slower = wide._paper(numbers([0.872, 0.878, 0.870], ratios=[0.8, 0.9, 0.85]))
    assert "more accurate and slower here" in slower.caption


def test_standard_budget_gives_every_arm_three_seeds() -> None:
    exp = wide.EXPERIMENT
    b = exp.budgets["standard"]
    assert all(len(_seeds(a, b)) >= 3 for a in exp.arms)
