"""Verdicts come from the measured numbers by the stated rule: the same judge gives opposite
verdicts for opposite numbers. The measurements that need no training are checked against
the lecture: the dilated stack's 3, 7, 15 (the initialisation slides' collapse and saturation:
tests/lab/test_lab_init.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnkit.lab.common import BySeed, paired_difference, paired_verdict
from cnnkit.lab.experiments import dilation
from cnnkit.lab.spec import Context


def test_paired_verdict_needs_a_gain_beyond_the_noise() -> None:
    assert (
        paired_verdict(paired_difference([0.9, 0.91, 0.92], [0.88, 0.885, 0.9]), "x").verdict == "reproduced"
    )
    assert (
        paired_verdict(paired_difference([0.9, 0.85], [0.88, 0.86]), "x").verdict == "partly"
    )  # +0.5 +- 1.5
    assert paired_verdict(paired_difference([0.9], [0.88]), "x").verdict == "partly"  # one seed
    against = paired_verdict(paired_difference([0.8, 0.8], [0.85, 0.84]), "x")
    assert against.verdict == "not reproduced" and "does not hold on this data" in against.summary
    unresolved = paired_verdict(paired_difference([0.8, 0.86], [0.85, 0.84]), "x")  # -1.5 +- 3.5
    assert unresolved.verdict == "not reproduced" and "below what the budget resolves" in unresolved.summary
    assert paired_verdict(paired_difference([], []), "x").verdict == "inconclusive"
    d = paired_difference([0.5, 0.7], [0.4, 0.4])
    assert d["mean"] == pytest.approx(0.2) and d["se"] == pytest.approx(0.1) and d["wins"] == 2


def test_paired_difference_pairs_by_seed_when_a_seed_failed() -> None:
    """Arm a lost seed 1: its seeds 0 and 2 pair with arm b's seeds 0 and 2, not 0 and 1."""
    a = BySeed([0.90, 0.70], seeds=[0, 2])
    b = BySeed([0.80, 0.50, 0.60], seeds=[0, 1, 2])
    d = paired_difference(a, b)
    assert d["n"] == 2 and d["mean"] == pytest.approx((0.10 + 0.10) / 2) and d["se"] == pytest.approx(0)
    by_position = paired_difference(list(a), list(b))  # what plain lists do: 0.9-0.8, 0.7-0.5
    assert by_position["mean"] == pytest.approx(0.15)
    assert paired_difference(b, a)["mean"] == pytest.approx(-0.10)
    with pytest.raises(ValueError, match="2 values for 3 seeds"):
        BySeed([0.1, 0.2], seeds=[0, 1, 2])


def test_dilation_reproduces_the_lectures_3_7_15(tmp_path: Path) -> None:
    exp = dilation.EXPERIMENT
    ctx = Context(exp, "smoke", exp.budgets["smoke"], "synthetic", tmp_path, {})
    n = exp.measure(ctx)
    assert n["dilated"]["rf_analysis"][:3] == [3, 7, 15]
    assert n["dilated"]["rf_gradient"] == n["dilated"]["rf_analysis"] == [3, 7, 15, 31, 63, 127]
    assert n["standard"]["rf_gradient"] == [3, 5, 7, 9, 11, 13]
    assert exp.judge(n).verdict == "reproduced"
    # the same judge on wrong numbers
    wrong = {**n, "dilated": {**n["dilated"], "rf_analysis": [3, 5, 7, 9, 11, 13]}}
    assert exp.judge(wrong).verdict == "partly"


def test_transposed_verdict_on_fixed_numbers() -> None:
    from cnnkit.lab.experiments import transposed

    good = {
        "inner_conv": 10.0, "inner_transposed": 10.0, "adjoint_rel_error": 0.0, "gradient_max_diff": 0.0,
        "gradient_scale": 1.0, "output_size": [32, 32], "formula_size": 32,
        "k3s2": {"kernel": 3, "stride": 2, "ratio": 4.0}, "k4s2": {"kernel": 4, "stride": 2, "ratio": 1.0},
        "resize": {"kernel": 3, "stride": 2, "ratio": 1.0},
    }  # fmt: skip
    assert transposed.judge(good).verdict == "reproduced"
    even = {**good, "k3s2": {"kernel": 3, "stride": 2, "ratio": 1.0}}  # no checkerboard: one check fails
    assert transposed.judge(even).verdict == "partly"


def test_transposed_experiment_measures_the_adjoint_and_the_checkerboard(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cnnkit.lab.runner import run_experiments

    (result,) = run_experiments(["transposed"], "smoke", output=tmp_path, device="cpu", threads=1)
    assert result["verdict"]["verdict"] == "reproduced"
    assert (tmp_path / "transposed" / "checkerboard.png").stat().st_size > 0


def test_stack_verdict_on_fixed_numbers() -> None:
    from cnnkit.lab.experiments import stack

    def pair(ratio: float, expected: float, gain: float, se: float) -> dict[str, object]:
        return {
            "stacked": {"stage_weights": 1, "field": 38}, "single": {"stage_weights": 1, "field": 38},
            "weight_ratio": ratio, "expected_ratio": expected,
            "accuracy_gain": {"mean": gain, "se": se, "n": 3.0, "wins": 2.0},
        }  # fmt: skip

    good = {"pairs": {"5": pair(0.72, 0.72, 0.004, 0.003), "7": pair(27 / 49, 27 / 49, -0.002, 0.003)}}
    assert stack.judge(good).verdict == "reproduced"  # -0.2 points is within one standard error
    worse = {"pairs": {"5": pair(0.72, 0.72, -0.02, 0.003), "7": pair(27 / 49, 27 / 49, 0.01, 0.003)}}
    assert stack.judge(worse).verdict == "partly"


def test_stack_counts_the_lectures_weights() -> None:
    from cnnkit.lab.experiments.stack import stage_weights

    # VGG: 2 x 3^2 C^2 = 18 C^2 against 5^2 C^2; 3 x 3^2 C^2 = 27 C^2 against 7^2 C^2 (C = 64)
    assert stage_weights(5, True, width=64)["stage_weights"] == 18 * 64**2
    assert stage_weights(5, False, width=64)["stage_weights"] == 25 * 64**2
    assert stage_weights(7, True, width=64)["stage_weights"] == 27 * 64**2
    assert stage_weights(7, False, width=64)["stage_weights"] == 49 * 64**2
    assert stage_weights(5, True)["field"] == stage_weights(5, False)["field"]
    assert stage_weights(7, True)["field"] == stage_weights(7, False)["field"]


def test_stack_runs_at_the_smoke_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cnnkit.lab.runner import run_experiments

    (result,) = run_experiments(["stack"], "smoke", output=tmp_path, device="cpu", threads=1)
    assert result["verdict"]["verdict"] in ("reproduced", "partly", "not reproduced")
    assert len(result["numbers"]["pairs"]) == 2
