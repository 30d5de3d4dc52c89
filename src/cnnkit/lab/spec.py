"""What an experiment of ``cnnkit lab`` is: a claim of the lecture, arms to train, a budget,
a measurement and a verdict rule (issue "The lecture's claims, reproduced").

An :class:`Experiment` is data: the claim as the lecture states it, the slide it comes
from, its :class:`Arm` s (a zoo model plus :class:`cnnkit.train.config.TrainConfig`
overrides), one :class:`Budget` per budget name (data subset, epochs, seeds), and three
functions: ``measure`` turns the finished runs into numbers, ``judge`` turns the numbers
into a :class:`Verdict` by a rule stated in words beside it, and ``figures`` draws them.
The runner (:mod:`cnnkit.lab.runner`) trains every arm with the trainer of ``cnnkit
train``; nothing here trains.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BUDGETS",
    "PAPER_CAPTION",
    "VERDICTS",
    "About",
    "Arm",
    "ArmRun",
    "Budget",
    "Check",
    "Context",
    "Experiment",
    "FigureRef",
    "Table",
    "Verdict",
    "combine",
]

# smoke: seconds, synthetic data (tests); quick: a first look, minutes an experiment; standard:
# each verdict decided by the data (>= 3 seeds an arm; the whole lab in about 100 minutes on 2
# cores; the published report, docs/lab/); full: whole dataset, many epochs (a GPU)
BUDGETS = ("smoke", "quick", "standard", "full")
VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive")
# the caption's start that marks a table as the paper's figures beside the measurement
# (cnnkit.lab.common.paper_table); the report shows it first, under its own heading
PAPER_CAPTION = "The paper beside this measurement"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Budget:
    """How much to train: a data subset, epochs, seeds and batch size for every arm.

    ``dataset`` forces a dataset (the ``smoke`` budget uses ``synthetic``); ``overrides``
    are further :class:`TrainConfig` fields for every arm at this budget.
    """

    epochs: int
    train_subset: int | None = None
    test_subset: int | None = None
    seeds: int = 1
    batch_size: int = 128
    dataset: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.seeds < 1 or self.batch_size < 1:
            raise ValueError(
                f"a budget needs epochs, seeds and batch_size >= 1; got {self.epochs}, {self.seeds}, {self.batch_size}"
            )


@dataclass(frozen=True)
class Arm:
    """One configuration to train: a zoo model and :class:`TrainConfig` overrides.

    An override may be a callable of the :class:`Budget` (e.g. a step schedule whose decay
    epoch is a third of the budget's epochs). ``seeds`` caps the budget's seed count
    (``None``: the budget's).
    """

    name: str
    model: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    seeds: int | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"arm name {self.name!r} must be lower-case letters, digits, '_', '.', '-' (it names a folder)"
            )
        for key in ("model", "output", "resume", "seed", "dataset"):
            if key in self.overrides:
                raise ValueError(f"arm {self.name}: {key!r} is set by the runner, not by overrides")

    @property
    def title(self) -> str:
        return self.label or self.name

    def resolve(self, budget: Budget) -> dict[str, Any]:
        """The overrides with callables evaluated for ``budget``."""
        return {k: (v(budget) if callable(v) else v) for k, v in self.overrides.items()}


@dataclass
class ArmRun:
    """One trained (or failed) run of an arm at one seed, read back from its run folder."""

    arm: Arm
    seed: int
    run_dir: Path
    config: dict[str, Any]
    final: dict[str, Any] | None  # final.json; None when training stopped
    history: list[dict[str, Any]]  # metrics.jsonl rows, one per epoch
    error: str | None = None  # why training stopped (non-finite loss...), if it did

    @property
    def ok(self) -> bool:
        return self.final is not None and self.error is None

    @property
    def test_top1(self) -> float | None:
        return None if self.final is None else self.final.get("test_top1")


@dataclass(frozen=True)
class Table:
    """A table of the report: a caption, column names and rows of cells (numbers or text)."""

    caption: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"caption": self.caption, "columns": list(self.columns), "rows": [list(r) for r in self.rows]}


@dataclass(frozen=True)
class FigureRef:
    """A figure file, relative to the experiment's folder, with its caption."""

    file: str
    caption: str


# one check of a verdict: what was checked, and whether it holds (None: unknown)
Check = tuple[str, bool | None]


@dataclass(frozen=True)
class Verdict:
    """The verdict (one of :data:`VERDICTS`) and why: the checks made, each with its outcome."""

    verdict: str
    summary: str
    checks: Sequence[Check] = ()

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}; got {self.verdict!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "checks": [{"check": c, "holds": ok} for c, ok in self.checks],
        }


def combine(checks: Sequence[Check], summary: str) -> Verdict:
    """All checks hold: reproduced; none: not reproduced; some: partly; any unknown: inconclusive."""
    if not checks or any(ok is None for _, ok in checks):
        return Verdict("inconclusive", summary, checks)
    held = sum(1 for _, ok in checks if ok)
    verdict = "reproduced" if held == len(checks) else "not reproduced" if held == 0 else "partly"
    return Verdict(verdict, summary, checks)


@dataclass
class Context:
    """Everything ``measure`` and ``figures`` may use: the runs per arm, the data, the folder."""

    experiment: Experiment
    budget_name: str
    budget: Budget
    dataset: str
    folder: Path  # OUTPUT/<experiment>/: figures and result.json go here
    runs: dict[str, list[ArmRun]]  # arm name -> one run per seed
    data_dir: str | None = None
    device: str = "cpu"

    def ok_runs(self, arm: str) -> list[ArmRun]:
        return [r for r in self.runs.get(arm, []) if r.ok]

    def top1(self, arm: str) -> list[float]:
        """Final test top-1 of every finished seed of ``arm``."""
        return [float(r.final["test_top1"]) for r in self.ok_runs(arm) if r.final is not None]


Measure = Callable[[Context], dict[str, Any]]
Judge = Callable[[dict[str, Any]], Verdict]
Figures = Callable[[Context, dict[str, Any]], list[FigureRef]]
Tables = Callable[[dict[str, Any]], list[Table]]


@dataclass(frozen=True)
class About:
    """The texts of an experiment (see :class:`Experiment`): its name, the claim's title, the
    claim as the lecture states it and the slide it is on, the verdict rule in words, notes."""

    name: str
    title: str
    claim: str
    slide: str
    rule: str
    notes: str = ""


@dataclass(frozen=True)
class Experiment:
    """A claim of the lecture and how to test it; see the module docstring.

    The texts (``title``, ``claim``, ``slide``, ``rule``, ``notes``) are one paragraph each: they
    may be written over several lines, and every run of white space folds to one space.
    """

    name: str
    title: str
    claim: str
    slide: str
    rule: str  # the verdict rule in words, printed beside the verdict
    budgets: Mapping[str, Budget]
    measure: Measure
    judge: Judge
    tables: Tables
    figures: Figures
    arms: Sequence[Arm] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"experiment name {self.name!r} must be lower-case letters, digits, '_', '-'")
        for text in ("title", "claim", "slide", "rule", "notes"):
            object.__setattr__(self, text, " ".join(getattr(self, text).split()))
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name}: arm names repeat ({names})")
        missing = [b for b in BUDGETS if b not in self.budgets]
        if missing:
            raise ValueError(f"experiment {self.name}: no budget {', '.join(missing)}")

    @property
    def trains(self) -> bool:
        return bool(self.arms)
