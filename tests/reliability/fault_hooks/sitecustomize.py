"""Fault injection for the reliability tests: stops a real ``python -m cnnkit train`` at a chosen point.

The tests put this folder on the child's PYTHONPATH, so Python imports this file at start-up
(``site`` imports any ``sitecustomize`` it finds). Nothing in cnnkit knows about it: with
``CNNKIT_FAULT`` unset it does nothing. With ``CNNKIT_FAULT=KIND:N`` it wraps one function
once ``cnnkit.train.loop`` is imported and, at the N-th matching call of this process, writes
``$CNNKIT_FAULT_DIR/paused`` and waits. The test then sends SIGKILL (a real kill -9: no
exception, no ``finally``, no atexit) or, to let it go on, creates ``$CNNKIT_FAULT_DIR/go``.

KIND
  step          before the N-th training batch is augmented (counts batches of this process)
  after_save    just after the N-th ``save_state`` (checkpoint.pt written and renamed) returned
  mid_write     the N-th checkpoint.pt write has put half of its bytes in its temporary file
                (written and fsynced) when it stops
  before_rename the N-th checkpoint.pt temporary file is complete and fsynced, not yet renamed
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

_FAULT = os.environ.get("CNNKIT_FAULT", "")


def _pause() -> None:
    folder = Path(os.environ["CNNKIT_FAULT_DIR"])
    (folder / "paused").write_text(str(os.getpid()))
    while not (folder / "go").exists():
        time.sleep(0.02)


def _counter(n: int) -> Any:
    calls = [0]

    def hit() -> bool:
        calls[0] += 1
        return calls[0] == n

    return hit


def _install(loop: ModuleType) -> None:
    import io

    import torch

    kind, _, n = _FAULT.partition(":")
    hit = _counter(int(n))
    if kind == "step":
        real_augment = loop._augment

        def augment(*args: Any) -> Any:
            if hit():
                _pause()
            return real_augment(*args)

        loop._augment = augment
    elif kind == "after_save":
        real_save_state = loop.save_state

        def save_state(path: Path, state: dict[str, Any]) -> None:
            real_save_state(path, state)
            if hit():
                _pause()

        loop.save_state = save_state
    elif kind == "mid_write":
        real_torch_save = torch.save

        def torch_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            if not (
                isinstance(f, str | os.PathLike) and Path(f).name.startswith(".checkpoint.pt.") and hit()
            ):
                return real_torch_save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            real_torch_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            with open(f, "wb") as out:
                out.write(data[: len(data) // 2])
                out.flush()
                os.fsync(out.fileno())
            _pause()
            with open(f, "wb") as out:  # let go: finish the write as torch.save would have
                out.write(data)
            return None

        torch.save = torch_save
    elif kind == "before_rename":
        real_replace = os.replace

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if Path(dst).name == "checkpoint.pt" and hit():
                _pause()
            real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    else:
        raise SystemExit(f"sitecustomize: unknown CNNKIT_FAULT {_FAULT!r}")


class _AfterImport(importlib.abc.MetaPathFinder):
    """Patches ``cnnkit.train.loop`` right after it is executed, so start-up is otherwise untouched."""

    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "cnnkit.train.loop":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        real_exec = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            real_exec(module)
            _install(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if _FAULT:
    sys.meta_path.insert(0, _AfterImport())
