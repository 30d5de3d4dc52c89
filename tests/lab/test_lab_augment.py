"""The augment experiment: its verdict rule on fixed numbers (every gain paired by seed, counted
beyond one standard error), its paper table beside DeVries & Taylor 2017, and its standard budget."""

from __future__ import annotations

import math
from typing import Any

from cnnkit.lab.common import paired_difference
from cnnkit.lab.experiments import augment
from cnnkit.lab.spec import PAPER_CAPTION

NONE = [0.80, 0.82, 0.81]  # no augmentation's top-1 at seeds 0, 1, 2


def _numbers(gains: dict[str, list[float]]) -> dict[str, Any]:
    """Numbers as measure() returns them, from each augmentation's top-1 gain at each seed."""
    tops = {k: [a + g for a, g in zip(NONE, gains[k], strict=False)] for k in augment.AUGMENTED}
    arms = {"none": {"label": "none", "test_top1_mean": sum(NONE) / 3}} | {
        k: {"label": k, "test_top1_mean": sum(v) / len(v) if v else math.nan} for k, v in tops.items()
    }
    return {"arms": arms, "gain": {k: paired_difference(v, NONE) for k, v in tops.items()}}


def _verdict(gains: dict[str, list[float]]) -> tuple[str, str]:
    v = augment.judge(_numbers(gains))
    return v.verdict, v.summary


CLEAR = [0.02, 0.03, 0.025]  # +2.5 points, standard error 0.29
NOISY = [0.03, -0.02, 0.0]  # +0.33 points, standard error 1.45
WORSE = [-0.01, -0.02, -0.015]


def test_every_gain_beyond_one_standard_error_is_reproduced() -> None:
    verdict, summary = _verdict(dict.fromkeys(augment.AUGMENTED, CLEAR))
    assert verdict == "reproduced"
    assert "cutout +2.50 (SE 0.29)" in summary


def test_a_gain_within_the_noise_is_partly_and_says_so() -> None:
    verdict, summary = _verdict(dict.fromkeys(augment.AUGMENTED, CLEAR) | {"mixup": NOISY})
    assert verdict == "partly"
    assert "mixup: a gain, but not beyond one standard error" in summary
    assert "below what this budget resolves" in summary
    verdict, summary = _verdict(dict.fromkeys(augment.AUGMENTED, CLEAR) | {"cutmix": WORSE})
    assert verdict == "partly" and "cutmix: no gain" in summary
    # one seed: no standard error, so no gain counts
    assert _verdict({k: CLEAR[:1] for k in augment.AUGMENTED})[0] == "partly"


def test_no_gain_anywhere_is_not_reproduced() -> None:
    verdict, summary = _verdict(dict.fromkeys(augment.AUGMENTED, WORSE))
    assert verdict == "not reproduced"
    assert "no augmentation raises the test top-1 on this data" in summary


def test_an_augmentation_without_runs_is_inconclusive() -> None:
    verdict, summary = _verdict(dict.fromkeys(augment.AUGMENTED, CLEAR) | {"cutout": []})
    assert verdict == "inconclusive" and "cutout" in summary


def test_paper_sentence_follows_the_measured_cutout_gain() -> None:
    def caption(cutout: list[float]) -> str:
        table = augment._paper(_numbers(dict.fromkeys(augment.AUGMENTED, CLEAR) | {"cutout": cutout}))
        assert table.caption.startswith(PAPER_CAPTION)
        assert table.rows[0][1].startswith("4.72 -> 3.99")
        return table.caption

    # none errs 19%: 2.5 points less is 13% of the error, against the paper's 15.5%
    assert "the direction agrees" in caption(CLEAR) and "(about the same size), beyond" in caption(CLEAR)
    assert "(smaller), within" in caption([0.005, -0.002, 0.003])
    assert "the direction disagrees" in caption(WORSE)
    assert "not measured" in caption([])


def test_standard_budget_gives_every_arm_three_seeds_and_trains_longer_than_quick() -> None:
    b, quick = augment.EXPERIMENT.budgets["standard"], augment.EXPERIMENT.budgets["quick"]
    assert b.seeds >= 3 and all(a.seeds is None or a.seeds >= 3 for a in augment.ARMS)
    assert b.epochs * b.train_subset > quick.epochs * (quick.train_subset or 0)  # type: ignore[operator]
