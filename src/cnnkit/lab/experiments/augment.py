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
    arm_table,
    budgets,
    clean_gap,
    experiment,
    gap_cell,
    label_cell,
    load_test_split,
    mean,
    measure_arms,
    paired_difference,
    pct,
    per_arm_table,
    top1_cell,
)
from cnnkit.lab.figures import Accuracy, Custom, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Check, Context, Table, Verdict, combine

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="augment",
    title="Augmentation fights overfitting on small data",
    claim="Deep nets are data hungry and overfit easily; crops, flips, cutout, mixup and cutmix augment the data.",
    slide="Data Augmentation: Crop, Cutout, Mixup",
    rule="""
        Per augmentation: mean test top-1 gain over no augmentation (paired by seed) above 0. All
        four: reproduced; none: not reproduced; otherwise partly.
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
    full=Budget(epochs=60, train_subset=5000, seeds=3, batch_size=64),
)
AUGMENTED = ("crop_flip", "cutout", "mixup", "cutmix")


def measure(ctx: Context) -> dict[str, Any]:
    arms = measure_arms(ctx)
    for name, n in arms.items():
        _, gap = clean_gap(ctx, name, n["test_top1"])
        n["gap_mean"] = mean(gap)
    gains = {k: paired_difference(arms[k]["test_top1"], arms["none"]["test_top1"]) for k in AUGMENTED}
    return {"arms": arms, "gain": gains}


def judge(n: dict[str, Any]) -> Verdict:
    arms, gain = n["arms"], n["gain"]
    checks: list[Check] = [
        (
            f"{arms[k]['label']} raises test top-1 over no augmentation ({100 * gain[k]['mean']:+.2f} points, "
            f"{int(gain[k]['n'])} seed(s))",
            None if gain[k]["n"] == 0 else gain[k]["mean"] > 0,
        )
        for k in AUGMENTED
    ]
    best = max(AUGMENTED, key=lambda k: gain[k]["mean"] if gain[k]["n"] else -1.0)
    return combine(
        checks,
        f"no augmentation {pct(arms['none']['test_top1_mean'])}; best {arms[best]['label']} "
        f"{pct(arms[best]['test_top1_mean'])}",
    )


def tables(n: dict[str, Any]) -> list[Table]:
    columns: list[Column] = [
        ("augmentation", label_cell),
        ("test top-1", top1_cell),
        ("gain (points)", lambda k, _: "-" if k == "none" else f"{100 * n['gain'][k]['mean']:+.2f}"),
        ("train-test gap (points)", gap_cell),
    ]
    return [
        arm_table(n["arms"]),
        per_arm_table(
            "Test top-1, gain over no augmentation (paired by seed) and the clean train-test gap",
            n["arms"],
            columns,
        ),
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
