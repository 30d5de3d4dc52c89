"""ImageNet-layout folders (``root/train/<class>/*.png|jpg``, ``root/val/<class>/*``) -> uint8 tensors.

Class discovery is torchvision's (``datasets.ImageFolder``); decoding is PIL's, as in
torchvision's default ``ImageFolder`` loader (PIL reports a bad file as an exception and
writes nothing to stderr, where libpng under ``torchvision.io`` prints its own line). Every
image is resized (shorter side, then centre
crop) to ``image_size`` so the whole split fits one tensor.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cnnkit.data.sources import DatasetError, DatasetTensors

__all__ = ["load_imagefolder", "read_image"]

# torchvision's ImageFolder extensions (PIL reads them all); other files in a class folder are
# skipped, as ImageFolder skips them.
_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _is_image(path: str) -> bool:
    return path.lower().endswith(_EXTENSIONS)


def read_image(path: str | Path, *, channels: int = 3, size: int | None = None) -> torch.Tensor:
    """One image file as a uint8 (channels, H, W) tensor, resized (shorter side) and centre-cropped to ``size``.

    A file PIL cannot read raises :class:`DatasetError` naming the file; nothing is printed.
    """
    from PIL import Image
    from torchvision.transforms.v2.functional import center_crop, pil_to_tensor, resize

    if channels not in (1, 3):
        raise ValueError(f"images are read as 1 (grey) or 3 (RGB) channels; got {channels}")
    try:
        with Image.open(path) as pil:
            img = pil_to_tensor(pil.convert("L" if channels == 1 else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: unreadable image ({e}); remove or replace it") from e
    if size is not None:
        img = center_crop(resize(img, [size], antialias=True), [size, size])
    return img


def _split(
    root: Path, split: str, size: int, classes: list[str] | None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from torchvision.datasets import ImageFolder

    folder = root / split
    if not folder.is_dir():
        raise DatasetError(
            f"{folder} does not exist: imagefolder needs {root}/train/<class>/ and {root}/val/<class>/"
        )
    empty = [
        d.name
        for d in sorted(folder.iterdir())
        if d.is_dir() and not any(f.suffix.lower() in _EXTENSIONS and f.is_file() for f in d.rglob("*"))
    ]
    if empty:
        raise DatasetError(
            f"{folder}: class folder(s) with no images ({'/'.join(_EXTENSIONS)}): {', '.join(empty[:5])} "
            "(remove them or add images)"
        )
    try:
        ds = ImageFolder(str(folder), is_valid_file=_is_image, allow_empty=False)
    except (FileNotFoundError, OSError) as e:
        raise DatasetError(f"{folder}: {e}") from e
    if classes is not None and ds.classes != classes:
        raise DatasetError(f"{folder}: classes {ds.classes[:5]}... differ from train's {classes[:5]}...")
    images = torch.empty(len(ds.samples), 3, size, size, dtype=torch.uint8)
    for i, (path, _) in enumerate(ds.samples):
        images[i] = read_image(path, channels=3, size=size)
    labels = torch.tensor([t for _, t in ds.samples], dtype=torch.long)
    return images, labels, list(ds.classes)


def load_imagefolder(root: Path, *, image_size: int | None = None) -> DatasetTensors:
    """Load both splits of an ImageNet-layout folder, resized to ``image_size`` (default 64)."""
    size = 64 if image_size is None else image_size
    if size < 1:
        raise DatasetError(f"image size must be >= 1; got {size}")
    tx, ty, classes = _split(root, "train", size, None)
    vx, vy, _ = _split(root, "val", size, classes)
    return DatasetTensors("imagefolder", tx, ty, vx, vy, classes)
