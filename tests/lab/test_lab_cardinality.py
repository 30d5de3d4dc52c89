"""The cardinality experiment (ResNeXt, Xie et al. 2017) and the ResNeXt-29 it trains: the paper's
parameter counts and block formula, the equal complexity of the arms, the verdict rule on fixed
numbers, and one run at the smoke budget."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import cnnkit
from cnnkit.analysis.summary import summarize
from cnnkit.lab.experiments.cardinality import (
    ARMS,
    PAPER_TABLE_3,
    PATHS,
    STAGE1_CHANNELS,
    block_weights,
    counted_block_weights,
    judge,
)
from cnnkit.lab.experiments.cardinality import tables as cardinality_tables
from cnnkit.lab.spec import Verdict


def _summary(in_chans: int = 3, size: int = 32, **kwargs: Any) -> Any:
    with torch.device("meta"):
        net = cnnkit.create_model("resnext29", num_classes=10, in_chans=in_chans, **kwargs)
    return summarize(net, (in_chans, size, size))


# ---------------------------------------------------------------------------- the model


@pytest.mark.parametrize(("cardinality", "millions"), [(8, 34.4), (16, 68.1)])
def test_resnext29_64d_has_the_papers_parameters(cardinality: int, millions: float) -> None:
    """Xie et al. 2017, table 7 (CIFAR-10): ResNeXt-29 8x64d 34.4M, 16x64d 68.1M parameters."""
    params = _summary(cardinality=cardinality, bottleneck_width=64).total_params
    assert abs(params / 1e6 - millions) / millions < 0.01


def test_resnext29_layout_is_the_papers() -> None:
    """29 weighted layers (stem, 27 block convolutions, classifier; projections aside), C groups of
    d channels in stage 1, doubling per stage, outputs four times the stage widths."""
    net = cnnkit.create_model("resnext29", num_classes=10, cardinality=8, bottleneck_width=64)
    convs = [m for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and "downsample" not in n]
    assert len(convs) + 1 == 29
    grouped = [m for m in convs if m.groups > 1]
    assert [m.in_channels for m in grouped[::3]] == [512, 1024, 2048]
    assert all(m.groups == 8 for m in grouped)
    assert net.num_features == 1024


def test_resnext29_forward_shapes_and_checks() -> None:
    net = cnnkit.create_model(
        "resnext29", num_classes=7, in_chans=1, cardinality=2, bottleneck_width=5, widths=[8, 16, 32]
    )
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    assert net.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 128, 7, 7)
    with pytest.raises(ValueError, match="pass cardinality= instead"):
        cnnkit.create_model("resnext29", groups=4)
    with pytest.raises(ValueError, match="fractional group widths"):
        cnnkit.create_model("resnext29", bottleneck_width=5, widths=[16, 24, 32])  # 7.5 in stage 2
    with pytest.raises(ValueError, match="three positive integer stage widths"):
        cnnkit.create_model("resnext29", widths=[8, 16])
    with pytest.raises(ValueError, match="integer cardinality >= 1"):
        cnnkit.create_model("resnext29", cardinality=0)


# ---------------------------------------------------------------------------- counting facts


def test_block_formula_gives_the_papers_table_2() -> None:
    """Table 2 (ResNeXt-50 conv2, 256 channels in and out): every setting ~70k weights, and the
    3x3 convolutions have C*d = 64, 80, 96, 112, 128 channels."""
    settings = list(PAPER_TABLE_3)
    assert [c * d for c, d in settings] == [64, 80, 96, 112, 128]
    for c, d in settings:
        assert abs(block_weights(c, d, 256) - 70_000) / 70_000 < 0.03


@pytest.mark.parametrize(("cardinality", "width"), PATHS)
def test_block_formula_matches_the_counted_block(cardinality: int, width: int) -> None:
    assert counted_block_weights(cardinality, width) == block_weights(cardinality, width, STAGE1_CHANNELS)


def test_the_arms_are_table_2_divided_by_eight_at_equal_complexity() -> None:
    assert [(c, 8 * d) for c, d in PATHS] == list(PAPER_TABLE_3)[:3]
    costs = [_summary(in_chans=1, size=28, **arm.overrides["model_kwargs"]) for arm in ARMS]
    for key in ("total_params", "total_mult_adds"):
        values = [getattr(s, key) for s in costs]
        assert max(values) / min(values) - 1 < 0.02, (key, values)


# ---------------------------------------------------------------------------- the verdict rule


def _numbers(
    top1: dict[str, list[float]], params: tuple[int, int, int] = (80130, 79736, 79342)
) -> dict[str, Any]:
    from cnnkit.lab.common import paired_difference

    base = top1["c1"]
    return {
        "param_spread": max(params) / min(params) - 1,
        "mult_add_spread": 0.017,
        "gain": paired_difference(top1["c4"], base),
        "top": "ResNeXt-29 4x3d",
    }


def _verdict(c1: list[float], c4: list[float], **kwargs: Any) -> Verdict:
    return judge(_numbers({"c1": c1, "c4": c4}, **kwargs))


def test_rule_reproduced_when_beyond_one_standard_error() -> None:
    v = _verdict([0.80, 0.81, 0.82], [0.82, 0.825, 0.83])
    assert v.verdict == "reproduced", v.summary


def test_rule_partly_when_better_within_the_noise_or_too_few_seeds() -> None:
    assert _verdict([0.80, 0.81, 0.82], [0.83, 0.80, 0.821]).verdict == "partly"
    assert _verdict([0.80, 0.81], [0.82, 0.83]).verdict == "partly"  # two seeds: not enough
    assert _verdict([0.80], [0.82]).verdict == "partly"


def test_rule_not_reproduced_when_equal_or_worse() -> None:
    assert _verdict([0.82, 0.83, 0.84], [0.80, 0.81, 0.82]).verdict == "not reproduced"
    assert _verdict([0.82, 0.83], [0.82, 0.83]).verdict == "not reproduced"


def test_rule_inconclusive_without_equal_cost_or_runs() -> None:
    v = _verdict([0.80, 0.81, 0.82], [0.82, 0.825, 0.83], params=(80000, 80000, 90000))
    assert v.verdict == "inconclusive" and "costs differ" in v.summary
    assert _verdict([], []).verdict == "inconclusive"


def test_paper_table_sentence_follows_the_numbers() -> None:
    from cnnkit.lab.common import paired_difference

    arms = {
        a.name: {
            "label": a.title,
            "cardinality": c,
            "test_top1_mean": top1,
        }
        for a, (c, _), top1 in zip(ARMS, PATHS, (0.80, 0.81, 0.82), strict=True)
    }
    n = {"arms": arms, "gain": paired_difference([0.82, 0.83, 0.81], [0.80, 0.80, 0.80])}
    from cnnkit.lab.experiments.cardinality import _agreement

    text = _agreement(n)
    assert text.startswith("the direction agrees") and "-2.00 points" in text and "falls" in text
    n["gain"] = paired_difference([0.79, 0.78, 0.80], [0.80, 0.80, 0.80])
    assert _agreement(n).startswith("the direction disagrees")
    assert math.isclose(PAPER_TABLE_3[(4, 24)] - PAPER_TABLE_3[(1, 64)], -1.3)


# ---------------------------------------------------------------------------- end to end


def test_cardinality_runs_at_the_smoke_budget(tmp_path: Path) -> None:
    from cnnkit.lab.runner import run_experiments

    (result,) = run_experiments(["cardinality"], "smoke", output=tmp_path, device="cpu", threads=1)
    assert result["verdict"]["verdict"] in ("reproduced", "partly", "not reproduced")
    n = result["numbers"]
    assert n["param_spread"] < 0.02 and n["mult_add_spread"] < 0.02
    for v in n["arms"].values():
        assert v["block_formula"] == v["block_counted"]
    captions = [t.caption for t in cardinality_tables(n)]
    assert any(c.startswith("The paper beside this measurement (Xie et al. 2017, table 3)") for c in captions)
