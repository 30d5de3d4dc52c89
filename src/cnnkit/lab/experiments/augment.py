"""Data augmentation (lecture slides "Data Augmentation": crop, cutout, mixup; and CutMix,
Yun et al. 2019).

The lecture: "deep learning is data hungry and can be easily overfitted -- let's augment
our datasets": random crops (translations) with flips, cutout (DeVries & Taylor 2017),
mixup ``x = lam x_i + (1 - lam) x_j`` with the labels mixed alike (Zhang et al. 2018). On a
small training subset fmnet trains with each; the report also shows what each does to a
batch (:mod:`cnnkit.data.augment`, the functions the trainer calls).
"""

from __future__ import annotations

from typing import Any

import torch

from cnnkit.lab.common import (
    Column,
    against_text,
    arm_table,
    budgets,
    clean_gap,
    effect_text,
    experiment,
    gap_cell,
    grade_effect,
    label_cell,
    load_test_split,
    mean,
    measure_arms,
    measured,
    paired_difference,
    paper_table,
    pct,
    per_arm_table,
    top1_cell,
)
from cnnkit.lab.figures import Accuracy, Custom, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="augment",
    title="Augmentation fights overfitting on small data",
    claim="Deep nets are data hungry and overfit easily; crops, flips, cutout, mixup and cutmix augment the data.",
    slide="Data Augmentation: Crop, Cutout, Mixup",
    rule="""
        Per augmentation: its test top-1 minus no augmentation's, paired by seed (the same training
        subset and order), as the mean over seeds and the standard error of the paired difference; a
        gain counts when it exceeds one standard error over at least two seeds. All four count:
        reproduced; no augmentation gains at all (every mean difference <= 0): not reproduced;
        otherwise partly (a gain within one standard error is below what the budget resolves); an
        augmentation without a finished pair of runs: inconclusive.
    """,
    notes="""
        fmnet narrowed to 16-32-64 channels. Horizontal flips suit Fashion-MNIST's clothes; on digits
        (mnist) they would not. Mixup and cutmix usually need longer training than this budget to pay
        off.
    """,
)

_NET = {"model_kwargs": {"widths": [16, 32, 64], "stem_width": 16}}
ARMS = (
    Arm("none", "fmnet", _NET, label="none"),
    Arm("crop_flip", "fmnet", {**_NET, "crop_pad": 2, "hflip": 0.5}, label="crop (pad 2) + flip"),
    Arm("cutout", "fmnet", {**_NET, "cutout": 8}, label="cutout 8x8"),
    Arm("mixup", "fmnet", {**_NET, "mixup": 0.4}, label="mixup alpha 0.4"),
    Arm("cutmix", "fmnet", {**_NET, "cutmix": 1.0}, label="cutmix alpha 1"),
)
BUDGETS = budgets(
    quick=Budget(epochs=12, train_subset=1000, test_subset=1000, seeds=2, batch_size=50),
    # the quick budget's 240 steps left every gain within the noise of 2 seeds (cutout +1.05
    # points, the best): small data stays the point (1,000 images), trained 2.5x as long (600
    # steps) so that the unaugmented net fits its images and overfits, which is what augmentation
    # is claimed to fight; 3 seeds for a paired standard error; 2,000 test images halve the
    # evaluation's share of a difference's noise. About 27 s a run on 2 idle cores: 7 minutes for
    # the 15 runs (benchmarks/lab_budget.py).
    standard=Budget(epochs=30, train_subset=1000, test_subset=2000, seeds=3, batch_size=50),
    full=Budget(epochs=60, train_subset=5000, seeds=3, batch_size=64),
)
AUGMENTED = ("crop_flip", "cutout", "mixup", "cutmix")
# DeVries & Taylor 2017, Table 1: ResNet-18 on CIFAR-10 with flips and translations ("C10+"),
# test error (%, mean of 5 runs) without and with cutout (16x16 patches)
PAPER_CUTOUT_ERROR = (4.72, 3.99)


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx)
    for name, n in arms.items():
        _, gap = clean_gap(ctx, name, n["test_top1"])
        n["gap_mean"] = mean(gap)
    gains = {k: paired_difference(arms[k]["test_top1"], arms["none"]["test_top1"]) for k in AUGMENTED}
    return {"arms": arms, "gain": gains}


def judge(n: dict[str, Any]) -> Verdict:
    arms, gain = n["arms"], n["gain"]
    grades = {k: grade_effect(gain[k]) for k in AUGMENTED}
    checks: list[Check] = [
        (
            effect_text(gain[k], f"{arms[k]['label']} minus no augmentation, test top-1"),
            None if grades[k] == "unknown" else grades[k] == "beyond",
        )
        for k in AUGMENTED
    ]
    missing = [arms[k]["label"] for k in AUGMENTED if grades[k] == "unknown"]
    if missing:
        return Verdict(
            "inconclusive", f"no finished pair of runs with no augmentation for {', '.join(missing)}", checks
        )
    gains = "; ".join(
        f"{arms[k]['label']} {100 * gain[k]['mean']:+.2f}"
        + (f" (SE {100 * gain[k]['se']:.2f})" if measured(gain[k]["se"]) else " (one seed)")
        for k in AUGMENTED
    )
    summary = (
        f"no augmentation {pct(arms['none']['test_top1_mean'])}; gains over it in points, paired by seed: "
        f"{gains}"
    )
    labels = {
        g: [arms[k]["label"] for k in AUGMENTED if grades[k] == g] for g in ("beyond", "within", "against")
    }
    if len(labels["beyond"]) == len(AUGMENTED):
        return Verdict("reproduced", summary + "; every gain beyond one standard error", checks)
    if len(labels["against"]) == len(AUGMENTED):
        return Verdict(
            "not reproduced", summary + "; no augmentation raises the test top-1 on this data", checks
        )
    why = [
        f"{', '.join(labels['within'])}: a gain, but not beyond one standard error over two seeds or more "
        "(below what this budget resolves)"
        if labels["within"]
        else "",
        *(
            f"{arms[k]['label']}: no gain, {against_text(gain[k])}"
            for k in AUGMENTED
            if grades[k] == "against"
        ),
    ]
    return Verdict("partly", summary + "; " + "; ".join(w for w in why if w), checks)


