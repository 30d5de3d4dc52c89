"""Fetch a dataset before the first run needs it (``make train`` calls this), saying what it does.

``python -m cnnkit.data.fetch fashion-mnist``: nothing to do when a copy is found (the places
:func:`cnnkit.data.sources.search_dirs` lists); else, as root with ``apt-get``, Debian's
package (``dataset-fashion-mnist``, which puts the four IDX files in ``/usr/share/datasets``);
else torchvision's download into ``~/.cache/cnnkit`` (where a network is). When neither
works it prints the one command that would, and exits 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from cnnkit.data import sources

__all__ = ["ensure_dataset", "main"]

_APT = {"fashion-mnist": "dataset-fashion-mnist"}


def _say(msg: str) -> None:
    print(f"cnnkit: {msg}", file=sys.stderr, flush=True)


def _apt_install(package: str) -> bool:
    """``apt-get update && apt-get install -y package`` (as root); True when it succeeded."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            return False
    return True


def ensure_dataset(name: str) -> bool:
    """True when ``name`` is on this machine, after fetching it if it was not (see the module doc)."""
    if sources._find_idx(name, None) is not None:
        return True
    package = _APT.get(name)
    if package and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        _say(f"{name} is not on this machine; installing Debian's {package} (apt-get install -y {package})")
        if _apt_install(package) and sources._find_idx(name, None) is not None:
            return True
    _say(f"{name}: trying torchvision's download into {Path.home() / '.cache' / 'cnnkit'}")
    try:
        sources._load_torchvision(name, None, download=True)
        return True
    except sources.DatasetError:
        pass
    how = f"sudo apt-get install {package}" if package else "a copy of its files in $CNNKIT_DATA"
    _say(f"{name} is missing and could not be fetched here; get it with: {how}")
    return False


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or ["fashion-mnist"]
    return 0 if all(ensure_dataset(n) for n in names) else 1


if __name__ == "__main__":
    raise SystemExit(main())
