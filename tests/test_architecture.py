"""The layers of docs/architecture.md hold in the code: every import between cnnkit's packages
goes down (or sideways within a layer), and no two packages import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "cnnkit"

# docs/architecture.md, lowest first; a package may import its own layer's and the layers below
LAYERS = [
    {"_lazy"},  # the lazy-attribute helper of the packages' __init__ (no cnnkit import)
    {"layers", "data"},
    {"models"},
    {"run"},
    {"analysis", "train"},
    {"deploy", "viz", "lab", "doctor"},
    {"cli", "__main__"},
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _package(module: str) -> str | None:
    """``cnnkit.train.loop`` -> ``train``; the top-level ``cnnkit`` (its lazy name table) -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "cnnkit" else None


def _imports() -> list[tuple[str, str, str]]:
    """(importing package, imported package, file:line) for every import across packages."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(p for p in rel.parts if p != "__init__")
        here = _package(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + (
                    [f"cnnkit.{a.name}" for a in node.names] if node.module == "cnnkit" else []
                )
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                there = _package(target)
                if here and there and there != here and there in RANK:
                    found.append((here, there, f"{path.relative_to(SRC.parent)}:{node.lineno}"))
    return found


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages - set(RANK) == set(), "add the new package to docs/architecture.md and LAYERS"


def test_imports_go_down_the_layers() -> None:
    up = [f"{where}: {a} imports {b}" for a, b, where in _imports() if RANK[b] > RANK[a]]
    assert up == [], "\n".join(up)


def test_no_two_packages_import_each_other() -> None:
    edges = {(a, b) for a, b, _ in _imports()}
    cycles = sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b)
    assert cycles == []


def test_a_run_folder_never_imports_what_sits_above_it() -> None:
    """cnnkit.run rebuilds decomposed models through a registered hook, not by importing deploy."""
    code = "import sys, cnnkit.run; print(sorted(m for m in sys.modules if m.startswith('cnnkit.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "cnnkit.deploy" not in loaded and "cnnkit.train" not in loaded, loaded
