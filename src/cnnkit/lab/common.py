"""Helpers the experiments of ``cnnkit lab`` share: budgets, per-arm numbers, seed
statistics, model costs, the test split the trainer evaluated on, and the standard figures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cnnkit.lab.spec import ArmRun, Budget, Context, FigureRef, Table, Verdict

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import nn

__all__ = [
    "SMOKE",
    "arm_numbers",
    "arm_table",
    "bar_figure",
    "budgets",
    "clean_train_top1",
    "curves_figure",
    "load_test_split",
    "load_train_split",
    "mean",
    "model_cost",
    "paired_difference",
    "paired_verdict",
    "pct",
    "pm",
    "run_meta",
    "save_figure",
    "sd",
]

# seconds per experiment, for tests: synthetic data, one short epoch
SMOKE = Budget(epochs=1, train_subset=256, test_subset=128, seeds=1, batch_size=64, dataset="synthetic")


def budgets(quick: Budget, full: Budget, smoke: Budget = SMOKE) -> dict[str, Budget]:
    return {"smoke": smoke, "quick": quick, "full": full}


# ---------------------------------------------------------------------------- numbers


def mean(xs: Sequence[float]) -> float:
    return float(statistics.fmean(xs)) if xs else math.nan


def sd(xs: Sequence[float]) -> float:
    """Sample standard deviation; 0 for a single value (one seed: no spread measured)."""
    return float(statistics.stdev(xs)) if len(xs) > 1 else 0.0


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def pm(xs: Sequence[float], digits: int = 2) -> str:
    """``mean ± sd`` in percent over seeds (``n/a`` for none)."""
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{100 * xs[0]:.{digits}f}%"
    return f"{100 * mean(xs):.{digits}f} ± {100 * sd(xs):.{digits}f}% (n={len(xs)})"


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean and standard error of ``a - b`` over paired seeds (the same seed: same data subset
    and order); with one pair the standard error is unknown (``nan``)."""
    n = min(len(a), len(b))
    d = [a[i] - b[i] for i in range(n)]
    se = sd(d) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean(d), "se": se, "n": float(n), "wins": float(sum(1 for x in d if x > 0))}


def _final_train_err(run: ArmRun) -> float | None:
    return 1 - float(run.history[-1]["train_acc"]) if run.history else None


def arm_numbers(ctx: Context, arm: str) -> dict[str, Any]:
    """The per-arm numbers every experiment reports (means over the finished seeds)."""
    runs = ctx.runs.get(arm, [])
    ok = [r for r in runs if r.ok]
    top1 = [float(r.final["test_top1"]) for r in ok if r.final is not None]
    train_err = [e for r in ok if (e := _final_train_err(r)) is not None]
    seconds = [float(r.final["train_seconds"]) for r in ok if r.final is not None]
    ips = [statistics.median(float(h["images_per_s"]) for h in r.history) for r in ok if r.history]
    spec = next(a for a in ctx.experiment.arms if a.name == arm)
    return {
        "arm": arm,
        "label": spec.title,
        "model": spec.model,
        "seeds": len(runs),
        "failed": [r.error for r in runs if not r.ok],
        "params": int(ok[0].final["params"]) if ok and ok[0].final else None,
        "test_top1": top1,
        "test_top1_mean": mean(top1),
        "train_err": train_err,
        "train_err_mean": mean(train_err),
        "train_loss_first": mean([float(r.history[0]["train_loss"]) for r in ok if r.history]),
        "train_loss_last": mean([float(r.history[-1]["train_loss"]) for r in ok if r.history]),
        "train_seconds_mean": mean(seconds),
        "images_per_s": mean(ips),
    }


def arm_table(numbers: Mapping[str, Mapping[str, Any]], caption: str = "Arms (means over seeds)") -> Table:
    rows = []
    for n in numbers.values():
        rows.append(
            [
                n["label"],
                n["model"],
                "n/a" if n["params"] is None else f"{n['params']:,}",
                n["seeds"] - len(n["failed"]),
                pm(n["test_top1"]),
                pct(n["train_err_mean"]),
                f"{n['images_per_s']:.0f}" if math.isfinite(n["images_per_s"]) else "n/a",
                f"{n['train_seconds_mean']:.1f}" if math.isfinite(n["train_seconds_mean"]) else "n/a",
                "; ".join(e or "" for e in n["failed"]) or "-",
            ]
        )
    return Table(
        caption,
        [
            "arm",
            "model",
            "params",
            "seeds",
            "test top-1",
            "train error (last epoch)",
            "train img/s",
            "train s",
            "stopped",
        ],
        rows,
    )


