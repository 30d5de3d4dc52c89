"""Checkpoints that never run code and are never left half-written.

- ``model.safetensors``: the weights alone (safetensors: no code, safe to share), with
  the model's name and data statistics as plain-string metadata.
- ``checkpoint.pt``: the full training state (model, optimizer, scheduler, EMA, RNG
  states, epoch and step, config as plain data), read back with
  ``torch.load(..., weights_only=True)`` only: no fallback that could unpickle code.

Every write goes to a temporary file in the same folder, is fsynced, then atomically
renamed over the old file, so a kill or a full disk leaves the previous file intact.
A write that fails (a full disk, an I/O error) raises :class:`WriteError`, one line naming
the file; the temporary file is removed. A process killed mid-write leaves its temporary
file behind: :func:`remove_stale_temporaries` clears them when the run is resumed.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "WriteError",
    "atomic_write",
    "load_model_state",
    "load_state",
    "load_weights",
    "remove_stale_temporaries",
    "save_state",
    "save_weights",
]


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


def load_run(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model from a run folder's ``model.safetensors`` (or that file itself).

    The architecture comes from the metadata the trainer wrote (model name, classes,
    channels, small_input and the model options), the weights from the file: no code
    is loaded. Returns the model in eval mode and the metadata (mean, std, classes...).
    """
    from cnnkit.models.registry import create_model

    path = Path(run_dir)
    weights = path / "model.safetensors" if path.is_dir() else path
    state, meta = load_weights(weights)
    for key in ("model", "num_classes", "in_chans", "mean", "std"):
        if key not in meta:
            raise CheckpointError(f"{weights}: no {key!r} in its metadata; not written by `cnnkit train`")
    with torch.device("meta"):
        model = create_model(
            meta["model"],
            num_classes=meta["num_classes"],
            in_chans=meta["in_chans"],
            small_input=meta.get("small_input", False),
            **meta.get("model_kwargs", {}),
        )
        spec = meta.get("decomposition")
        if spec:  # a run written by `cnnkit decompose`: rebuild its low-rank structure
            from cnnkit.deploy.decompose import build_decomposed

            build_decomposed(model, spec["method"], spec["ranks"])
    model.to_empty(device="cpu")
    load_model_state(model, state, weights)
    return model.eval(), meta
