"""The schedule experiment: its three effects paired by seed (a diverged run at chance), its
verdict rule on fixed numbers, its paper table beside Goyal et al. 2017 and He et al. 2016, its
standard budget and a smoke run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.lab.experiments import schedule
from cnnkit.lab.spec import PAPER_CAPTION, ArmRun, Budget, Context

# top-1 of every arm at three seeds: decay helps, the rate matters most, warmup saves lr 0.8
GOOD = {
    "constant": [0.80, 0.82, 0.79],
    "step": [0.84, 0.85, 0.84],
    "exponential": [0.83, 0.84, 0.84],
    "cosine": [0.85, 0.86, 0.85],
    "warmup_cosine": [0.85, 0.85, 0.86],
    "lr0.01": [0.80, 0.81, 0.80],
    "lr0.001": [0.60, 0.62, 0.61],
    "lr0.0001": [0.20, 0.25, 0.22],
    "high_lr": [0.70, 0.10, 0.65],
    "high_lr_warmup": [0.82, 0.83, 0.82],
}


def _numbers(per_seed: dict[str, list[float]]) -> dict[str, Any]:
    top1 = {k: sum(v) / len(v) if v else float("nan") for k, v in per_seed.items()}
    return {"top1": top1, "effects": schedule.effects(per_seed)}


def test_effects_pair_the_arms_seed_by_seed() -> None:
    e = schedule.effects(GOOD)
    # per seed: peak-rate spreads 0.65, 0.61, 0.63; schedule spreads 0.05, 0.04, 0.07
    assert abs(e["magnitude"]["mean"] - (0.60 + 0.57 + 0.56) / 3) < 1e-9
    assert e["warmup"]["n"] == 3 and abs(e["warmup"]["mean"] - (0.12 + 0.73 + 0.17) / 3) < 1e-9
    decay = [
        (0.84 + 0.83 + 0.85) / 3 - 0.80,
        (0.85 + 0.84 + 0.86) / 3 - 0.82,
        (0.84 + 0.84 + 0.85) / 3 - 0.79,
    ]
    assert abs(e["decay"]["mean"] - sum(decay) / 3) < 1e-9


def test_all_three_effects_beyond_the_noise_are_reproduced() -> None:
    v = schedule.judge(_numbers(GOOD))
    assert v.verdict == "reproduced", v.summary
    assert "best peak rate 0.1" in v.summary


def test_an_effect_within_the_noise_is_partly_and_says_so() -> None:
    tied = GOOD | {"constant": [0.86, 0.82, 0.84]}  # as good as the decaying ones, within the noise
    v = schedule.judge(_numbers(tied))
    assert v.verdict == "partly"
    assert "not beyond one standard error" in v.summary and "below what this budget resolves" in v.summary
    worse = GOOD | {"high_lr_warmup": [0.60, 0.05, 0.60]}
    v = schedule.judge(_numbers(worse))
    assert v.verdict == "partly" and "the other way: warmup minus no warmup" in v.summary


def test_no_effect_the_lectures_way_is_not_reproduced() -> None:
    flat = GOOD | {
        "constant": [0.90, 0.91, 0.90],
        "step": [0.60, 0.62, 0.61],
        "exponential": [0.60, 0.61, 0.60],
        "lr0.01": [0.85, 0.85, 0.86],
        "lr0.001": [0.85, 0.84, 0.85],
        "lr0.0001": [0.84, 0.85, 0.85],
        "high_lr_warmup": [0.60, 0.05, 0.60],
    }
    assert schedule.judge(_numbers(flat)).verdict == "not reproduced"


def test_an_arm_without_runs_is_inconclusive() -> None:
    assert schedule.judge(_numbers(GOOD | {"high_lr": []})).verdict == "inconclusive"


def test_a_diverged_run_counts_at_chance(tmp_path: Path) -> None:
    arm = schedule.ARMS[-2]  # high_lr
    runs = [
        ArmRun(arm, 0, tmp_path, {}, {"test_top1": 0.7}, [{"train_loss": 1.0}]),
        ArmRun(arm, 1, tmp_path, {}, None, [], error="non-finite loss"),
    ]
    ctx = Context(schedule.EXPERIMENT, "smoke", Budget(epochs=1), "synthetic", tmp_path, {arm.name: runs})
    assert schedule._seed_top1(ctx, arm.name) == {0: 0.7, 1: schedule.CHANCE}


def test_paper_sentence_follows_warmup_and_the_best_rate() -> None:
    def caption(per_seed: dict[str, list[float]]) -> str:
        table = schedule._paper(_numbers(per_seed))
        assert table.caption.startswith(PAPER_CAPTION)
        assert table.rows[0][1].startswith("24.84 -> 23.74")
        return table.caption

    good = caption(GOOD)
    assert "the direction agrees" in good and "(larger), beyond one standard error" in good
    assert "the best peak rate here is the papers' 0.1" in good
    small = GOOD | {"high_lr_warmup": [0.72, 0.09, 0.66]}  # +0.67 points (SE 0.88): the paper: 1.10
    assert "(about the same size), within one standard error" in caption(small)
    against = GOOD | {"high_lr_warmup": [0.60, 0.05, 0.60], "lr0.01": [0.90, 0.90, 0.90]}
    assert "the direction disagrees" in caption(against) and "not the papers' 0.1" in caption(against)


def test_standard_budget_gives_every_arm_three_seeds() -> None:
    b = schedule.EXPERIMENT.budgets["standard"]
    assert b.seeds >= 3 and all(a.seeds is None or a.seeds >= 3 for a in schedule.ARMS)
    assert b is not schedule.EXPERIMENT.budgets["quick"]


def test_schedule_runs_at_the_smoke_budget(tmp_path: Path) -> None:
    from cnnkit.lab.runner import run_experiments

    (result,) = run_experiments(["schedule"], "smoke", output=tmp_path, device="cpu", threads=1)
    n = result["numbers"]
    assert set(n["effects"]) == {"magnitude", "decay", "warmup"} and n["seeds"] == [0]
    assert result["verdict"]["verdict"] in ("partly", "not reproduced")  # one seed: nothing counts
    assert any(t["caption"].startswith(PAPER_CAPTION) for t in result["tables"])
