"""Run the experiments of ``cnnkit lab``: train every arm with the trainer, cache the runs,
measure, judge and draw (issue "The lecture's claims, reproduced").

Each arm at each seed is one call of :func:`cnnkit.train.loop.train` with a
:class:`~cnnkit.train.config.TrainConfig` built from the experiment's budget and the
arm's overrides; there is no second training loop. Its run folder is
``OUTPUT/runs/<experiment>/<arm>-seed<k>/`` and holds what ``cnnkit train`` writes
(``config.yaml``, ``metrics.jsonl``, ``model.safetensors``, ``final.json``). A run with a
``final.json`` (or a ``failed.json``: the trainer stopped on a non-finite loss) is not
trained again, so re-rendering never retrains; a run that was interrupted is resumed. A
cached run whose config differs from the one asked for is an error (use another
``--output`` or ``--retrain``), never silently reused.

The experiment's numbers, verdict, tables and figures go to ``OUTPUT/<experiment>/``
(``result.json`` and PNG files); :mod:`cnnkit.lab.report` renders the report from them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cnnkit.lab.spec import Arm, ArmRun, Budget, Context, Experiment, Verdict

__all__ = ["arm_config", "load_result", "run_arm", "run_experiment", "run_experiments"]

# config fields that do not change what is trained (where, how fast, how it is shown)
_NOT_COMPARED = frozenset(
    {"output", "resume", "progress", "threads", "device", "data_dir", "log", "checkpoint_every", "recipe"}
)


def _log(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


class _Progress:
    """Runs done of all, and the time left: the mean time of the runs trained so far (a run
    already on disk is read back in no time and does not count) times the runs left. A tqdm
    bar on a terminal; the ``[lab]`` lines carry the same numbers everywhere."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.total, self.done, self.trained, self.seconds = total, 0, 0, 0.0
        self.bar = tqdm(total=total, unit="run", desc="lab", file=sys.stderr, disable=None, leave=False)

    def left(self) -> str:
        if not self.trained:
            return ""
        minutes = self.seconds / self.trained * (self.total - self.done) / 60
        return f"; about {minutes:.0f} min left" if minutes >= 1 else "; under a minute left"

    def step(self, seconds: float, trained: bool) -> None:
        self.done += 1
        self.trained += trained
        self.seconds += seconds if trained else 0.0
        self.bar.update(1)
        if self.trained:
            self.bar.set_postfix_str(self.left().removeprefix("; "))

    def close(self) -> None:
        self.bar.close()


def arm_config(
    exp: Experiment,
    arm: Arm,
    seed: int,
    budget_name: str,
    *,
    output: str | Path,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    threads: int | None = None,
) -> Any:
    """The :class:`TrainConfig` of ``arm`` at ``seed``: the trainer's defaults, then the
    budget (data subset, epochs, batch size and its overrides), then the arm's overrides."""
    from cnnkit.train.config import TrainConfig

    b = exp.budgets[budget_name]
    fields: dict[str, Any] = {
        "model": arm.model,
        "dataset": dataset or b.dataset or "fashion-mnist",
        "data_dir": data_dir,
        "train_subset": b.train_subset,
        "test_subset": b.test_subset,
        "epochs": b.epochs,
        "batch_size": b.batch_size,
        "seed": seed,
        "device": device,
        "threads": threads,
        "progress": False,
        "recipe": "plain",
        # fp32 everywhere (a verdict must not depend on the machine's bf16), in oneDNN's fast layout
        "channels_last": True,
        "output": str(run_folder(output, exp, arm, seed)),
    }
    for extra in (dict(b.overrides), arm.resolve(b)):
        kwargs = {**fields.get("model_kwargs", {}), **extra.get("model_kwargs", {})}
        fields.update(extra)
        if kwargs:
            fields["model_kwargs"] = kwargs
    return TrainConfig(**fields)


def run_folder(output: str | Path, exp: Experiment, arm: Arm, seed: int) -> Path:
    return Path(output) / "runs" / exp.name / f"{arm.name}-seed{seed}"


def _seeds(arm: Arm, budget: Budget) -> range:
    return range(budget.seeds if arm.seeds is None else min(arm.seeds, budget.seeds))


def _compared(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in _NOT_COMPARED}


