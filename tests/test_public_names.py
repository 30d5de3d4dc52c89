"""One public name, one object: every name a package exports is the object its home module
defines, whatever was imported before (a lazy name equal to a submodule's name used to turn
into the submodule once anything imported it: ``cnnkit.deploy.decompose``)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

import cnnkit


def _import_everything() -> list[types.ModuleType]:
    packages = []
    for info in pkgutil.walk_packages(cnnkit.__path__, "cnnkit."):
        if info.name == "cnnkit.__main__":  # runs the command line
            continue
        module = importlib.import_module(info.name)
        if info.ispkg:
            packages.append(module)
    return [cnnkit, *packages]


_SCRIPT = """
import importlib, pkgutil, sys
import cnnkit
packages = [cnnkit] + [importlib.import_module(i.name) for i in pkgutil.walk_packages(cnnkit.__path__, "cnnkit.")
                       if i.ispkg]
first = {(p.__name__, n): getattr(p, n) for p in packages for n in getattr(p, "__all__", [])}
for info in pkgutil.walk_packages(cnnkit.__path__, "cnnkit."):  # every submodule, then look again
    if info.name != "cnnkit.__main__":
        importlib.import_module(info.name)
changed = [f"{p}.{n}" for (p, n), obj in first.items() if getattr(sys.modules[p], n) is not obj]
print(",".join(changed))
"""


def test_no_public_name_changes_when_its_submodules_are_imported() -> None:
    # in a fresh interpreter: each package's names read before and after importing every submodule
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
    assert callable(cnnkit.train) and isinstance(cnnkit.train, types.ModuleType)  # the package, callable


def test_the_top_level_names_are_their_home_modules_objects() -> None:
    _import_everything()
    from cnnkit.deploy.decomposition import decompose
    from cnnkit.deploy.exporters import export
    from cnnkit.deploy.fuse import fuse_bn
    from cnnkit.run import load_run
    from cnnkit.train.config import TrainConfig

    assert cnnkit.decompose is decompose and cnnkit.deploy.decompose is decompose
    assert cnnkit.export is export and cnnkit.deploy.export is export
    assert cnnkit.fuse_bn is fuse_bn and cnnkit.load_run is load_run and cnnkit.TrainConfig is TrainConfig
    assert cnnkit.train is importlib.import_module("cnnkit.train")


def test_calling_the_public_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _import_everything()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)
    fused = cnnkit.fuse_bn(model)
    torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-4)
    low_rank = cnnkit.decompose(model, method="depthwise_separable", energy=1.0)
    assert low_rank(x).shape == model(x).shape
    final = cnnkit.train(
        dataset="synthetic", image_size=12, train_subset=256, test_subset=32, epochs=1,
        model="fmnet", model_kwargs={"widths": [8, 16, 32], "stem_width": 8}, threads=1,
        progress=False, output=str(tmp_path / "run"),
    )  # fmt: skip
    assert 0 <= final["test_top1"] <= 1
    reloaded, meta = cnnkit.load_run(tmp_path / "run")
    assert meta["model"] == "fmnet" and isinstance(reloaded, nn.Module)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        cnnkit.nope  # noqa: B018
