"""The init experiment: the statistics at initialisation against the lecture's slides (collapse,
saturation, symmetry), its verdict rule on fixed numbers, its paper table beside He et al. 2015
and its standard budget."""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from cnnkit.lab.common import paired_difference
from cnnkit.lab.experiments import init
from cnnkit.lab.spec import PAPER_CAPTION

GOOD_STATS: dict[str, dict[str, Any]] = {
    "tanh, N(0, 0.01^2)": {"std_ratio": 4e-15},
    "tanh, N(0, 1)": {"saturated_last": 0.9},
    "tanh, Xavier": {"std_ratio": 0.24},
    "relu, Xavier": {"std_ratio": 3.3e-3},
    "relu, Kaiming": {"std_ratio": 2.57},
    "relu, constant 0.01": {"distinct_filters": 1},
    "relu, zero": {"grad_norm_total": 0.0},
}
BAD_STATS: dict[str, dict[str, Any]] = {
    "tanh, N(0, 0.01^2)": {"std_ratio": 0.5},
    "tanh, N(0, 1)": {"saturated_last": 0.1},
    "tanh, Xavier": {"std_ratio": 50.0},
    "relu, Xavier": {"std_ratio": 0.9},
    "relu, Kaiming": {"std_ratio": 40.0},
    "relu, constant 0.01": {"distinct_filters": 64},
    "relu, zero": {"grad_norm_total": 1.0},
}
TRAINED = {  # top-1 at seeds 0, 1, 2
    "default": [0.60, 0.58, 0.61],
    "zero": [0.10, 0.10, 0.10],
    "normal": [0.10, 0.11, 0.10],
    "xavier": [0.45, 0.50, 0.40],
    "kaiming": [0.57, 0.60, 0.55],
}


def _numbers(stats: dict[str, dict[str, Any]], trained: dict[str, list[float]]) -> dict[str, Any]:
    arms = {k: {"test_top1_mean": sum(v) / len(v) if v else math.nan} for k, v in trained.items()}
    gain = {k: paired_difference(trained["kaiming"], trained[k]) for k in ("zero", "normal", "xavier")}
    return {"init_stats": stats, "arms": arms, "kaiming_gain": gain, "chance": 0.1}


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
    assert len(layers) == init.STAT_LAYERS  # the 19 convolutions of the plain 20-layer net, each with tanh
    assert all(b.std < a.std for a, b in itertools.pairwise(layers))


def test_verdict_follows_the_rule() -> None:
    assert init.judge(_numbers(GOOD_STATS, TRAINED)).verdict == "reproduced"
    # N(0, 0.01^2) escapes chance in training: one check of six fails, and the summary says which
    escaped = init.judge(_numbers(GOOD_STATS, TRAINED | {"normal": [0.30, 0.35, 0.32]}))
    assert escaped.verdict == "partly" and "fails: trained" in escaped.summary
    # one seed: the gaps are large, but their noise is unknown
    one = init.judge(_numbers(GOOD_STATS, {k: v[:1] for k, v in TRAINED.items()}))
    assert one.verdict == "partly" and "one seed: noise unknown" in one.summary
    assert init.judge(_numbers(BAD_STATS, TRAINED | {"kaiming": [0.1, 0.1, 0.1]})).verdict == "not reproduced"
    assert init.judge(_numbers(GOOD_STATS, TRAINED | {"kaiming": []})).verdict == "inconclusive"


def test_paper_sentence_follows_the_statistics_and_the_training() -> None:
    def caption(stats: dict[str, dict[str, Any]], trained: dict[str, list[float]]) -> str:
        table = init._paper(_numbers(stats, trained))
        assert table.caption.startswith(PAPER_CAPTION)
        assert table.rows[0][1].startswith("2^-9 = 1.95e-03")
        return table.caption

    agrees = caption(GOOD_STATS, TRAINED)
    assert (
        "the statistics agree" in agrees and "Kaiming beats Xavier by 12.33 points beyond the noise" in agrees
    )
    stalled = caption(GOOD_STATS, TRAINED | {"xavier": [0.10, 0.11, 0.10]})
    assert "Xavier stays at chance, as in the paper's Figure 3" in stalled
    assert "within the noise" in caption(GOOD_STATS, TRAINED | {"xavier": [0.50, 0.62, 0.55]})
    against = caption(BAD_STATS, TRAINED | {"xavier": [0.70, 0.70, 0.70]})
    assert "the statistics differ from the derivation" in against and "against the paper" in against


def test_standard_budget_gives_every_arm_three_seeds() -> None:
    b = init.EXPERIMENT.budgets["standard"]
    assert b.seeds >= 3 and all(a.seeds is None or a.seeds >= 3 for a in init.ARMS)
    assert init.XAVIER_RELU_RATIO == 2**-9