# ---------------------------------------------------------------------------- models and data


def run_meta(run: ArmRun) -> dict[str, Any]:
    """The metadata the trainer stored in the run's ``model.safetensors`` (no tensor is read)."""
    import json

    from safetensors import safe_open

    with safe_open(str(run.run_dir / "model.safetensors"), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def model_cost(
    name: str,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    small_input: bool,
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[int, int]:
    """(parameters, mult-adds per image) of a zoo model, traced on the meta device."""
    return _model_cost(
        name, num_classes, in_chans, image_size, small_input, tuple(sorted((model_kwargs or {}).items()))
    )


@lru_cache(maxsize=64)
def _model_cost(
    name: str, num_classes: int, in_chans: int, image_size: int, small_input: bool, kwargs: tuple[Any, ...]
) -> tuple[int, int]:
    from cnnkit.analysis.summary import summarize
    from cnnkit.models.registry import create_model

    options: dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs}
    with torch.device("meta"):
        model = create_model(
            name, num_classes=num_classes, in_chans=in_chans, small_input=small_input, **options
        )
    s = summarize(model, (in_chans, image_size, image_size))
    return s.total_params, s.total_mult_adds


def cost_of_run(run: ArmRun) -> tuple[int, int]:
    meta = run_meta(run)
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta.get("model_kwargs", {}).items()}
    return model_cost(
        meta["model"],
        num_classes=int(meta["num_classes"]),
        in_chans=int(meta["in_chans"]),
        image_size=int(meta["image_size"]),
        small_input=bool(meta.get("small_input", False)),
        model_kwargs=kwargs,
    )


