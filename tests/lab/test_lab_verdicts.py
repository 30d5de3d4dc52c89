"""Verdicts come from the measured numbers by the stated rule: the same judge gives opposite
verdicts for opposite numbers. The measurements that need no training are checked against
the lecture: the dilated stack's 3, 7, 15 and the initialisation slides' collapse and
saturation."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from cnnkit.lab.common import paired_difference, paired_verdict
from cnnkit.lab.experiments import activation, dilation, ensemble, init, norm, residual, separable
from cnnkit.lab.spec import Context


def test_residual_verdict_follows_the_gaps() -> None:
    def verdict(plain: float, res: float) -> str:
        return residual.judge({"plain_gap": plain, "residual_gap": res}).verdict

    assert verdict(0.05, -0.01) == "reproduced"  # deeper plain worse, deeper residual not
    assert verdict(0.05, 0.045) == "partly"  # both degrade alike
    assert verdict(-0.02, 0.03) == "not reproduced"
    assert verdict(math.nan, 0.0) == "inconclusive"


def test_separable_verdict_follows_ratio_and_accuracy_cost() -> None:
    def verdict(ratio: float | None, cost: float) -> str:
        return separable.judge({"mult_add_ratio": ratio, "accuracy_cost": {"mean": cost}}).verdict

    assert verdict(8.6, 0.011) == "reproduced"  # the lecture's table 4
    assert verdict(8.6, 0.05) == "partly"
    assert verdict(3.0, 0.05) == "not reproduced"
    assert verdict(None, 0.01) == "inconclusive"


def test_ensemble_verdict_compares_fusion_with_members() -> None:
    members = {"a": 0.80, "b": 0.84, "c": 0.78}
    assert ensemble.judge({"members": members, "fusion": 0.86}).verdict == "reproduced"
    assert ensemble.judge({"members": members, "fusion": 0.82}).verdict == "partly"
    assert ensemble.judge({"members": members, "fusion": 0.75}).verdict == "not reproduced"
    assert ensemble.judge({"members": {}, "fusion": None}).verdict == "inconclusive"


def test_paired_verdict_needs_a_gain_beyond_the_noise() -> None:
    assert (
        paired_verdict(paired_difference([0.9, 0.91, 0.92], [0.88, 0.885, 0.9]), "x").verdict == "reproduced"
    )
    assert (
        paired_verdict(paired_difference([0.9, 0.85], [0.88, 0.86]), "x").verdict == "partly"
    )  # +0.5 +- 1.5
    assert paired_verdict(paired_difference([0.9], [0.88]), "x").verdict == "partly"  # one seed
    assert paired_verdict(paired_difference([0.8, 0.8], [0.85, 0.84]), "x").verdict == "not reproduced"
    assert paired_verdict(paired_difference([], []), "x").verdict == "inconclusive"
    d = paired_difference([0.5, 0.7], [0.4, 0.4])
    assert d["mean"] == pytest.approx(0.2) and d["se"] == pytest.approx(0.1) and d["wins"] == 2


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


def test_init_statistics_show_the_lectures_collapse_and_saturation() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 1, 16, 16)  # the slides' Gaussian input
    y = torch.randint(10, (32,))
    s = init.init_statistics(x, y)
    assert s["tanh, N(0, 0.01^2)"]["std_ratio"] < 1e-6  # collapse, layer by layer
    assert s["tanh, N(0, 1)"]["saturated_last"] > 0.5  # saturation
    assert 0.1 < s["tanh, Xavier"]["std_ratio"] < 10
    assert s["relu, Xavier"]["std_ratio"] < 0.1 < s["relu, Kaiming"]["std_ratio"] < 10
    assert s["relu, constant 0.01"]["distinct_filters"] == 1  # symmetry never broken
    assert s["tanh, Xavier"]["distinct_filters"] == 64
    assert s["relu, zero"]["grad_norm_total"] == 0.0
    layers = s["tanh, N(0, 0.01^2)"]["stats"].layers
    assert len(layers) == 19  # the 19 convolutions of the plain 20-layer net, each followed by tanh
    assert all(b.std < a.std for a, b in itertools.pairwise(layers))


def test_norm_verdict_uses_group_norm_as_the_control() -> None:
    def verdict(bn: float, bn2: float, gn: float, gn2: float, none: float = 0.5) -> str:
        top1 = {"none": none, "batch": bn, "batch-b2": bn2, "group": gn, "group-b2": gn2}
        return norm.judge({"top1": top1, "bn_drop": bn - bn2, "gn_drop": gn - gn2}).verdict

    assert verdict(0.80, 0.60, 0.79, 0.78) == "reproduced"  # small batches hurt batch norm only
    assert verdict(0.80, 0.80, 0.79, 0.79) == "partly"  # no batch-size effect
    assert verdict(0.40, 0.40, 0.79, 0.79) == "not reproduced"  # and no help from batch norm either


def test_activation_verdict_compares_with_the_non_saturating_median() -> None:
    slow = {a: 1.0 for a in activation.NON_SATURATING} | {"sigmoid": 2.0, "tanh": 1.5}
    top1 = dict.fromkeys(slow, 0.5)
    assert (
        activation.judge({"loss_auc": slow, "non_saturating_median": 1.0, "top1": top1}).verdict
        == "reproduced"
    )
    fast = slow | {"tanh": 0.9}
    assert (
        activation.judge({"loss_auc": fast, "non_saturating_median": 1.0, "top1": top1}).verdict == "partly"
    )


def test_shuffle_needs_both_arms_trained_before_comparing() -> None:
    from cnnkit.lab.common import paired_difference
    from cnnkit.lab.experiments import shuffle

    def verdict(with_: list[float], without: list[float]) -> str:
        arms = {
            "shuffle": {"label": "shuffle", "test_top1_mean": sum(with_) / len(with_)},
            "no_shuffle": {"label": "no shuffle", "test_top1_mean": sum(without) / len(without)},
        }
        return shuffle.judge({"arms": arms, "gain": paired_difference(with_, without)}).verdict

    assert verdict([0.80, 0.82, 0.81], [0.76, 0.77, 0.78]) == "reproduced"
    assert verdict([0.76, 0.77, 0.78], [0.80, 0.82, 0.81]) == "not reproduced"
    # one arm near chance: the difference says nothing about the shuffle
    assert verdict([0.31, 0.25, 0.12], [0.32, 0.55, 0.20]) == "inconclusive"
    assert verdict([0.80, 0.82, 0.81], [0.10, 0.11, 0.09]) == "inconclusive"


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
