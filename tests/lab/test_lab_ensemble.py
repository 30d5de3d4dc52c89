"""The ``ensemble`` experiment (an ensemble of diverse nets; the lecture's Trimps-Soushen table):
its verdict rule on fixed numbers (one fusion per seed), the paper's table beside the
measurement, its standard budget, and a run at the smoke budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.lab.experiments import ensemble
from cnnkit.lab.runner import _seeds

NAMES = ("fmnet", "resnet20", "mobilenet", "shufflenet")


def numbers(members: list[list[float]], fusion: list[float]) -> dict[str, Any]:
    """What ``measure`` would give: per seed, each member's top-1 (in :data:`NAMES` order) and the fusion's."""
    seeds = [
        {"seed": i, "members": dict(zip(NAMES, m, strict=False)), "fusion": f}
        for i, (m, f) in enumerate(zip(members, fusion, strict=True))
    ]
    arms = {k: {"label": k} for k in NAMES}
    return {"arms": arms, **ensemble.fusion_numbers(seeds)}


MEMBERS = [[0.86, 0.85, 0.84, 0.82], [0.85, 0.86, 0.84, 0.81], [0.86, 0.85, 0.83, 0.82]]


def verdict(fusion: list[float], members: list[list[float]] = MEMBERS) -> str:
    return ensemble.judge(numbers(members, fusion)).verdict


def test_fusion_against_the_best_and_the_average_member_of_each_seed() -> None:
    assert verdict([0.875, 0.872, 0.871]) == "reproduced"  # beats the best by 1.27 points, every seed
    assert verdict([0.85, 0.85, 0.85]) == "partly"  # trails the best, beats the average (84.25%)
    assert verdict([0.80, 0.81, 0.80]) == "not reproduced"
    assert verdict([], members=[]) == "inconclusive"


def test_a_lead_over_the_best_member_within_the_noise_is_partly() -> None:
    # fusion minus best: +2, -1, +0.3 points (mean +0.43, standard error 0.88)
    v = ensemble.judge(numbers(MEMBERS, [0.88, 0.85, 0.863]))
    assert v.verdict == "partly"
    assert "+0.43 points" in v.summary and "within the noise" in v.summary


def test_the_summary_says_why_with_numbers() -> None:
    v = ensemble.judge(numbers(MEMBERS, [0.85, 0.85, 0.85]))
    assert "the fusion trails the best member by 1.00 points" in v.summary
    one = ensemble.judge(numbers(MEMBERS[:1], [0.87]))
    assert one.verdict == "partly" and "one seed" in one.summary  # the noise unknown


def test_the_papers_table_and_its_sentence_follow_the_numbers() -> None:
    table = ensemble._paper(numbers(MEMBERS, [0.88, 0.883, 0.882]))
    assert "Trimps-Soushen, ILSVRC 2016" in table.caption
    assert table.rows[0][1] == "3.52% / 4.13% / 4.65% top-5 (5 nets)"
    assert table.rows[2][1] == "-0.60" and table.rows[3][1] == "17%"
    assert (
        "the direction agrees" in table.caption
        and "about as large as the table's 17% removed" in table.caption
    )
    worse = ensemble._paper(numbers(MEMBERS, [0.85, 0.85, 0.85]))
    assert (
        "the direction disagrees" in worse.caption
        and "it adds 7% to the best member's error" in worse.caption
    )


def test_standard_budget_gives_every_arm_three_seeds() -> None:
    exp = ensemble.EXPERIMENT
    b = exp.budgets["standard"]
    assert all(len(_seeds(a, b)) >= 3 for a in exp.arms)


def test_ensemble_runs_at_the_smoke_budget(tmp_path: Path) -> None:
    from cnnkit.lab.runner import run_experiments

    (result,) = run_experiments(["ensemble"], "smoke", output=tmp_path, device="cpu", threads=1)
    n = result["numbers"]
    assert [s["seed"] for s in n["seeds"]] == [0] and set(n["seeds"][0]["members"]) == set(NAMES)
    assert result["verdict"]["verdict"] in ("reproduced", "partly", "not reproduced")
    captions = [t["caption"] for t in result["tables"]]
    assert any(c.startswith("The paper beside this measurement") for c in captions)
    assert (tmp_path / "ensemble" / "accuracy.png").stat().st_size > 0