def _paper(n: dict[str, Any]) -> Table:
    """DeVries & Taylor 2017, Table 1: cutout lowers ResNet-18's CIFAR-10 test error from 4.72% to
    3.99% (on top of flips and translations): 0.73 points, 15% of the error. Mixup (Zhang et al.
    2018) and CutMix (Yun et al. 2019) report gains too; their figures are not quoted here."""
    before, after = PAPER_CUTOUT_ERROR
    paper_rel = (before - after) / before
    d, none = n["gain"]["cutout"], n["arms"]["none"]["test_top1_mean"]
    err_none = 1 - none
    err_cut = err_none - d["mean"]
    known = measured(d["mean"], none) and int(d["n"]) > 0
    rel = d["mean"] / err_none if known and err_none > 0 else float("nan")
    se = f", SE {100 * d['se']:.2f}" if measured(d["se"]) else ", one seed"
    rows = [
        (
            "test error without -> with cutout (%)",
            f"{before:.2f} -> {after:.2f} (ResNet-18, CIFAR-10 with flips and translations, 5 runs)",
            f"{100 * err_none:.2f} -> {100 * err_cut:.2f} (fmnet 16-32-64, no other augmentation)"
            if known
            else "not measured",
        ),
        (
            "cutout minus none, test top-1 (points)",
            f"{before - after:+.2f}",
            f"{100 * d['mean']:+.2f}{se}" if known else "n/a",
        ),
        (
            "relative reduction of the test error",
            f"{100 * paper_rel:.1f}%",
            f"{100 * rel:.1f}%" if measured(rel) else "n/a",
        ),
    ]
    if not measured(rel):
        agreement = "cutout was not measured against no augmentation."
    elif rel <= 0:
        agreement = (
            f"the direction disagrees: cutout does not lower the error here ({100 * d['mean']:+.2f} points; "
            f"the paper: {before - after:.2f} points lower)."
        )
    else:
        ratio = rel / paper_rel
        size = "about the same size" if 0.5 <= ratio <= 2 else "smaller" if ratio < 0.5 else "larger"
        noise = "beyond" if grade_effect(d) == "beyond" else "within"
        agreement = (
            f"the direction agrees: cutout lowers the test error by {100 * rel:.1f}% of it here against "
            f"{100 * paper_rel:.1f}% in the paper ({size}), {noise} one standard error of the paired "
            "difference."
        )
    return paper_table("DeVries & Taylor 2017, Table 1", rows, agreement)


def tables(n: dict[str, Any]) -> list[Table]:
    columns: list[Column] = [
        ("augmentation", label_cell),
        ("test top-1", top1_cell),
        ("gain (points)", lambda k, _: "-" if k == "none" else f"{100 * n['gain'][k]['mean']:+.2f}"),
        (
            "SE of the gain",
            lambda k, _: (
                "-" if k == "none" or not measured(n["gain"][k]["se"]) else f"{100 * n['gain'][k]['se']:.2f}"
            ),
        ),
        ("train-test gap (points)", gap_cell),
    ]
    return [
        arm_table(n["arms"]),
        per_arm_table(
            "Test top-1, gain over no augmentation (paired by seed, with its standard error) and the clean "
            "train-test gap",
            n["arms"],
            columns,
        ),
        _paper(n),
    ]


def _samples(ctx: Context, n: dict[str, Any]) -> Any:
    from cnnkit.data.augment import cutmix, cutout, mixup, random_crop, random_flip

    x8, y = load_test_split(ctx)
    x = x8[:8].float() / 255
    y1 = torch.nn.functional.one_hot(y[:8], int(y.max()) + 1).float()
    rows = {"original": x}
    g = torch.Generator().manual_seed(0)
    rows["crop (pad 2) + flip"] = random_flip(random_crop(x, 2, g), g, 0.5)
    rows["cutout 8x8"] = cutout(x, 8, g)
    rows["mixup alpha 0.4"] = mixup(x, y1, 0.4, g)[0]
    rows["cutmix alpha 1"] = cutmix(x, y1, 1.0, g)[0]
    fig = new_figure(9, 6)
    axes = fig.subplots(len(rows), 8, squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(8):
            ax = axes[r, c]
            ax.imshow(imgs[c].permute(1, 2, 0).clamp(0, 1).numpy().squeeze(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.suptitle("what each augmentation does to a batch (cnnkit.data.augment)")
    return fig


FIGURES = plots(
    Custom("samples", "Eight test images under each augmentation (one draw).", _samples),
    Accuracy("Test top-1 per augmentation; dots are seeds."),
)


EXPERIMENT = experiment(__name__)
