"""The run folder: the one owner of its format, for every package that writes or reads one.

A run folder, written by ``cnnkit train`` (and ``cnnkit decompose``), holds

==================  ==========================================================================
``config.yaml``     the resolved :class:`~cnnkit.train.config.TrainConfig`, plain YAML
``model.safetensors`` the weights (safetensors: no code), with the model's name, classes,
                    channels, ``small_input``, model options, mean/std and image size as
                    JSON-encoded metadata; enough to rebuild the model
``checkpoint.pt``   the full training state (model, optimizer, scheduler, EMA, RNG states,
                    epoch and step, history, config as plain data), read back with
                    ``torch.load(..., weights_only=True)`` only: no fallback that could
                    unpickle code
``metrics.jsonl``   one JSON line per finished epoch
``final.json``      the run's result (the dict :func:`cnnkit.train.loop.train` returns)
``summary.csv``, ``curves.png``  the history as a table and as loss/error/lr curves
==================  ==========================================================================

Every write goes to a temporary file in the same folder, is fsynced, then atomically
renamed over the old file, so a kill or a full disk leaves the previous file intact.
A write that fails (a full disk, an I/O error) raises :class:`WriteError`, one line naming
the file; the temporary file is removed. A process killed mid-write leaves its temporary
file behind: :func:`remove_stale_temporaries` clears them when the run is resumed.

:func:`load_run` rebuilds any run's model from its weights file. A model that is not a zoo
model as built (a decomposed one) says so in its metadata; the package that made it
registers how to rebuild it (:func:`register_rebuild`, or the ``cnnkit.rebuild`` entry
point group), so this module never imports the packages above it.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from cnnkit.models.registry import create_model

__all__ = [
    "CONFIG",
    "FINAL",
    "METRICS",
    "STATE",
    "WEIGHTS",
    "CheckpointError",
    "WriteError",
    "append_metrics",
    "atomic_write",
    "config_text",
    "load_model_state",
    "load_run",
    "load_state",
    "load_weights",
    "read_config",
    "read_final",
    "read_meta",
    "read_metrics",
    "register_rebuild",
    "remove_stale_temporaries",
    "run_folder",
    "save_state",
    "save_weights",
    "write_config",
    "write_final",
    "write_history",
    "write_metrics",
    "write_text",
]

# the files of a run folder
CONFIG = "config.yaml"
WEIGHTS = "model.safetensors"
STATE = "checkpoint.pt"
METRICS = "metrics.jsonl"
FINAL = "final.json"
SUMMARY = "summary.csv"
CURVES = "curves.png"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, unsafe or does not fit the model."""


class WriteError(OSError):
    """A run's file could not be written; the previous version of the file is unchanged.

    ``errno`` is the cause (``ENOSPC`` for a full disk); ``str()`` is the one-line message.
    """

    def __str__(self) -> str:
        return str(self.strerror)


# atomic_write's temporary files: "." + the target's name + "." + mkstemp's 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then fsync and rename ``tmp`` over ``path``; on any failure ``path`` is untouched.

    A failure to write (``OSError``, or a full disk that a writer such as ``torch.save``
    reports as an obscure ``RuntimeError``) is raised as :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would, or the old file's
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except Exception as e:
        # measured while the temporary file still holds its share of the disk
        full = _disk_full(path.parent, e)
        tmp.unlink(missing_ok=True)
        if isinstance(e, WriteError):
            raise
        kept = f"the previous {path.name}, if any, is unchanged"
        if full:
            raise WriteError(
                errno.ENOSPC,
                f"cannot write {path} (No space left on device); {kept} "
                f"(free space on the disk of {path.parent})",
            ) from e
        if isinstance(e, OSError):
            why = e.strerror or str(e) or type(e).__name__
            raise WriteError(e.errno or errno.EIO, f"cannot write {path} ({why}); {kept}") from e
        raise
    except BaseException:  # KeyboardInterrupt, SystemExit: no message to improve
        tmp.unlink(missing_ok=True)
        raise


