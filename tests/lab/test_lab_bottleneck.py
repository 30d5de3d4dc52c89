"""The bottleneck experiment: its verdict rule on fixed numbers, its counts against the lecture's
worked example and the paper's Table 1 (Szegedy et al. 2015), its nets, and a smoke run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import cnnkit
from cnnkit.analysis.summary import summarize
from cnnkit.lab.experiments import bottleneck
from cnnkit.models.googlenet import MiniGoogLeNet, googlenet_mini, googlenet_mini_naive

NAIVE_MULT_ADDS = 37_008_480
REDUCED_MULT_ADDS = 14_228_576


def _numbers(mean: float, se: float, n: int, saving: float = 0.615) -> dict[str, Any]:
    return {"saving": saving, "accuracy_gain": {"mean": mean, "se": se, "n": float(n), "wins": 0.0}}


def test_verdict_follows_the_rule() -> None:
    def verdict(mean: float, se: float, n: int = 3, saving: float = 0.615) -> str:
        return bottleneck.judge(_numbers(mean, se, n, saving)).verdict

    assert verdict(0.002, 0.003) == "reproduced"  # reduced as accurate
    assert verdict(-0.004, 0.002) == "reproduced"  # below, within the 0.5-point floor
    assert verdict(-0.008, 0.01) == "reproduced"  # below, within one standard error
    assert verdict(-0.012, 0.004) == "partly"  # below by more than both
    assert verdict(-0.004, math.nan, n=1) == "reproduced"  # one seed: the 0.5-point floor
    assert verdict(-0.006, math.nan, n=1) == "partly"
    assert verdict(0.01, 0.001, saving=0.5) == "not reproduced"  # the saving fails
    assert verdict(math.nan, math.nan, n=0) == "inconclusive"


def test_worked_example_matches_the_lecture() -> None:
    """28x28x192 in, 5x5 conv to 32: 28*28*32*5*5*192 directly; 28*28*16*192 + 28*28*32*5*5*16 with a 1x1 to 16."""
    w = bottleneck.worked_example()
    assert w["direct"] == 28 * 28 * 32 * 5 * 5 * 192 == 120_422_400
    assert w["reduced"] == 28 * 28 * 16 * 192 + 28 * 28 * 32 * 5 * 5 * 16 == 2_408_448 + 10_035_200
    assert round(w["reduced"] / 1e5) / 10 == 12.4


def test_googlenet_modules_match_paper_table_1_ops() -> None:
    """Table 1's "ops" column (M, rounded either way: 4a's 73.6M reads 73M, 4b's 87.9M 88M) for the
    reduced modules; 5a reads 54M in the paper against 51.1M counted, and is left out."""
    paper_m = {
        "inception3a": 128, "inception3b": 304, "inception4a": 73, "inception4b": 88,
        "inception4c": 100, "inception4d": 119, "inception4e": 170, "inception5b": 71,
    }  # fmt: skip
    g = bottleneck.googlenet_module_costs()
    for name, m in paper_m.items():
        assert abs(g[name]["reduced"] - m * 1e6) < 1e6, name
    # inception(3a) naive: 28*28*192*(64 + 9*128 + 25*32)
    assert g["inception3a"]["naive"] == 28 * 28 * 192 * (64 + 9 * 128 + 25 * 32) == 303_464_448
    assert 1.5e9 < g["googlenet"]["reduced"] < 1.6e9  # sec. 5: "1.5 billion multiply-adds"
    assert g["googlenet"]["naive"] > 2.5 * g["googlenet"]["reduced"]


def test_nets_mult_adds_by_hand() -> None:
    """Per module at 14x14 / 7x7 (stem 3x3 to 32 at 28x28, classifier 368 -> 10)."""
    stem, fc = 28 * 28 * 32 * 9, 368 * 10
    naive = [
        14 * 14 * 32 * (16 + 9 * 32 + 25 * 16),
        14 * 14 * 96 * (32 + 9 * 48 + 25 * 16),
        7 * 7 * 192 * (48 + 9 * 96 + 25 * 32),
    ]

    def reduced_module(c: int, ch1: int, r3: int, ch3: int, r5: int, ch5: int) -> int:
        return c * ch1 + c * r3 + r3 * 9 * ch3 + c * r5 + r5 * 25 * ch5 + c * c  # pool proj keeps c

    reduced = [
        14 * 14 * reduced_module(32, 16, 16, 32, 8, 16),
        14 * 14 * reduced_module(96, 32, 32, 48, 8, 16),
        7 * 7 * reduced_module(192, 48, 48, 96, 16, 32),
    ]
    assert stem + sum(naive) + fc == NAIVE_MULT_ADDS
    assert stem + sum(reduced) + fc == REDUCED_MULT_ADDS
    costs = bottleneck.net_costs()
    assert costs == {"reduced": REDUCED_MULT_ADDS, "naive": NAIVE_MULT_ADDS}
    saving = 1 - REDUCED_MULT_ADDS / NAIVE_MULT_ADDS
    assert saving == pytest.approx(0.6155, abs=1e-4) and saving >= bottleneck.SAVING_AT_LEAST


@pytest.mark.parametrize("builder", [googlenet_mini, googlenet_mini_naive])
def test_nets_have_equal_widths_and_fashion_mnist_shapes(builder: Any) -> None:
    model = builder(num_classes=10, in_chans=1, small_input=True)
    assert isinstance(model, MiniGoogLeNet)
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    widths = [m.out_channels for m in model.features if hasattr(m, "out_channels")]
    assert widths == [96, 192, 368]
    big = builder(num_classes=5, in_chans=3, small_input=False).eval()
    with torch.no_grad():
        assert big(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_the_two_nets_differ_only_in_the_reductions() -> None:
    reduced, naive = googlenet_mini(), googlenet_mini_naive()
    convs = lambda m: [c.kernel_size for c in m.modules() if isinstance(c, nn.Conv2d)]  # noqa: E731
    big = lambda m: [k for k in convs(m) if k != (1, 1)]  # noqa: E731
    assert big(reduced) == big(naive)  # the same 3x3 and 5x5 convolutions, in the same places
    assert len(convs(reduced)) - len(convs(naive)) == 3 * 3  # two reductions and a projection a module
    assert reduced.reduction and not naive.reduction
    with pytest.raises(ValueError, match="googlenet_mini_naive sets reduction=False"):
        googlenet_mini_naive(reduction=True)
    m = cnnkit.create_model("googlenet_mini", num_classes=10, in_chans=1, small_input=True)
    assert summarize(m, (1, 28, 28)).total_mult_adds == REDUCED_MULT_ADDS


def test_bottleneck_runs_at_the_smoke_budget(tmp_path: Path) -> None:
    from cnnkit.lab.runner import run_experiments

    (result,) = run_experiments(["bottleneck"], "smoke", output=tmp_path, device="cpu", threads=1)
    assert result["verdict"]["verdict"] in ("reproduced", "partly")  # the saving holds whatever the accuracy
    assert result["numbers"]["net_mult_adds"] == {"reduced": REDUCED_MULT_ADDS, "naive": NAIVE_MULT_ADDS}
    captions = [t["caption"] for t in result["tables"]]
    assert any(c.startswith("The paper beside this measurement") for c in captions)
