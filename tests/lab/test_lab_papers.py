"""The papers beside the lab's measurements (issue "The lab's verdicts at a budget that can
decide them, beside the papers' numbers"): each table quotes the paper's figure, and its one
sentence on agreement follows the measured numbers, not fixed prose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.lab.spec import BUDGETS, PAPER_CAPTION


def _caption(tables: list[Any]) -> str:
    (paper,) = [t for t in tables if t.caption.startswith(PAPER_CAPTION)]
    return str(paper.caption)


def test_dilation_quotes_yu_and_koltuns_3_7_15() -> None:
    from cnnkit.lab.experiments import dilation

    def numbers(fields: list[int]) -> dict[str, Any]:
        side = {
            "rf_analysis": fields,
            "rf_gradient": fields,
            "fill": [1.0] * len(fields),
            "output_size": [64, 64],
        }
        return {"dilations": [1, 2, 4], "dilated": side, "standard": side, "expected": {"dilated": fields}}

    assert "agree exactly" in _caption(dilation.tables(numbers([3, 7, 15])))
    assert "differ" in _caption(dilation.tables(numbers([3, 5, 7])))


def test_transposed_quotes_the_checkerboard_and_the_size_formula() -> None:
    from cnnkit.lab.experiments import transposed

    n: dict[str, Any] = {
        "k3s2": {"kernel": 3, "stride": 2, "ratio": 4.0},
        "k4s2": {"kernel": 4, "stride": 2, "ratio": 1.0},
        "resize": {"kernel": 3, "stride": 2, "ratio": 1.0},
        "output_size": [32, 32],
    }
    assert "every figure agrees" in _caption(transposed.tables(n))
    n["k4s2"]["ratio"] = 2.0
    assert "differ" in _caption(transposed.tables(n))


def test_stack_sentence_follows_the_sign_of_the_measured_gain() -> None:
    from cnnkit.lab.experiments.stack import _paper

    def numbers(gain: float) -> dict[str, Any]:
        pair = {"weight_ratio": 18 / 25, "accuracy_gain": {"mean": gain, "se": 0.002, "n": 3.0}}
        return {"pairs": {"5": pair, "7": {**pair, "weight_ratio": 27 / 49}}}

    agrees, disagrees = _paper(numbers(0.01)), _paper(numbers(-0.01))
    assert "the direction too" in agrees.caption and "+1.00" in str(agrees.rows[2])
    assert "the direction does not" in disagrees.caption
    assert agrees.rows[0][1].startswith("1.81")  # 49/27: "81% more" (Simonyan & Zisserman, sec. 2.3)
    assert agrees.rows[0][2] == "1.81"


def test_every_experiment_has_a_standard_budget_of_three_seeds_or_a_deterministic_one() -> None:
    from cnnkit.lab.experiments import EXPERIMENTS

    assert "standard" in BUDGETS
    for e in EXPERIMENTS.values():
        b = e.budgets["standard"]
        seeds = [b.seeds if a.seeds is None else min(a.seeds, b.seeds) for a in e.arms]
        assert not e.trains or min(seeds) >= 3, (e.name, seeds)


def test_the_report_shows_the_paper_under_the_verdict(tmp_path: Path) -> None:
    from cnnkit.lab.runner import run_experiments

    run_experiments(["dilation"], "smoke", output=tmp_path, device="cpu", threads=1)
    md = (tmp_path / "report.md").read_text()
    section = md[md.index("## dilation") :]
    assert f"**{PAPER_CAPTION} (Yu & Koltun 2016, Figure 1): the fields agree exactly.**" in section
    assert section.index(PAPER_CAPTION) < section.index("Setup:")
    assert PAPER_CAPTION in (tmp_path / "report.html").read_text()