def load_test_split(ctx: Context, run: ArmRun | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and labels the trainer evaluated ``run`` on (default: the first finished
    run of the experiment; its dataset options, e.g. ``image_size``, matter).

    Mirrors ``cnnkit.train.loop``: with ``test_subset`` it keeps the first N of a
    permutation seeded with 0, whatever the run's seed (tests/lab check this against a
    trained run's final accuracy).
    """
    from cnnkit.data.sources import load_dataset

    if run is None:
        run = next((r for rs in ctx.runs.values() for r in rs if r.config), None)
    cfg: dict[str, Any] = (
        run.config if run is not None else {"dataset": ctx.dataset, "data_dir": ctx.data_dir}
    )
    data = load_dataset(cfg["dataset"], data_dir=cfg.get("data_dir"), image_size=cfg.get("image_size"))
    x, y = data.test_x, data.test_y
    n = cfg.get("test_subset", ctx.budget.test_subset)
    if n is not None:
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:n]
        x, y = x[keep], y[keep]
    return x, y


def load_train_split(ctx: Context, run: ArmRun) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images of ``run`` (its seeded subset, as the trainer drew it)."""
    from cnnkit.data.sources import load_dataset

    cfg = run.config
    data = load_dataset(
        cfg["dataset"],
        data_dir=cfg.get("data_dir"),
        train_subset=cfg.get("train_subset"),
        seed=cfg["seed"],
        image_size=cfg.get("image_size"),
    )
    return data.train_x, data.train_y


def load_model(run: ArmRun) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The run's trained model (eval mode, CPU) and the mean and std it standardises with."""
    from cnnkit.train.checkpoint import load_run

    model, meta = load_run(run.run_dir)
    return model, torch.tensor(meta["mean"]), torch.tensor(meta["std"])


# ---------------------------------------------------------------------------- figures


def save_figure(fig: Figure, ctx: Context, stem: str, caption: str) -> FigureRef:
    """Save ``fig`` as ``<experiment folder>/<stem>.png`` and return its reference."""
    path = ctx.folder / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return FigureRef(path.name, caption)


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def curves_figure(
    ctx: Context,
    panels: Sequence[tuple[str, Sequence[str]]],
    *,
    metrics: Sequence[tuple[str, Callable[[dict[str, Any]], float], str]] | None = None,
    ylabel: str = "error (%)",
) -> Figure:
    """One panel per ``(title, arm names)``; per arm and metric, the mean over seeds by epoch.

    Default metrics: training error (thin, from the running accuracy of each epoch) and
    test top-1 error (bold), as in the lecture's ResNet figure.
    """
    metrics = metrics or [
        ("train", lambda h: 100 * (1 - h["train_acc"]), "-"),
        ("test", lambda h: 100 * h["test_top1_err"], "-"),
    ]
    fig = new_figure(5.2 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, arms) in zip(axes, panels, strict=True):
        for i, arm in enumerate(arms):
            runs = ctx.ok_runs(arm)
            if not runs:
                continue
            label = next(a.title for a in ctx.experiment.arms if a.name == arm)
            epochs = min(len(r.history) for r in runs)
            for j, (mname, fn, style) in enumerate(metrics):
                ys = [mean([fn(r.history[e]) for r in runs]) for e in range(epochs)]
                ax.plot(
                    range(1, epochs + 1),
                    ys,
                    style,
                    color=f"C{i}",
                    lw=0.9 if j == 0 and len(metrics) > 1 else 2.2,
                    marker="o" if j == 0 else "s",
                    ms=2.5 if j == 0 else 4,
                    label=f"{label} ({mname})",
                )
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def bar_figure(
    groups: Sequence[tuple[str, Sequence[float]]],
    *,
    ylabel: str,
    title: str,
    scale: float = 100.0,
    zoom: bool = True,
) -> Figure:
    """One bar per group at its mean, each seed as a dot; ``zoom`` starts the axis near the data."""
    fig = new_figure(max(4.5, 0.75 * len(groups) + 2), 3.6)
    ax = fig.add_subplot()
    vals_all = [scale * v for _, vs in groups for v in vs if math.isfinite(v)]
    for i, (_, vs) in enumerate(groups):
        fin = [scale * v for v in vs if math.isfinite(v)]
        if fin:
            ax.bar(i, mean(fin), color=f"C{i % 10}", alpha=0.75)
            ax.plot([i] * len(fin), fin, "k.", ms=5)
    ax.set_xticks(range(len(groups)), [g for g, _ in groups], rotation=30, ha="right", fontsize=8)
    if zoom and vals_all:
        lo, hi = min(vals_all), max(vals_all)
        pad = max((hi - lo) * 0.3, 0.5)
        ax.set_ylim(max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, axis="y")
    return fig


def relative(path: Path, start: Path) -> str:
    try:
        return str(path.relative_to(start))
    except ValueError:
        return str(path)


def clean_train_top1(ctx: Context, run: ArmRun) -> float:
    """Top-1 of the trained model on its own training images, without augmentation or dropout
    (the running training accuracy of an epoch is measured on augmented batches in train mode)."""
    from cnnkit.train.loop import evaluate

    model, m, s = load_model(run)
    x, y = load_train_split(ctx, run)
    return float(evaluate(model, x, y, m, s, batch_size=500)["top1"])


def paired_verdict(diff: Mapping[str, float], what: str) -> Verdict:
    """The verdict on "A beats B" from :func:`paired_difference` of their accuracies over seeds.

    No pair: inconclusive. Mean difference <= 0: not reproduced. Mean above one standard
    error with at least two seeds: reproduced. Otherwise (one seed, or within the noise):
    partly.
    """
    n, m, se = int(diff["n"]), diff["mean"], diff["se"]
    if n == 0 or m != m:
        return Verdict("inconclusive", f"no finished pair of runs for {what}")
    text = f"{what}: {100 * m:+.2f} points (mean over {n} seed(s)"
    text += f", standard error {100 * se:.2f})" if n > 1 else ")"
    check = [(text, m > 0)]
    if m <= 0:
        return Verdict("not reproduced", text, check)
    if n >= 2 and m > se:
        return Verdict("reproduced", text, check)
    return Verdict("partly", text + "; better, but not beyond the seed-to-seed noise", check)
