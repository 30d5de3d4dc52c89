"""An ensemble of diverse architectures (lecture slides "Ensemble of Diverse Architecture",
Trimps-Soushen, ILSVRC 2016: Inception-v3/v4, Inception-ResNet-v2, ResNet-200 and
WRN-68-3 at 4.65-3.52% error fuse to 2.92%).

Four different zoo nets train on the same data; the fusion averages their softmax outputs
(:func:`cnnkit.train.ensemble.ensemble_eval`, the function behind ``cnnkit ensemble``) on
the test images every member was evaluated on. The report also shows each member's
saliency maps of the same images (:func:`cnnkit.viz.maps.saliency`): diverse nets look at
different pixels.
"""

from __future__ import annotations

from typing import Any

from cnnkit.data.sources import normalize
from cnnkit.lab.common import arm_table, budgets, experiment, load_model, load_test_split, measure_arms, pct
from cnnkit.lab.figures import Custom, bar_figure, new_figure, plots
from cnnkit.lab.spec import About, Arm, Budget, Context, Table, Verdict

__all__ = ["EXPERIMENT"]

ABOUT = About(
    name="ensemble",
    title="An ensemble of diverse nets beats each member",
    claim="""
        Fusing diverse architectures beats every member: ILSVRC 2016's winner fused five nets of
        3.52-4.65% top-5 error to 2.92%.
    """,
    slide="Ensemble of Diverse Architecture (Trimps-Soushen, ILSVRC 2016)",
    rule="""
        Seed-0 run of each member, fused by averaging softmaxes on the same test images: reproduced if
        the fusion's top-1 beats the best member's; partly if it only beats the average member; else
        not.
    """,
)

ARMS = (
    Arm("fmnet", "fmnet", label="fmnet"),
    Arm("resnet20", "resnet20", label="ResNet-20"),
    Arm("mobilenet", "mobilenet_v1", {"model_kwargs": {"width_mult": 0.5}}, label="MobileNet 0.5"),
    # ShuffleNet needs a warm-up (a third of the epochs) and a lower peak (at lr 0.1 from step 1 it reached 40% here)
    Arm(
        "shufflenet",
        "shufflenet_v1_g3",
        {"model_kwargs": {"width_mult": 0.25}, "warmup_epochs": lambda b: b.epochs / 3, "lr": 0.05},
        label="ShuffleNet g3 0.25",
    ),
)
BUDGETS = budgets(
    quick=Budget(epochs=3, train_subset=3000, test_subset=2000, seeds=1, batch_size=128),
    full=Budget(epochs=15, seeds=1, batch_size=128),
)


def measure(ctx: Context) -> dict[str, Any]:
    import torch

    from cnnkit.train.ensemble import ensemble_eval

    arms = measure_arms(ctx)
    members = [(a.name, ctx.ok_runs(a.name)[0]) for a in ARMS if ctx.ok_runs(a.name)]
    if len(members) < 2:
        return {"arms": arms, "members": {}, "fusion": None}
    x, y = load_test_split(ctx)
    loaded = [load_model(r) for _, r in members]
    with torch.no_grad():
        rows = ensemble_eval(loaded, x, y)
    return {
        "arms": arms,
        "members": {name: rows[i]["top1"] for i, (name, _) in enumerate(members)},
        "fusion": rows[-1]["top1"],
        "fusion_top5": rows[-1]["top5"],
    }


def judge(n: dict[str, Any]) -> Verdict:
    members, fusion = n["members"], n["fusion"]
    if fusion is None or not members:
        return Verdict("inconclusive", "fewer than two members finished training")
    best = max(members, key=lambda k: members[k])
    mean_member = sum(members.values()) / len(members)
    text = f"fusion {pct(fusion)} vs best member {best} {pct(members[best])} (mean member {pct(mean_member)})"
    checks = [
        (
            f"fusion beats the best member ({100 * (fusion - members[best]):+.2f} points)",
            fusion > members[best],
        ),
        (
            f"fusion beats the average member ({100 * (fusion - mean_member):+.2f} points)",
            fusion > mean_member,
        ),
    ]
    if fusion > members[best]:
        return Verdict("reproduced", text, checks)
    if fusion > mean_member:
        return Verdict("partly", text, checks)
    return Verdict("not reproduced", text, checks)


def tables(n: dict[str, Any]) -> list[Table]:
    rows = [[n["arms"][k]["label"], pct(v)] for k, v in n["members"].items()]
    if n["fusion"] is not None:
        rows.append(["fusion (mean softmax)", pct(n["fusion"])])
    return [
        arm_table(n["arms"]),
        Table("Test top-1 of each member and of the fusion (seed 0)", ["net", "test top-1"], rows),
    ]


def _accuracy(ctx: Context, n: dict[str, Any]) -> Any:
    if n["fusion"] is None:
        return None
    groups = [(n["arms"][k]["label"], [v]) for k, v in n["members"].items()] + [("fusion", [n["fusion"]])]
    return bar_figure(groups, ylabel="test top-1 (%)", title="members and their fusion")


def _saliency(ctx: Context, n: dict[str, Any]) -> Any:
    from cnnkit.viz.maps import saliency

    members = [(a, ctx.ok_runs(a.name)[0]) for a in ARMS if ctx.ok_runs(a.name)]
    if not members:
        return None
    x, _ = load_test_split(ctx)
    k = min(6, len(x))
    fig = new_figure(1.5 * k + 1, 1.5 * (len(members) + 1) + 0.5)
    axes = fig.subplots(len(members) + 1, k, squeeze=False)
    for c in range(k):
        shown = x[c].permute(1, 2, 0).numpy()
        axes[0, c].imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray")
    for r, (arm, run) in enumerate(members, start=1):
        model, m, s = load_model(run)
        for c in range(k):
            img = normalize(x[c : c + 1], m, s)[0]
            sal, _ = saliency(model, img)
            axes[r, c].imshow(sal.numpy(), cmap="hot")  # imshow scales each map to its own range
        axes[r, 0].set_ylabel(arm.title, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("saliency of each member's predicted class (Simonyan et al. 2014)")
    return fig


FIGURES = plots(
    Custom("accuracy", "Test top-1 of each member and of the averaged-softmax fusion.", _accuracy),
    Custom("saliency", "Where each member looks: saliency maps of the same test images.", _saliency),
)


EXPERIMENT = experiment(__name__)
