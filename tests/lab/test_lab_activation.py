"""The activation experiment: the epochs to a training error (Krizhevsky et al.'s measure), its
verdict rule on fixed numbers (mean training losses paired by seed), its paper table beside
Krizhevsky et al. 2012, Figure 1, its standard budget and a smoke run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cnnkit.lab.common import paired_difference
from cnnkit.lab.experiments import activation
from cnnkit.lab.spec import PAPER_CAPTION

MEDIAN = [1.40, 1.45, 1.50]  # the non-saturating median's mean training loss at seeds 0, 1, 2


def _numbers(
    sigmoid: list[float], tanh: list[float], speedup: dict[str, Any] | None = None
) -> dict[str, Any]:
    auc = dict.fromkeys(activation.NON_SATURATING + activation.OTHERS, 1.45)
    auc |= {"sigmoid": sum(sigmoid) / max(len(sigmoid), 1), "tanh": sum(tanh) / max(len(tanh), 1)}
    return {
        "loss_auc": auc,
        "non_saturating_median": 1.45,
        "slower": {
            "sigmoid": paired_difference(sigmoid, MEDIAN),
            "tanh": paired_difference(tanh, MEDIAN),
        },
        "speedup": speedup or {"relu": [1.2], "tanh": [4.0], "ratio": 3.3, "lower_bound": False},
        "top1": dict.fromkeys(auc, 0.8),
    }


SLOW = [2.20, 2.25, 2.30]
TIED = [1.45, 1.50, 1.42]  # +0.007, standard error 0.043


def test_epochs_to_error_interpolates_between_epoch_ends() -> None:
    history = [{"train_acc": 0.5}, {"train_acc": 0.8}]  # errors 0.5, then 0.2
    assert activation.epochs_to_error(history, 0.25) == pytest.approx(1 + 0.25 / 0.3)
    assert activation.epochs_to_error([{"train_acc": 0.9}], 0.25) == pytest.approx(
        0.65 / 0.8
    )  # from 90% at 0
    assert activation.epochs_to_error(history, 0.1) is None


def test_both_slower_beyond_the_noise_is_reproduced() -> None:
    v = activation.judge(_numbers(SLOW, [2.00, 2.10, 2.05]))
    assert v.verdict == "reproduced", v.summary
    assert "tanh +0.600 (SE 0.029)" in v.summary


def test_one_within_the_noise_is_partly_and_says_so() -> None:
    v = activation.judge(_numbers(SLOW, TIED))
    assert v.verdict == "partly"
    assert "tanh slower, but not beyond one standard error" in v.summary
    assert "below what this budget resolves" in v.summary
    v = activation.judge(_numbers(SLOW, [1.2, 1.3, 1.25]))
    assert v.verdict == "partly" and "tanh not slower" in v.summary
    assert activation.judge(_numbers(SLOW[:1], SLOW[:1])).verdict == "partly"  # one seed: noise unknown


def test_neither_slower_is_not_reproduced_and_no_run_is_inconclusive() -> None:
    assert activation.judge(_numbers([1.2, 1.3, 1.25], [1.3, 1.3, 1.3])).verdict == "not reproduced"
    assert activation.judge(_numbers(SLOW, [])).verdict == "inconclusive"


def test_paper_sentence_follows_the_measured_speedup() -> None:
    def caption(ratio: float, bound: bool = False) -> str:
        sp = {"relu": [1.0, 1.2], "tanh": [None if bound else 3.0, 4.0], "ratio": ratio, "lower_bound": bound}
        table = activation._paper(_numbers(SLOW, SLOW, sp))
        assert table.caption.startswith(PAPER_CAPTION) and table.rows[1][1] == "6x"
        return table.caption

    assert "the direction agrees" in caption(4.0) and "(about the same size)" in caption(4.0)
    assert "(smaller)" in caption(1.5)
    assert "the direction disagrees" in caption(0.8)
    assert "at least 5.0 times" in caption(5.0, bound=True) and "a lower bound" in caption(5.0, bound=True)
    assert "no speed-up to compare" in caption(float("nan"))


def test_standard_budget_gives_every_arm_three_seeds() -> None:
    b = activation.EXPERIMENT.budgets["standard"]
    assert b.seeds >= 3 and all(a.seeds is None or a.seeds >= 3 for a in activation.ARMS)
    assert b.epochs > activation.EXPERIMENT.budgets["quick"].epochs


def test_activation_runs_at_the_smoke_budget(tmp_path: Path) -> None:
    from cnnkit.lab.runner import run_experiments

    (result,) = run_experiments(["activation"], "smoke", output=tmp_path, device="cpu", threads=1)
    n = result["numbers"]
    assert set(n["slower"]) == {"sigmoid", "tanh"} and n["slower"]["tanh"]["n"] == 1
    assert set(n["speedup"]) == {"relu", "tanh", "ratio", "lower_bound"}
    assert result["verdict"]["verdict"] in ("partly", "not reproduced")  # one seed: nothing counts
    assert any(t["caption"].startswith(PAPER_CAPTION) for t in result["tables"])