def _disk_full(folder: Path, e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    if "No space left on device" in text or "os error 28" in text:  # safetensors' Rust I/O error
        return True
    if isinstance(e, RuntimeError):  # torch.save's writer: "[enforce fail ...] unexpected pos"
        try:
            return shutil.disk_usage(folder).free < 2**20
        except OSError:
            return False
    return False


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left in ``folder`` when its
    process was killed mid-write (the files they were meant to replace are intact).

    Call it only while no other process writes to ``folder`` (on resume, rank 0).
    """
    removed = []
    for p in Path(folder).iterdir():
        if _TEMP_NAME.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the full training state atomically (``torch.save`` of tensors and plain data only)."""
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    """Read a training state with ``weights_only=True``; every failure is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (a write was interrupted? use an earlier checkpoint)")
    try:
        with warnings.catch_warnings():
            # a plain (non-zip) pickle makes torch warn about its protocol before the unpickler
            # rejects it; the rejection below is the one message the user needs
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise CheckpointError(
            f"{path}: rejected, it holds something other than tensors and plain data ({first})"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: truncated or not a cnnkit checkpoint ({first})") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a cnnkit training checkpoint (no model state)")
    return state


def save_weights(path: Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Write the weights as safetensors; ``metadata`` values are stored JSON-encoded."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=meta))


def read_meta(run: str | Path) -> dict[str, Any]:
    """The metadata of a run's ``model.safetensors`` (the folder or the file); no tensor is read."""
    from safetensors import SafetensorError, safe_open

    path = Path(run)
    weights = path / WEIGHTS if path.is_dir() else path
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such weights file")
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: truncated or not a safetensors file ({e})") from e


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read safetensors weights and their metadata."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: truncated or not a safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from e
    return tensors, meta


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)`` with a one-line error when the file is for another architecture."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        what = (
            f"{len(missing)} missing keys (e.g. {missing[0]})"
            if missing
            else f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})"
            if unexpected
            else f"shape mismatch at {wrong[0]}: file {tuple(state[wrong[0]].shape)}, model {tuple(own[wrong[0]].shape)}"
        )
        raise CheckpointError(
            f"{path}: weights do not fit {getattr(model, 'model_name', type(model).__name__)} ({what}); was it saved from another model?"
        )
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------- small files


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    atomic_write(Path(path), write)


def config_text(config: dict[str, Any], comments: dict[str, str] | None = None) -> str:
    """``config.yaml``'s text: a ``key: value`` line per field, in order, with ``# comment`` where given
    (where the value came from); ``yaml.safe_load`` reads it back to ``config``."""
    lines = []
    for key, value in config.items():
        if isinstance(value, dict | list):
            line = f"{key}: " + yaml.safe_dump(value, default_flow_style=True, width=2**31).strip()
        else:
            line = yaml.safe_dump({key: value}, width=2**31).strip()
        lines.append(f"{line}  # {comments[key]}" if comments and key in comments else line)
    return "\n".join(lines) + "\n"


def write_config(folder: Path, config: dict[str, Any], comments: dict[str, str] | None = None) -> None:
    """``config.yaml``: the resolved training config, in field order (:func:`config_text`)."""
    write_text(Path(folder) / CONFIG, config_text(config, comments))


def read_config(folder: str | Path, *, required: bool = True) -> dict[str, Any]:
    """A run's ``config.yaml`` as plain data (``yaml.safe_load``: never code).

    ``folder`` may be the run folder or a file in it (its ``model.safetensors``). A missing
    file raises, naming the folder, unless ``required`` is False ({} then).
    """
    p = Path(folder)
    path = (p.parent if p.is_file() else p) / CONFIG
    if not path.is_file():
        if not required:
            return {}
        raise ValueError(f"{path.parent} is not a cnnkit run folder (no {CONFIG})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of option: value; got {type(data).__name__}")
    return data


