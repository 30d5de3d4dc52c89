"""Helpers the experiments of ``cnnkit lab`` share: budgets, per-arm numbers and tables,
seed statistics, model costs and the test split the trainer evaluated on (the figures are
in :mod:`cnnkit.lab.figures`).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cnnkit.lab.spec import PAPER_CAPTION, About, ArmRun, Budget, Context, Experiment, Table, Verdict

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "ARM_COLUMNS",
    "SMOKE",
    "BySeed",
    "Column",
    "against_text",
    "arm_numbers",
    "arm_table",
    "best_of",
    "budgets",
    "by_arm",
    "clean_gap",
    "clean_train_top1",
    "cost_table",
    "effect_text",
    "experiment",
    "gap_cell",
    "grade_effect",
    "label_cell",
    "load_test_split",
    "load_train_split",
    "mean",
    "measure_arms",
    "measured",
    "model_cost",
    "paired_difference",
    "paired_verdict",
    "paper_table",
    "pct",
    "per_arm_table",
    "pm",
    "run_meta",
    "sd",
    "size_against",
    "top1_cell",
]

# seconds per experiment, for tests: synthetic data, one short epoch
SMOKE = Budget(epochs=1, train_subset=256, test_subset=128, seeds=1, batch_size=64, dataset="synthetic")


def budgets(*, quick: Budget, standard: Budget, full: Budget, smoke: Budget = SMOKE) -> dict[str, Budget]:
    """An experiment's budgets by name (:data:`cnnkit.lab.spec.BUDGETS`)."""
    return {"smoke": smoke, "quick": quick, "standard": standard, "full": full}


def experiment(module: str) -> Experiment:
    """The experiment that the experiment module named ``module`` (its ``__name__``) declares
    with its ``ABOUT`` (:class:`~cnnkit.lab.spec.About`), ``ARMS`` (none: nothing trains),
    ``BUDGETS``, ``measure``, ``judge``, ``tables`` and ``FIGURES``."""
    m = sys.modules[module]
    about: About = m.ABOUT
    return Experiment(
        name=about.name,
        title=about.title,
        claim=about.claim,
        slide=about.slide,
        rule=about.rule,
        notes=about.notes,
        arms=getattr(m, "ARMS", ()),
        budgets=m.BUDGETS,
        measure=m.measure,
        judge=m.judge,
        tables=m.tables,
        figures=m.FIGURES,
    )


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


def measured(*values: float) -> bool:
    """Whether every value is a number: NaN stands for what was not measured (an arm that did
    not finish), and a check that uses it is unknown."""
    return all(v == v for v in values)


def best_of(values: Mapping[str, float]) -> str:
    """The key of the highest value; one not measured (NaN) ranks below every number."""
    return max(values, key=lambda k: values[k] if measured(values[k]) else -1.0)


