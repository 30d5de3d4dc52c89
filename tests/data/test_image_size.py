"""``--image-size`` on the IDX datasets and CIFAR: both splits resized once at load, bilinear with
antialiasing, so a net can train at a lower resolution (MobileNet's resolution multiplier,
Howard et al. 2017, sec. 3.3).

Outside reference: PIL's bilinear resize, which antialiases when it shrinks (torch's
``antialias=True`` is written to match it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from cnnkit import cli
from cnnkit.data import sources
from cnnkit.data.sources import DatasetError, DatasetTensors, load_dataset, resize_images

SYSTEM = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (SYSTEM / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Fashion-MNIST system copy missing: apt-get install dataset-fashion-mnist",
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the system copy is found: no $CNNKIT_DATA, an empty home."""
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@needs_fmnist
def test_fashion_mnist_at_20_px_and_none_keeps_28() -> None:
    full = load_dataset("fashion-mnist", train_subset=500)
    small = load_dataset("fashion-mnist", train_subset=500, image_size=20)
    assert full.image_shape == (1, 28, 28) and tuple(full.test_x.shape) == (10000, 1, 28, 28)
    assert small.image_shape == (1, 20, 20) and tuple(small.test_x.shape) == (10000, 1, 20, 20)
    assert small.train_x.dtype == torch.uint8 and small.test_x.dtype == torch.uint8
    # the same images (the subset is drawn after resizing, by the same seed), in the same order
    assert torch.equal(small.train_y, full.train_y) and torch.equal(small.test_y, full.test_y)
    assert torch.equal(small.train_x, resize_images(full.train_x, 20))
    assert torch.equal(small.test_x, resize_images(full.test_x, 20))
    # resizing keeps the brightness: mean pixel within half a grey level
    assert abs(small.test_x.float().mean() - full.test_x.float().mean()) < 0.5
    # asking for the stored size changes nothing
    assert torch.equal(load_dataset("fashion-mnist", train_subset=500, image_size=28).train_x, full.train_x)


def test_resize_matches_pils_antialiased_bilinear() -> None:
    g = torch.Generator().manual_seed(0)
    # smooth, natural-looking images (an upsampled 7x7 noise) and a sharp one (pure noise)
    smooth = torch.nn.functional.interpolate(torch.rand(3, 1, 7, 7, generator=g), size=28, mode="bilinear")
    images = torch.cat([smooth, torch.rand(1, 1, 28, 28, generator=g)]).mul(255).round().to(torch.uint8)
    for size in (24, 20, 16, 40):
        ours = resize_images(images, size, chunk=3)  # two chunks
        for img, got in zip(images, ours, strict=True):
            pil = Image.fromarray(img[0].numpy()).resize((size, size), Image.Resampling.BILINEAR)
            want = torch.from_numpy(np.array(pil)).int()
            assert (got[0].int() - want).abs().max() <= 1, size  # rounding differs by at most 1 level


def test_resize_of_a_constant_image_is_that_constant_and_sizes_are_checked() -> None:
    x = torch.full((2, 3, 32, 32), 77, dtype=torch.uint8)
    assert torch.equal(resize_images(x, 18), torch.full((2, 3, 18, 18), 77, dtype=torch.uint8))
    with pytest.raises(DatasetError, match="--image-size must be >= 1; got 0"):
        resize_images(x, 0)


def test_cifar_is_resized_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR goes through torchvision (no copy here): its loaded tensors are resized the same way."""
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(6)

    def fake(name: str, data_dir: object, download: bool) -> DatasetTensors:
        return DatasetTensors(name, x.clone(), y.clone(), x[:2].clone(), y[:2].clone(), ["c"] * 10)

    monkeypatch.setattr(sources, "_load_torchvision", fake)
    ds = load_dataset("cifar10", image_size=24)
    assert tuple(ds.train_x.shape) == (6, 3, 24, 24) and tuple(ds.test_x.shape) == (2, 3, 24, 24)
    assert torch.equal(ds.train_x, resize_images(x, 24))
    assert load_dataset("cifar10").image_shape == (3, 32, 32)


@needs_fmnist
def test_cnnkit_train_image_size_20_trains_on_20_px(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = [
        "train", "--dataset", "fashion-mnist", "--image-size", "20", "--train-subset", "256",
        "--test-subset", "128", "--model", "fmnet", "--model-kwargs", "widths=[8,16,32]", "stem_width=8",
        "--epochs", "1", "--batch-size", "64", "--threads", "1", "--no-progress", "--recipe", "plain",
        "--output", str(out),
    ]  # fmt: skip
    assert cli.main(flags) == 0
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    assert meta["image_size"] == 20
    assert 0 <= json.loads((out / "final.json").read_text())["test_top1"] <= 1