def _field_defaults(config_type: type) -> dict[str, Any]:
    """Each config field's default value (a run's config.yaml from before a field existed ran it)."""
    out = {}
    for f in dataclasses.fields(config_type):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _read_run(arm: Arm, seed: int, folder: Path) -> ArmRun:
    from cnnkit.run import read_config, read_final, read_metrics

    config, history, final = read_config(folder, required=False), read_metrics(folder), read_final(folder)
    error = None
    if (folder / "failed.json").exists():
        error = json.loads((folder / "failed.json").read_text())["error"]
        final = None
    return ArmRun(arm, seed, folder, config or {}, final, history, error)


def run_arm(cfg: Any, arm: Arm, *, retrain: bool = False) -> ArmRun:
    """Train one arm at one seed unless its run folder already holds the result.

    A non-finite loss or gradient (the trainer's ``TrainingError``) is a result, not a
    crash: it is recorded in ``failed.json`` and the arm counts as not trained.
    """
    from cnnkit.run import read_config
    from cnnkit.train.loop import TrainingError, train

    folder = Path(cfg.output)
    wanted = _compared(dataclasses.asdict(cfg))
    done = (folder / "final.json").exists() or (folder / "failed.json").exists()
    if retrain and folder.exists():
        shutil.rmtree(folder)
        done = False
    elif have := _compared(read_config(folder, required=False)):
        # a field newer than the cached run's config.yaml counts as the default it had then
        defaults = _field_defaults(type(cfg))
        diff = sorted(k for k in set(have) | set(wanted) if have.get(k, defaults.get(k)) != wanted.get(k))
        if diff:
            shown = ", ".join(f"{k}: {have.get(k)!r} -> {wanted.get(k)!r}" for k in diff[:4])
            raise ValueError(
                f"{folder} was trained with another config ({shown}); "
                "use another --output or rerun with --retrain"
            )
    if done:
        return _read_run(arm, cfg.seed, folder)
    if (folder / "checkpoint.pt").exists():
        cfg = dataclasses.replace(cfg, resume=str(folder))
    t0 = time.perf_counter()
    try:
        train(cfg)
    except TrainingError as e:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "failed.json").write_text(json.dumps({"error": str(e).splitlines()[0]}, indent=2) + "\n")
        _log(f"{folder.name}: stopped ({str(e).splitlines()[0]})")
    else:
        _log(f"{folder.name}: trained in {time.perf_counter() - t0:.0f}s")
    return _read_run(arm, cfg.seed, folder)


def _jsonable(x: Any) -> Any:
    """Plain JSON data from numbers, tensors, paths and dataclasses (``nan`` kept as NaN)."""
    import torch

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    if isinstance(x, Path):
        return str(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, bool | int | str) or x is None:
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item"):
        return _jsonable(x.item())
    return str(x)