class BySeed(list[float]):
    """Per-seed values that remember their seeds (:func:`arm_numbers`), so that a failed seed in
    one arm cannot pair another arm's seed 2 with this one's seed 1. JSON sees a plain list."""

    def __init__(self, values: Sequence[float], seeds: Sequence[int]) -> None:
        if len(values) != len(seeds):
            raise ValueError(f"{len(values)} values for {len(seeds)} seeds")
        super().__init__(values)
        self.seeds = list(seeds)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean and standard error of ``a - b`` over paired seeds (the same seed: same data subset
    and order); with one pair the standard error is unknown (``nan``). Two :class:`BySeed`
    lists pair by seed (the seeds both finished); plain lists pair by position."""
    if isinstance(a, BySeed) and isinstance(b, BySeed):
        at, bt = dict(zip(a.seeds, a, strict=True)), dict(zip(b.seeds, b, strict=True))
        d = [at[s] - bt[s] for s in a.seeds if s in bt]
    else:
        d = [x - y for x, y in zip(a, b, strict=False)]
    n = len(d)
    se = sd(d) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean(d), "se": se, "n": float(n), "wins": float(sum(1 for x in d if x > 0))}


def _final_train_err(run: ArmRun) -> float | None:
    return 1 - float(run.history[-1]["train_acc"]) if run.history else None


def arm_numbers(ctx: Context, arm: str) -> dict[str, Any]:
    """The per-arm numbers every experiment reports (means over the finished seeds)."""
    runs = ctx.runs.get(arm, [])
    ok = [r for r in runs if r.ok]
    finals = [(r.seed, float(r.final["test_top1"])) for r in ok if r.final is not None]
    top1 = BySeed([t for _, t in finals], [s for s, _ in finals])
    with_err = [(r.seed, e) for r in ok if (e := _final_train_err(r)) is not None]
    train_err = BySeed([e for _, e in with_err], [s for s, _ in with_err])
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


def by_arm(numbers: Mapping[str, Mapping[str, Any]], key: str) -> dict[str, Any]:
    """One number of every arm of :func:`measure_arms`, by arm name."""
    return {k: v[key] for k, v in numbers.items()}


# ---------------------------------------------------------------------------- tables

# a column of a per-arm table: its name, and its cell from the arm's name and numbers
Column = tuple[str, Callable[[str, Mapping[str, Any]], Any]]


def label_cell(arm: str, v: Mapping[str, Any]) -> Any:
    return v["label"]


def top1_cell(arm: str, v: Mapping[str, Any]) -> str:
    return pct(v["test_top1_mean"])


def gap_cell(arm: str, v: Mapping[str, Any]) -> str:
    """The mean train-test gap of :func:`clean_gap` (``gap_mean``), in points."""
    return f"{100 * v['gap_mean']:.2f}"


def _count(x: int | None) -> str:
    return "n/a" if x is None else f"{x:,}"


def _fixed(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def per_arm_table(caption: str, numbers: Mapping[str, Mapping[str, Any]], columns: Sequence[Column]) -> Table:
    """One row per arm of ``numbers`` (:func:`measure_arms`), one cell per column."""
    rows = [[cell(arm, v) for _, cell in columns] for arm, v in numbers.items()]
    return Table(caption, [name for name, _ in columns], rows)


ARM_COLUMNS: tuple[Column, ...] = (
    ("arm", label_cell),
    ("model", lambda _, v: v["model"]),
    ("params", lambda _, v: _count(v["params"])),
    ("seeds", lambda _, v: v["seeds"] - len(v["failed"])),
    ("test top-1", lambda _, v: pm(v["test_top1"])),
    ("train error (last epoch)", lambda _, v: pct(v["train_err_mean"])),
    ("train img/s", lambda _, v: _fixed(v["images_per_s"], 0)),
    ("train s", lambda _, v: _fixed(v["train_seconds_mean"], 1)),
    ("stopped", lambda _, v: "; ".join(e or "" for e in v["failed"]) or "-"),
)


def arm_table(numbers: Mapping[str, Mapping[str, Any]], caption: str = "Arms (means over seeds)") -> Table:
    """The table every training experiment reports: :data:`ARM_COLUMNS` of each arm."""
    return per_arm_table(caption, numbers, ARM_COLUMNS)


def cost_table(
    caption: str, numbers: Mapping[str, Mapping[str, Any]], *, digits: int = 2, extra: Sequence[Column] = ()
) -> Table:
    """Per arm of :func:`measure_arms` with ``cost``: its parameters, mult-adds per image (in
    millions, ``digits`` decimals) and mean test top-1, then the ``extra`` columns."""
    columns: list[Column] = [
        ("net", label_cell),
        ("params", lambda _, v: _count(v["params"])),
        (
            "mult-adds",
            lambda _, v: "n/a" if v["mult_adds"] is None else f"{v['mult_adds'] / 1e6:.{digits}f}M",
        ),
        ("test top-1", top1_cell),
        *extra,
    ]
    return per_arm_table(caption, numbers, columns)


def paper_table(source: str, rows: Sequence[tuple[str, str, str]], agreement: str) -> Table:
    """The paper beside the measurement: one row per figure (what, the paper's value, cnnkit's on
    Fashion-MNIST), captioned with the paper and one sentence on whether the direction and the
    rough size agree. The report shows it under the heading "The paper beside this measurement"."""
    return Table(
        f"{PAPER_CAPTION} ({source}): {agreement}",
        ["", "paper", "here (Fashion-MNIST)"],
        [list(r) for r in rows],
    )


# ---------------------------------------------------------------------------- models and data


def run_meta(run: ArmRun) -> dict[str, Any]:
    """The metadata the trainer stored in the run's ``model.safetensors`` (no tensor is read)."""
    from cnnkit.run import read_meta

    return read_meta(run.run_dir)


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
    from cnnkit.run import load_run

    model, meta = load_run(run.run_dir)
    return model, torch.tensor(meta["mean"]), torch.tensor(meta["std"])


