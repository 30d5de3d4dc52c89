"""ImageNet-layout folders (root/train/<class>/*, root/val/<class>/*) -> uint8 tensors.

Outside references: torchvision's ImageFolder convention (classes are the sorted folder names,
labels their indices), PNG/JPEG files written by torchvision's encoders, and the resize rule
"shorter side to image_size, then centre crop" checked on images whose content we know.
"""

from pathlib import Path

import pytest
import torch
from torchvision.io import write_jpeg, write_png

from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.sources import DatasetError, load_dataset

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they still work
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

# class -> RGB colour of its solid images (classes deliberately not in alphabetical order here)
COLOURS = {"dog": (200, 30, 40), "cat": (10, 220, 90), "bird": (60, 70, 250)}


def _solid(rgb: tuple[int, int, int], h: int, w: int) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1).expand(3, h, w).contiguous()


def _make_tree(root: Path, per_class: dict[str, int]) -> Path:
    for split, counts in (("train", per_class), ("val", dict.fromkeys(per_class, 1))):
        for cls, n in counts.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                # mixed sizes and aspect ratios: every image is resized to one size
                write_png(_solid(COLOURS[cls], 10 + 3 * i, 14 - i), str(folder / f"{i}.png"))
    return root


def test_loads_shapes_labels_and_classes(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "tiny", {"dog": 3, "cat": 2, "bird": 1})
    ds = load_imagefolder(root, image_size=8)
    assert ds.classes == ["bird", "cat", "dog"]  # torchvision's rule: sorted folder names
    assert ds.train_x.shape == (6, 3, 8, 8) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (3, 3, 8, 8)
    assert ds.train_y.dtype == torch.int64
    assert sorted(ds.train_y.tolist()) == [0, 1, 1, 2, 2, 2]
    assert sorted(ds.test_y.tolist()) == [0, 1, 2]
    for x, y in ((ds.train_x, ds.train_y), (ds.test_x, ds.test_y)):
        for img, label in zip(x, y.tolist(), strict=True):
            # a solid image stays that colour through resize and crop: the label belongs to the image
            assert torch.equal(img, _solid(COLOURS[ds.classes[label]], 8, 8))


def test_default_size_and_load_dataset_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _make_tree(tmp_path / "tiny", {"dog": 1, "cat": 1})
    assert load_imagefolder(root).train_x.shape[-2:] == (64, 64)
    ds = load_dataset("imagefolder", data_dir=root, image_size=12)
    assert ds.name == "imagefolder" and ds.image_shape == (3, 12, 12) and ds.num_classes == 2
    monkeypatch.setenv("CNNKIT_DATA", str(root))
    assert load_dataset("imagefolder", image_size=4).train_x.shape == (2, 3, 4, 4)
    monkeypatch.delenv("CNNKIT_DATA")
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("imagefolder")


def test_shorter_side_resize_then_centre_crop_and_formats(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "tiny", {"dog": 1, "cat": 1})
    # 8 x 24 (H x W): three 8-pixel vertical bands; the centre crop of size 8 is exactly the middle band
    bands = torch.cat(
        [_solid((255, 0, 0), 8, 8), _solid((0, 255, 0), 8, 8), _solid((0, 0, 255), 8, 8)], dim=2
    )
    write_png(bands, str(root / "train" / "dog" / "wide.png"))
    # a one-channel PNG becomes RGB by repeating the grey level; JPEG files are read too
    write_png(torch.full((1, 9, 9), 77, dtype=torch.uint8), str(root / "train" / "cat" / "grey.png"))
    write_jpeg(_solid(COLOURS["cat"], 16, 16), str(root / "train" / "cat" / "photo.jpg"), quality=100)
    ds = load_imagefolder(root, image_size=8)
    by_label: dict[int, list[torch.Tensor]] = {}
    for img, label in zip(ds.train_x, ds.train_y.tolist(), strict=True):
        by_label.setdefault(label, []).append(img)
    dog, cat = ds.classes.index("dog"), ds.classes.index("cat")
    assert len(by_label[dog]) == 2 and len(by_label[cat]) == 3
    assert any(torch.equal(img, _solid((0, 255, 0), 8, 8)) for img in by_label[dog])
    assert any(torch.equal(img, torch.full((3, 8, 8), 77, dtype=torch.uint8)) for img in by_label[cat])
    want = torch.tensor(COLOURS["cat"]).view(3, 1, 1).float()
    assert any((img.float() - want).abs().max() <= 4 for img in by_label[cat])  # JPEG is lossy


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "tiny", {"dog": 1, "cat": 1})
    (root / "train" / "hamster").mkdir()
    (root / "train" / "hamster" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="hamster") as err:
        load_imagefolder(root, image_size=8)
    assert "no images" in str(err.value) and str(root / "train") in str(err.value)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "tiny", {"dog": 1, "cat": 1})
    bad = root / "train" / "cat" / "x.png"
    bad.write_bytes(b"these bytes are not a PNG")
    with pytest.raises(DatasetError, match="unreadable image") as err:
        load_imagefolder(root, image_size=8)
    assert str(bad) in str(err.value)


def test_missing_val_split_is_a_clear_error(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "tiny", {"dog": 1, "cat": 1})
    for f in (root / "val").rglob("*.png"):
        f.unlink()
    for d in (root / "val").iterdir():
        d.rmdir()
    (root / "val").rmdir()
    with pytest.raises(DatasetError, match="does not exist") as err:
        load_imagefolder(root, image_size=8)
    msg = str(err.value)
    assert str(root / "val") in msg and "val/<class>/" in msg


def test_val_classes_must_match_train(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "tiny", {"dog": 1, "cat": 1})
    (root / "val" / "cat").rename(root / "val" / "bird")
    with pytest.raises(DatasetError, match="differ from train"):
        load_imagefolder(root, image_size=8)


def test_folder_without_classes_and_bad_size(tmp_path: Path) -> None:
    (tmp_path / "flat" / "train").mkdir(parents=True)
    (tmp_path / "flat" / "val").mkdir()
    with pytest.raises(DatasetError):
        load_imagefolder(tmp_path / "flat", image_size=8)
    root = _make_tree(tmp_path / "tiny", {"dog": 1})
    for bad_size in (0, -3):
        with pytest.raises(DatasetError, match="image size"):
            load_imagefolder(root, image_size=bad_size)


def test_nested_images_count_and_other_files_are_skipped(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "tiny", {"dog": 1, "cat": 1})
    # ImageFolder walks class folders recursively: images in a subfolder belong to the class
    nested = root / "train" / "bird" / "2024" / "batch1"
    nested.mkdir(parents=True)
    write_png(_solid(COLOURS["bird"], 5, 5), str(nested / "a.png"))
    (root / "val" / "bird").mkdir()
    write_png(_solid(COLOURS["bird"], 5, 5), str(root / "val" / "bird" / "b.png"))
    (root / "train" / "dog" / "README.txt").write_text("not an image")
    (root / "train" / "dog" / "notes.md").write_bytes(b"# not an image either")
    # a BMP is one of torchvision ImageFolder's extensions, read like the PNGs
    from PIL import Image

    Image.new("RGB", (5, 5), COLOURS["dog"]).save(root / "train" / "dog" / "scan.bmp")
    ds = load_imagefolder(root, image_size=4)
    assert ds.classes == ["bird", "cat", "dog"]
    assert sorted(ds.train_y.tolist()) == [0, 1, 2, 2]
    dog = ds.train_x[ds.train_y == 2]
    assert (dog == torch.tensor(COLOURS["dog"], dtype=torch.uint8)[:, None, None]).all()
