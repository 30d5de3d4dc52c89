"""Lazy package attributes (PEP 562): a package's public names import their module on first use.

So ``import cnnkit`` reads nothing and ``cnnkit --help``, whose parsers live beside the
code they drive, does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``.

    ``homes`` maps each public name to the module that defines it: a submodule's name
    (``"summary"`` for ``cnnkit.analysis.summary``) or a full module path (``"cnnkit.run"``).
    """

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        home = homes[name]
        return getattr(importlib.import_module(home if "." in home else f"{package}.{home}"), name)

    return __getattr__