def run_experiment(
    exp: Experiment,
    budget: str = "quick",
    *,
    output: str | Path,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    retrain: bool = False,
    train: bool = True,
    progress: _Progress | None = None,
) -> dict[str, Any]:
    """Train (or read back) every arm of ``exp``, then measure, judge and draw.

    With ``train=False`` nothing is trained: arms without a finished run count as missing
    and the verdict says so. Returns the result, also written to
    ``OUTPUT/<experiment>/result.json``.
    """
    if budget not in exp.budgets:
        raise ValueError(f"unknown budget {budget!r}; choose from {', '.join(exp.budgets)}")
    b = exp.budgets[budget]
    out = Path(output)
    folder = out / exp.name
    folder.mkdir(parents=True, exist_ok=True)
    ds = dataset or b.dataset or "fashion-mnist"
    t0 = time.perf_counter()
    runs: dict[str, list[ArmRun]] = {}
    for arm in exp.arms:
        runs[arm.name] = []
        for seed in _seeds(arm, b):
            cfg = arm_config(
                exp,
                arm,
                seed,
                budget,
                output=out,
                dataset=dataset,
                data_dir=data_dir,
                device=device,
                threads=threads,
            )
            if train:
                where = f" [run {progress.done + 1} of {progress.total}{progress.left()}]" if progress else ""
                _log(f"{exp.name}: {arm.name} seed {seed} ({arm.model}, {b.epochs} epochs){where}")
                cached = not retrain and (Path(cfg.output) / "final.json").exists()
                t_run = time.perf_counter()
                runs[arm.name].append(run_arm(cfg, arm, retrain=retrain))
                if progress is not None:
                    progress.step(time.perf_counter() - t_run, trained=not cached)
            elif (Path(cfg.output) / "final.json").exists() or (Path(cfg.output) / "failed.json").exists():
                runs[arm.name].append(_read_run(arm, seed, Path(cfg.output)))
    import torch

    dev = (
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    ctx = Context(exp, budget, b, ds, folder, runs, data_dir=data_dir, device=dev)
    for old in folder.glob("*.png"):  # figures of an earlier rendering
        old.unlink()
    numbers = exp.measure(ctx)
    verdict: Verdict = exp.judge(numbers)
    tables = exp.tables(numbers)
    figures = exp.figures(ctx, numbers)
    result = {
        "name": exp.name,
        "title": exp.title,
        "claim": exp.claim,
        "slide": exp.slide,
        "rule": exp.rule,
        "notes": exp.notes,
        "budget": budget,
        "budget_settings": dataclasses.asdict(b) | {"overrides": dict(b.overrides)},
        "dataset": ds,
        "device": dev,
        "torch": torch.__version__,
        "arms": [
            {
                "name": a.name,
                "label": a.title,
                "model": a.model,
                "overrides": a.resolve(b),
                "seeds": len(_seeds(a, b)),
            }
            for a in exp.arms
        ],
        "runs": [
            {
                "arm": r.arm.name,
                "seed": r.seed,
                "run_dir": str(r.run_dir.relative_to(out))
                if r.run_dir.is_relative_to(out)
                else str(r.run_dir),
                "test_top1": r.test_top1,
                "train_seconds": None if r.final is None else r.final.get("train_seconds"),
                "error": r.error,
            }
            for rs in runs.values()
            for r in rs
        ],
        # keys starting with "_" are working data for the figures (e.g. per-layer samples), not results
        "numbers": {k: v for k, v in numbers.items() if not k.startswith("_")},
        "verdict": verdict.to_dict(),
        "tables": [t.to_dict() for t in tables],
        "figures": [{"file": f"{exp.name}/{f.file}", "caption": f.caption} for f in figures],
        "generated": datetime.now().isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - t0,
        "compute_seconds": _compute_seconds(runs, time.perf_counter() - t0),
        "machine": _machine(),
    }
    result = _jsonable(result)
    (folder / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    _log(f"{exp.name}: {verdict.verdict} ({verdict.summary})")
    return result


def _compute_seconds(runs: dict[str, list[ArmRun]], wall: float) -> float:
    """What the experiment costs from scratch: its runs' training and evaluation seconds as
    they recorded them (so a rendering from the cache still says it), or, for an experiment
    that trains nothing, this call's wall time."""
    finals = [r.final for rs in runs.values() for r in rs if r.final is not None]
    if not finals:
        return wall
    return sum(float(f.get("train_seconds", 0)) + float(f.get("eval_seconds", 0)) for f in finals)


def _machine() -> str:
    import torch

    from cnnkit.doctor import cpu_name

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def run_experiments(
    names: Sequence[str],
    budget: str = "quick",
    *,
    output: str | Path,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Run several experiments by name (``"all"``: every one, in the catalogue's order),
    rendering the report after each so a long run shows its progress."""
    from cnnkit.lab.experiments import EXPERIMENTS, get_experiment
    from cnnkit.lab.report import render_report

    chosen = list(EXPERIMENTS) if list(names) == ["all"] else list(names)
    exps = [get_experiment(n) for n in chosen]  # every name checked before anything trains
    results = []
    total = sum(len(_seeds(a, e.budgets[budget])) for e in exps if budget in e.budgets for a in e.arms)
    progress = _Progress(total) if kwargs.get("train", True) else None
    try:
        for exp in exps:
            results.append(run_experiment(exp, budget, output=output, progress=progress, **kwargs))
            render_report(output)
            if on_done is not None:
                on_done(results[-1])
    finally:
        if progress is not None:
            progress.close()
    return results


def load_result(folder: str | Path) -> dict[str, Any]:
    """The ``result.json`` of one experiment folder."""
    path = Path(folder) / "result.json"
    if not path.is_file():
        raise ValueError(f"{folder} has no result.json; run `cnnkit lab run` first")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
