"""The ``multiplier`` experiment (MobileNet's width and resolution multipliers): its verdict rule
on fixed numbers, its counts against the paper's (tables 6 and 7 of Howard et al. 2017) and its
cost formula (eq. 5: D_K^2 M D_F^2 + M N D_F^2 per depthwise separable layer), and a run at the
smoke budget.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from cnnkit.lab.common import model_cost
from cnnkit.lab.experiments import multiplier
from cnnkit.lab.experiments.multiplier import ARMS, CURVES, arm_cost, exponent, judge
from cnnkit.models.mobilenet import BLOCKS

# ---------------------------------------------------------------- the verdict rule


def numbers(
    top1: dict[str, list[float]], *, linear_cost: bool = False, rho_params: int = 0
) -> dict[str, Any]:
    """The numbers ``measure`` would give: the arms' real costs (or mult-adds linear in the
    multiplier; or parameters that grow with rho) and the given top-1 per seed."""
    arms: dict[str, dict[str, Any]] = {}
    for a in ARMS:
        params, madds = arm_cost(a)
        if linear_cost:  # mult-adds proportional to the multiplier: exponent 1
            m = a.overrides["model_kwargs"]["width_mult"] * a.overrides.get("image_size", 28) / 28
            madds = int(42e6 * m)
        if a.name.startswith("rho-"):
            params += rho_params * a.overrides["image_size"]
        arms[a.name] = {"label": a.title, "params": params, "mult_adds": madds, "test_top1": top1[a.name]}
    curves = {name: multiplier._curve(arms, points) for name, _, points in CURVES}
    return {"arms": arms, "curves": curves}


# mean top-1 falling along both multipliers, with seed noise smaller than the steps
FALLING = {
    "alpha-1.0": [0.85, 0.86, 0.84],
    "alpha-0.75": [0.84, 0.85, 0.84],
    "alpha-0.5": [0.83, 0.83, 0.82],
    "alpha-0.25": [0.80, 0.81, 0.79],
    "rho-24": [0.85, 0.85, 0.84],
    "rho-20": [0.84, 0.84, 0.83],
    "rho-16": [0.82, 0.83, 0.81],
}


def test_verdict_reproduced_on_falling_accuracy() -> None:
    v = judge(numbers(FALLING))
    assert v.verdict == "reproduced", v.checks
    assert [ok for _, ok in v.checks] == [True] * 7


def test_a_tie_within_one_standard_error_still_counts_as_monotone() -> None:
    # alpha 0.75 above alpha 1 by 0.33 points on average; the paired differences (+1, -1, +1 points)
    # have a standard error of 0.67 points: within the noise
    top1 = {**FALLING, "alpha-0.75": [0.86, 0.85, 0.85]}
    assert judge(numbers(top1)).verdict == "reproduced"


def test_verdict_partly_when_a_smaller_multiplier_wins_beyond_the_noise() -> None:
    top1 = {**FALLING, "rho-16": [0.87, 0.88, 0.86]}  # 16 px beats 28 px by 2 points, every seed
    v = judge(numbers(top1))
    assert v.verdict == "partly"
    assert [ok for _, ok in v.checks] == [True, True, True, True, False, True, False]
    assert "16 px (rho 4/7) minus" in v.checks[4][0]


def test_verdict_partly_when_accuracy_does_not_fall() -> None:
    # flat along alpha: every arm within the seed noise of the full net, none clearly below it
    flat = {**FALLING, **{f"alpha-{a}": [0.85, 0.83, 0.84] for a in (0.75, 0.5, 0.25)}}
    v = judge(numbers(flat))
    assert v.verdict == "partly"
    assert [ok for _, ok in v.checks] == [True, True, True, True, True, False, True]


def test_verdict_not_reproduced_when_nothing_holds() -> None:
    rising = {k: [1.0 - x for x in v] for k, v in FALLING.items()}  # accuracy grows as both shrink
    v = judge(numbers(rising, linear_cost=True, rho_params=1000))
    assert v.verdict == "not reproduced"
    assert "alpha^1.00" in v.checks[0][0] and "rho^1.00" in v.checks[1][0]


def test_verdict_inconclusive_when_an_arm_did_not_finish() -> None:
    v = judge(numbers({**FALLING, "alpha-0.5": []}))
    assert v.verdict == "inconclusive"
    assert v.checks[3][1] is None and v.checks[4][1] is True and v.checks[5][1] is True


def test_one_seed_allows_half_a_point() -> None:
    one = {k: v[:1] for k, v in FALLING.items()}
    assert judge(numbers({**one, "rho-24": [0.854]})).verdict == "reproduced"  # +0.4 points
    assert judge(numbers({**one, "rho-24": [0.856]})).verdict == "partly"  # +0.6 points


# ---------------------------------------------------------------- counts against the paper


def test_exponent_of_exact_powers() -> None:
    ms = [1.0, 0.75, 0.5, 0.25]
    assert exponent(ms, [m**2 for m in ms]) == pytest.approx(2.0)
    assert exponent(ms, [m**1.5 for m in ms]) == pytest.approx(1.5)
    assert math.isnan(exponent([1.0], [1.0]))


def _imagenet(alpha: float, size: int) -> tuple[int, int]:
    return model_cost(
        "mobilenet_v1",
        num_classes=1000,
        in_chans=3,
        image_size=size,
        small_input=False,
        model_kwargs={"width_mult": alpha},
    )


@pytest.mark.parametrize(
    ("alpha", "size", "paper_madds", "paper_params"),
    [
        (1.0, 224, 569, 4.2),  # table 6
        (0.75, 224, 325, 2.6),
        (0.5, 224, 149, 1.3),
        (0.25, 224, 41, 0.5),
        (1.0, 192, 418, 4.2),  # table 7: parameters unchanged
        (1.0, 160, 290, 4.2),
        (1.0, 128, 186, 4.2),
    ],
)
def test_imagenet_counts_are_the_papers_tables(
    alpha: float, size: int, paper_madds: int, paper_params: float
) -> None:
    params, madds = _imagenet(alpha, size)
    assert madds / 1e6 == pytest.approx(paper_madds, abs=1.0)  # the tables round to millions
    assert round(params / 1e6, 1) == paper_params


def test_the_papers_counts_give_the_rules_exponents() -> None:
    """The rule's tolerance (2 +- 0.2) admits the paper's own counts: 1.90 for alpha, 1.99 for rho."""
    widths, sizes = [1.0, 0.75, 0.5, 0.25], [224, 192, 160, 128]
    full = _imagenet(1.0, 224)[1]
    k_alpha = exponent(widths, [_imagenet(a, 224)[1] / full for a in widths])
    k_rho = exponent([s / 224 for s in sizes], [_imagenet(1.0, s)[1] / full for s in sizes])
    assert k_alpha == pytest.approx(1.90, abs=0.01) and k_rho == pytest.approx(1.99, abs=0.01)


def _by_hand(alpha: float, size: int, num_classes: int = 10, in_chans: int = 1) -> int:
    """The paper's eq. 5 over table 1 with the small-input stem (3x3, stride 1): a full 3x3 stem,
    D_K^2 M D_F^2 + M N D_F^2 per block (a stride-2 padded 3x3 maps D to ceil(D / 2)), the
    classifier; channels max(8, int(alpha C))."""

    def width(channels: int) -> int:
        return max(8, int(channels * alpha))

    d, m = size, width(32)
    total = 3 * 3 * in_chans * m * d * d
    for stride, out in BLOCKS:
        d, n = math.ceil(d / stride), width(out)
        total += 3 * 3 * m * d * d + m * n * d * d
        m = n
    return total + m * num_classes


def test_arm_costs_follow_the_papers_formula() -> None:
    for a in ARMS:
        alpha, size = a.overrides["model_kwargs"]["width_mult"], a.overrides.get("image_size", 28)
        _, madds = arm_cost(a)
        assert madds == _by_hand(alpha, size), a.name
    rho_params = {arm_cost(a)[0] for a in ARMS if a.name == "alpha-1.0" or a.name.startswith("rho-")}
    assert len(rho_params) == 1  # the resolution multiplier leaves the weights alone


def test_arms_are_the_papers_multipliers() -> None:
    (_, _, alpha), (_, _, rho) = CURVES
    assert [m for m, _ in alpha] == [1.0, 0.75, 0.5, 0.25]
    assert [m for m, _ in rho] == pytest.approx([1.0, 192 / 224, 160 / 224, 128 / 224])
    assert alpha[0][1] == rho[0][1]  # the full net is the first arm of both curves


# ---------------------------------------------------------------- end to end


def test_multiplier_runs_at_the_smoke_budget(tmp_path: Path) -> None:
    from cnnkit.lab.runner import run_experiments

    (result,) = run_experiments(["multiplier"], "smoke", output=tmp_path, device="cpu", threads=1)
    assert result["verdict"]["verdict"] in ("reproduced", "partly", "not reproduced")
    n = result["numbers"]
    assert n["arms"]["rho-16"]["mult_adds"] == arm_cost(ARMS[-1])[1]  # traced at the arm's 16 px
    meta = (tmp_path / "runs" / "multiplier" / "rho-16-seed0" / "config.yaml").read_text()
    assert "image_size: 16" in meta
    assert (tmp_path / "multiplier" / "tradeoff.png").stat().st_size > 0
    captions = [t["caption"] for t in result["tables"]]
    assert any(c.startswith("The paper beside this measurement") for c in captions)