# ---------------------------------------------------------------------------- measurements


def measure_arms(ctx: Context, *, cost: bool = False) -> dict[str, dict[str, Any]]:
    """:func:`arm_numbers` of every arm, in the experiment's order; with ``cost`` also the
    ``params`` and ``mult_adds`` traced from the arm's first finished run (``None`` without one)."""
    arms = {a.name: arm_numbers(ctx, a.name) for a in ctx.experiment.arms}
    if cost:
        for name, n in arms.items():
            runs = ctx.ok_runs(name)
            n["params"], n["mult_adds"] = cost_of_run(runs[0]) if runs else (None, None)
    return arms


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


def clean_gap(ctx: Context, arm: str, test_top1: Sequence[float]) -> tuple[list[float], list[float]]:
    """The clean training top-1 (:func:`clean_train_top1`) of every finished seed of ``arm``, and
    each seed's gap to its test top-1 (training minus test: the overfitting)."""
    train = [clean_train_top1(ctx, r) for r in ctx.ok_runs(arm)]
    return train, [tr - te for tr, te in zip(train, test_top1, strict=True)]


def effect_text(diff: Mapping[str, float], what: str) -> str:
    """``what`` and the paired difference of :func:`paired_difference` in words, with the effect
    the budget resolves: "+1.23 points (mean over 3 seeds, standard error 0.40: effects beyond
    0.40 points count)". The lab's rules count an effect beyond one standard error of the
    paired difference over at least two seeds (about 5:1 odds against noise with a normal
    error); a smaller one is reported as within the noise, never as its opposite."""
    n, m, se = int(diff["n"]), diff["mean"], diff["se"]
    if n == 0 or not measured(m):
        return f"{what}: not measured (no finished pair of runs)"
    if n < 2 or not measured(se):
        return f"{what}: {100 * m:+.2f} points (one seed: the noise is unknown)"
    return (
        f"{what}: {100 * m:+.2f} points (mean over {n} seeds, standard error {100 * se:.2f}: "
        f"effects beyond {100 * se:.2f} points count)"
    )


def grade_effect(diff: Mapping[str, float]) -> str:
    """A paired difference (:func:`paired_difference`) under the lab's convention: "beyond" one
    standard error (two seeds or more), "within" the noise but above 0, "against" (0 or
    below), or "unknown" (no finished pair)."""
    n, m, se = int(diff["n"]), diff["mean"], diff["se"]
    if n == 0 or not measured(m):
        return "unknown"
    if n >= 2 and measured(se) and m > se:
        return "beyond"
    return "within" if m > 0 else "against"


def size_against(here: float, paper: float) -> str:
    """How a positive effect measured here compares with the paper's (same units): "about the
    paper's size" within a factor of two, else smaller or larger than the paper's."""
    if paper / 2 <= here <= 2 * paper:
        return "about the paper's size"
    return "smaller than the paper's" if here < paper else "larger than the paper's"


def against_text(diff: Mapping[str, float]) -> str:
    """Why an effect at or below 0 (:func:`grade_effect` "against") counts against a claim:
    beyond one standard error the claim does not hold on this data; within it (or with one
    seed) the effect is below what the budget resolves."""
    if int(diff["n"]) >= 2 and measured(diff["se"]) and -diff["mean"] > diff["se"]:
        return "beyond the noise: the claim does not hold on this data at this budget"
    return "but within the seed-to-seed noise: an effect this small is below what the budget resolves"


def paired_verdict(diff: Mapping[str, float], what: str) -> Verdict:
    """The verdict on "A beats B" from :func:`paired_difference` of their accuracies over seeds.

    No pair: inconclusive. Mean difference <= 0: not reproduced. Mean above one standard
    error with at least two seeds: reproduced. Otherwise (one seed, or within the noise):
    partly.
    """
    grade = grade_effect(diff)
    if grade == "unknown":
        return Verdict("inconclusive", f"no finished pair of runs for {what}")
    text = effect_text(diff, what)
    check = [(text, diff["mean"] > 0)]
    if grade == "against":
        return Verdict("not reproduced", f"{text}; worse {against_text(diff)}", check)
    if grade == "beyond":
        return Verdict("reproduced", text, check)
    return Verdict("partly", text + "; better, but not beyond the seed-to-seed noise", check)