def write_metrics(folder: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` from ``history`` (the checkpoint's record of finished epochs)."""
    write_text(Path(folder) / METRICS, "".join(json.dumps(r) + "\n" for r in history))


def append_metrics(folder: Path, row: dict[str, Any], epoch: int) -> None:
    """Append one epoch's line to ``metrics.jsonl``; a failure names the file and how to go on."""
    path = Path(folder) / METRICS
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    except OSError as e:
        raise WriteError(
            e.errno or errno.EIO,
            f"cannot append to {path} ({e.strerror}); the checkpoint of epoch "
            f"{epoch} is saved: free space, then continue with --resume {folder}",
        ) from e


def read_metrics(folder: str | Path) -> list[dict[str, Any]]:
    """The epochs of ``metrics.jsonl`` ([] when there is none)."""
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def write_final(folder: Path, final: dict[str, Any]) -> None:
    write_text(Path(folder) / FINAL, json.dumps(final, indent=2) + "\n")


def read_final(folder: str | Path) -> dict[str, Any] | None:
    """``final.json`` of a finished run, or None while it is unfinished."""
    path = Path(folder) / FINAL
    return json.loads(path.read_text()) if path.is_file() else None


def write_history(folder: Path, rows: list[dict[str, Any]]) -> None:
    """``summary.csv`` and ``curves.png``: the finished run's history as a table and as curves."""
    folder = Path(folder)

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            # rows of runs resumed across versions may differ in keys: the union, in first-seen order
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            w.writeheader()
            w.writerows(rows)

    atomic_write(folder / SUMMARY, write_csv)
    _plot_curves(rows, folder / CURVES)


def _plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib  # here: matplotlib takes a second to import, and only a finished run draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    axes[0].plot(ep, [r["test_loss"] for r in rows], "o-", label="test")
    axes[0].set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    axes[1].plot(ep, [100 * (1 - r["train_acc"]) for r in rows], "o-", label="train (augmented)")
    axes[1].plot(ep, [100 * r["test_top1_err"] for r in rows], "o-", label="test top-1")
    axes[1].plot(ep, [100 * r["test_top5_err"] for r in rows], "o-", label="test top-5")
    axes[1].set(title="error", xlabel="epoch", ylabel="error (%)")
    axes[2].plot(ep, [r["lr"] for r in rows], "o-")
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    for ax in axes[:2]:
        ax.legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------- rebuilding a run's model

# metadata key -> function(model built on meta, the key's value) that gives the model its structure
_REBUILD: dict[str, Callable[[nn.Module, Any], None]] = {}


def register_rebuild(key: str, fn: Callable[[nn.Module, Any], None]) -> None:
    """Register how a weights file whose metadata holds ``key`` is rebuilt.

    ``fn(model, value)`` changes the zoo model (built on the ``meta`` device from the
    metadata) in place into the structure the weights were saved from. Packages register
    their hooks as ``cnnkit.rebuild`` entry points too (pyproject.toml), so that
    :func:`load_run` finds them without importing them first.
    """
    _REBUILD[key] = fn


def _rebuilder(key: str) -> Callable[[nn.Module, Any], None] | None:
    if key not in _REBUILD:
        for ep in entry_points(group="cnnkit.rebuild", name=key):
            _REBUILD[key] = ep.load()
    return _REBUILD.get(key)


def _extension_keys() -> list[str]:
    """Metadata keys that change the model's structure (known: ``decomposition``)."""
    return sorted({*_REBUILD, *(ep.name for ep in entry_points(group="cnnkit.rebuild"))})


def run_folder(run: str | Path) -> Path:
    """The run folder of ``run`` (the folder or its ``model.safetensors``), checked to hold weights."""
    p = Path(run)
    folder = p.parent if p.is_file() else p
    if not (folder / WEIGHTS).is_file():
        raise ValueError(f"{run} is not a cnnkit run folder (no {WEIGHTS}); train one with `cnnkit train`")
    return folder


def load_run(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model from a run folder's ``model.safetensors`` (or that file itself).

    The architecture comes from the metadata the trainer wrote (model name, classes,
    channels, small_input and the model options), the weights from the file: no code
    is loaded. A decomposed model (``decomposition`` in the metadata) gets its structure
    from the hook its package registered. Returns the model in eval mode and the
    metadata (mean, std, classes...).
    """
    path = Path(run_dir)
    weights = path / WEIGHTS if path.is_dir() else path
    state, meta = load_weights(weights)
    for key in ("model", "num_classes", "in_chans", "mean", "std"):
        if key not in meta:
            raise CheckpointError(f"{weights}: no {key!r} in its metadata; not written by `cnnkit train`")
    with torch.device("meta"):  # no weight is allocated until the file's are loaded
        model = create_model(
            meta["model"],
            num_classes=meta["num_classes"],
            in_chans=meta["in_chans"],
            small_input=meta.get("small_input", False),
            **meta.get("model_kwargs", {}),
        )
        for key in _extension_keys():
            if meta.get(key):
                rebuild = _rebuilder(key)
                if rebuild is None:  # pragma: no cover (an entry point that does not load)
                    raise CheckpointError(f"{weights}: no way to rebuild its {key!r}; reinstall cnnkit")
                rebuild(model, meta[key])
    model.to_empty(device="cpu")
    load_model_state(model, state, weights)
    return model.eval(), meta
