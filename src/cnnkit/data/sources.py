"""Dataset sources -> in-memory uint8 tensors (lecture: "Normalizing training sets").

Every source returns a :class:`DatasetTensors`: the whole training and test sets as
``uint8`` tensors of shape (N, C, H, W) plus ``int64`` labels, loaded once. Batches are
then cut and augmented on the training device (see ``augment.py``), never image by
image in Python.

Where files are looked for, in order: ``data_dir`` (``--data-dir``), ``$CNNKIT_DATA``,
the system copy (Debian's ``dataset-fashion-mnist`` puts Fashion-MNIST in
``/usr/share/datasets/fashion-mnist/``), and a cache under ``~/.cache/cnnkit`` where
torchvision downloads when a network is there. Every file is checked against a known
digest before use.

``image_size`` (``--image-size``) resizes Fashion-MNIST, MNIST, KMNIST and CIFAR once, at
load, both splits alike: bilinear with antialiasing (``torch.nn.functional.interpolate``) on
the loaded tensors, so a net can be trained at another resolution, e.g. the resolution
multiplier rho of MobileNet (Howard et al. 2017, sec. 3.3). ``imagefolder`` resizes each file
as it reads it and ``synthetic`` draws its images at that size.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetTensors",
    "check_dataset_files",
    "load_dataset",
    "normalize",
    "resize_images",
    "search_dirs",
    "synthetic",
]

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Known digests per file. Fashion-MNIST: SHA-256 of the *decompressed* IDX bytes, so the
# upstream .gz and Debian's recompressed copy (whose .gz bytes differ) both verify.
# MNIST and KMNIST: no SHA-256 is published; the MD5 of the upstream .gz that torchvision
# publishes (torchvision/datasets/mnist.py) is used instead.
_DIGESTS: dict[str, dict[str, tuple[str, str]]] = {
    "fashion-mnist": {
        "train-images-idx3-ubyte": (
            "sha256-content",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        "train-labels-idx1-ubyte": (
            "sha256-content",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        "t10k-images-idx3-ubyte": (
            "sha256-content",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        "t10k-labels-idx1-ubyte": (
            "sha256-content",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    },
    "mnist": {
        "train-images-idx3-ubyte": ("md5-gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte": ("md5-gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte": ("md5-gz", "9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte": ("md5-gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    "kmnist": {
        "train-images-idx3-ubyte": ("md5-gz", "bdb82020997e1d708af4cf47b453dcf7"),
        "train-labels-idx1-ubyte": ("md5-gz", "e144d726b3acfaa3e44228e80efcd344"),
        "t10k-images-idx3-ubyte": ("md5-gz", "5c965bf0a639b31b8f53240b1b52f4d7"),
        "t10k-labels-idx1-ubyte": ("md5-gz", "7320c461ea6c1c855c0b718fb2a4b134"),
    },
}
_TORCHVISION_CLASS = {
    "fashion-mnist": "FashionMNIST",
    "mnist": "MNIST",
    "kmnist": "KMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
}
# Debian's dataset packages install here; a module constant so tests can point it elsewhere.
_SYSTEM_ROOT = Path("/usr/share/datasets")
_INSTALL_HINT = {
    "fashion-mnist": "apt-get install dataset-fashion-mnist",
}


class DatasetError(ValueError):
    """A dataset is missing, corrupt or malformed; the message says what to do."""


@dataclass
class DatasetTensors:
    """A whole dataset in memory: uint8 images (N, C, H, W) and int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel z-score statistics of the training set, in [0, 1] pixel units."""
        x = self.train_x.to(torch.float64).div_(255)
        return x.mean(dim=(0, 2, 3)).float(), x.std(dim=(0, 2, 3)).float()

    def keep_test_subset(self, n: int | None) -> None:
        """Keep a fixed subset of ``n`` test images (``--test-subset``; None: all).

        The first ``n`` of a permutation seeded with 0, whatever the run's seed, so runs
        with different seeds are compared on the same images.
        """
        if n is None:
            return
        if not 0 < n <= len(self.test_y):
            raise ValueError(f"--test-subset must be in 1..{len(self.test_y)} for {self.name}; got {n}")
        keep = torch.randperm(len(self.test_y), generator=torch.Generator().manual_seed(0))[:n]
        self.test_x, self.test_y = self.test_x[keep], self.test_y[keep]


def normalize(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, channels_last: bool = False
) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float z-scores ``(x / 255 - mean) / std`` per channel.

    The one place cnnkit standardises pixels (trainer, evaluation, prediction, figures);
    ``mean`` and ``std`` are per-channel, in [0, 1] pixel units (:meth:`DatasetTensors.mean_std`).
    """
    x = (images.float().div_(255) - mean[:, None, None]) / std[:, None, None]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def search_dirs(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for ``name``'s files, in order.

    Each of ``data_dir`` and ``$CNNKIT_DATA`` is searched as ``root/name``, ``root`` and,
    for torchvision's datasets, torchvision's own layout ``root/<Class>/raw`` (so a copy
    torchvision downloaded is verified like any other); then the system copy, then the cache.
    """
    tv = _TORCHVISION_CLASS.get(name) if name in _DIGESTS else None  # IDX datasets only
    dirs: list[Path] = []
    cache = Path.home() / ".cache" / "cnnkit"
    for root in (data_dir, os.environ.get("CNNKIT_DATA")):
        if root:
            dirs += [Path(root) / name, Path(root)]
            if tv:
                dirs.append(Path(root) / tv / "raw")
    dirs.append(_SYSTEM_ROOT / name)
    dirs.append(cache / name)
    if tv:
        dirs.append(cache / tv / "raw")
    return dirs


def _parse_idx(data: bytes, path: Path) -> torch.Tensor:
    """Parse IDX bytes (LeCun's format: magic 0x0000 08 <ndim>, big-endian int32 dims, uint8 data).

    Written here because torchvision's reader takes uncompressed paths only; this reads
    the verified .gz bytes in memory instead of writing a 55 MB temporary copy.
    """
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = offset + int(torch.tensor(dims).prod().item())
    if len(data) != expected:
        raise DatasetError(
            f"{path}: truncated or padded IDX file ({len(data)} bytes, header says {expected})"
        )
    return torch.frombuffer(bytearray(data[offset:]), dtype=torch.uint8).reshape(dims)


def _read_verified(path: Path, algo: str, digest: str) -> bytes:
    raw = path.read_bytes()
    try:
        content = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except EOFError as e:
        raise DatasetError(
            f"{path}: truncated gzip file ({e}); delete it and reinstall or re-download"
        ) from e
    except (gzip.BadGzipFile, zlib.error) as e:
        # gzip's own CRC-32 or the deflate stream failed: the file is corrupt.
        raise DatasetError(
            f"{path}: corrupt gzip file, checksum or stream check failed ({e}); "
            "delete it and reinstall or re-download"
        ) from e
    if algo == "sha256-content":
        got = hashlib.sha256(content).hexdigest()
    elif algo == "md5-gz" and path.suffix == ".gz":
        got = hashlib.md5(raw).hexdigest()
    else:  # only an uncompressed copy of an MD5-listed file: nothing known to check against
        raise DatasetError(f"{path}: cannot verify an uncompressed copy; use the original .gz file")
    if got != digest:
        raise DatasetError(
            f"{path}: checksum mismatch ({algo.split('-')[0]} {got[:12]}..., expected {digest[:12]}...); "
            "the file is corrupt or not the original: delete it and reinstall or re-download"
        )
    return content


def _find_idx(name: str, data_dir: str | os.PathLike[str] | None) -> tuple[Path, dict[str, Path]] | None:
    """The first searched folder holding any of ``name``'s IDX files, and those files."""
    for folder in search_dirs(name, data_dir):
        found = {}
        for stem in _IDX_FILES:
            for cand in (folder / f"{stem}.gz", folder / stem):
                if cand.is_file():
                    found[stem] = cand
                    break
        if not found:
            continue
        if len(found) < len(_IDX_FILES):
            missing = [s for s in _IDX_FILES if s not in found]
            raise DatasetError(f"{folder}: incomplete {name} copy, missing {', '.join(missing)}")
        return folder, found
    return None


def check_dataset_files(
    name: str, data_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, list[Path]] | None:
    """Find the files :func:`load_dataset` would read for an IDX dataset (fashion-mnist, mnist,
    kmnist) and verify their digests; returns the folder and the files, or None when no copy is
    found. Raises :class:`DatasetError` for an incomplete, unreadable or corrupt copy."""
    if name not in _DIGESTS:
        raise ValueError(f"check_dataset_files knows {', '.join(_DIGESTS)}; got {name!r}")
    hit = _find_idx(name, data_dir)
    if hit is None:
        return None
    folder, found = hit
    try:
        for stem, path in found.items():
            _read_verified(path, *_DIGESTS[name][stem])
    except OSError as e:
        raise DatasetError(f"{folder}: cannot read {name} ({e}); delete the folder and reinstall") from e
    return folder, list(found.values())


def _load_idx(name: str, data_dir: str | os.PathLike[str] | None) -> DatasetTensors | None:
    digests = _DIGESTS[name]
    hit = _find_idx(name, data_dir)
    if hit is None:
        return None
    folder, found = hit
    try:
        arrays = {s: _parse_idx(_read_verified(p, *digests[s]), p) for s, p in found.items()}
    except OSError as e:
        raise DatasetError(f"{folder}: cannot read {name} ({e}); delete the folder and reinstall") from e
    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    return DatasetTensors(
        name,
        arrays["train-images-idx3-ubyte"].unsqueeze(1),
        arrays["train-labels-idx1-ubyte"].long(),
        arrays["t10k-images-idx3-ubyte"].unsqueeze(1),
        arrays["t10k-labels-idx1-ubyte"].long(),
        classes,
    )


def _load_torchvision(name: str, data_dir: str | os.PathLike[str] | None, download: bool) -> DatasetTensors:
    """Through torchvision's dataset classes (which verify their files' MD5 before unpickling CIFAR batches)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TORCHVISION_CLASS[name])
    root = Path(data_dir or os.environ.get("CNNKIT_DATA") or Path.home() / ".cache" / "cnnkit")
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as e:
        hint = _INSTALL_HINT.get(name)
        where = f"install it with `{hint}`, or " if hint else ""
        why = " ".join(str(e).split())  # torchvision's message spans lines; the error stays one line
        # IDX files are searched for in several places; torchvision's own formats only under its root
        looked = search_dirs(name, data_dir) if name in _DIGESTS else [root]
        raise DatasetError(
            f"{name} not found: {where}put the original files in --data-dir or $CNNKIT_DATA "
            f"(searched {', '.join(str(d) for d in looked)}; {why})"
        ) from e

    def as_tensor(ds: object) -> tuple[torch.Tensor, torch.Tensor]:
        data = torch.as_tensor(ds.data)  # type: ignore[attr-defined]
        x = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)  # CIFAR is NHWC
        return x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)  # type: ignore[attr-defined]

    (tx, ty), (vx, vy) = as_tensor(train), as_tensor(test)
    return DatasetTensors(name, tx, ty, vx, vy, list(train.classes))


def resize_images(images: torch.Tensor, size: int, *, chunk: int = 4096) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> uint8 (N, C, size, size): bilinear with antialiasing, rounded.

    Antialiasing (a triangle filter as wide as the scale factor when shrinking, as PIL's
    bilinear resize) keeps a smaller copy from aliasing; ``chunk`` images at a time bound the
    float copy's memory (CIFAR's 50,000 RGB images would take 600 MB at once).
    """
    if size < 1:
        raise DatasetError(f"--image-size must be >= 1; got {size}")
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty(*images.shape[:2], size, size, dtype=torch.uint8)
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].float()
        y = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out[i : i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _resized(ds: DatasetTensors, image_size: int | None) -> DatasetTensors:
    """``ds`` with both splits at ``image_size`` x ``image_size`` (None: as stored)."""
    if image_size is not None:
        ds.train_x, ds.test_x = resize_images(ds.train_x, image_size), resize_images(ds.test_x, image_size)
    return ds


def _idx_source(name: str) -> Callable[..., DatasetTensors]:
    def load(
        data_dir: str | os.PathLike[str] | None = None, download: bool = True, image_size: int | None = None
    ) -> DatasetTensors:
        found = _load_idx(name, data_dir)
        return _resized(
            found if found is not None else _load_torchvision(name, data_dir, download), image_size
        )

    return load


def _cifar_source(name: str) -> Callable[..., DatasetTensors]:
    def load(
        data_dir: str | os.PathLike[str] | None = None, download: bool = True, image_size: int | None = None
    ) -> DatasetTensors:
        return _resized(_load_torchvision(name, data_dir, download), image_size)

    return load


def synthetic(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_size: int | None = None,
    *,
    num_train: int = 2048,
    num_test: int = 512,
    num_classes: int = 10,
    channels: int = 1,
) -> DatasetTensors:
    """A deterministic, learnable dataset for tests: each class is a fixed random
    low-frequency pattern, each image that pattern plus noise and a random shift."""
    size = 28 if image_size is None else image_size
    if size < 1 or num_train < 1 or num_test < 1 or num_classes < 1 or channels < 1:
        raise DatasetError(
            "synthetic data needs image_size, num_train, num_test, num_classes and channels >= 1; got "
            f"{size}, {num_train}, {num_test}, {num_classes}, {channels}"
        )
    g = torch.Generator().manual_seed(1234)
    protos = torch.nn.functional.interpolate(
        torch.rand(num_classes, channels, 7, 7, generator=g), size=(size, size), mode="bilinear"
    )

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), generator=g)
        x = protos[y] * 0.8 + torch.rand(n, channels, size, size, generator=g) * 0.4
        shifts = torch.randint(-2, 3, (2,), generator=g).tolist()
        x = torch.roll(x, shifts=shifts, dims=(2, 3))
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    tx, ty = make(num_train)
    vx, vy = make(num_test)
    return DatasetTensors("synthetic", tx, ty, vx, vy, [f"class{i}" for i in range(num_classes)])


def _imagefolder(
    data_dir: str | os.PathLike[str] | None = None, download: bool = False, image_size: int | None = None
) -> DatasetTensors:
    from cnnkit.data.imagefolder import load_imagefolder

    if data_dir is None and not os.environ.get("CNNKIT_DATA"):
        raise DatasetError(
            "imagefolder needs --data-dir pointing at a folder with train/<class>/ and val/<class>/"
        )
    return load_imagefolder(Path(data_dir or os.environ["CNNKIT_DATA"]), image_size=image_size)


DATASETS: dict[str, Callable[..., DatasetTensors]] = {
    "fashion-mnist": _idx_source("fashion-mnist"),
    "mnist": _idx_source("mnist"),
    "kmnist": _idx_source("kmnist"),
    "cifar10": _cifar_source("cifar10"),
    "cifar100": _cifar_source("cifar100"),
    "imagefolder": _imagefolder,
    "synthetic": synthetic,
}


def check_dataset_name(name: str) -> None:
    """Raise a one-line error for unknown dataset names, with close matches."""
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise DatasetError(f"unknown dataset {name!r}{hint}; choose from {', '.join(DATASETS)}")


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    train_subset: int | None = None,
    seed: int = 0,
    download: bool = True,
    image_size: int | None = None,
) -> DatasetTensors:
    """Load ``name`` into memory; ``train_subset`` keeps a fixed, seeded random subset of the training set."""
    check_dataset_name(name)
    ds = DATASETS[name](data_dir=data_dir, download=download, image_size=image_size)
    if train_subset is not None:
        if not 0 < train_subset <= len(ds.train_y):
            raise DatasetError(
                f"--train-subset must be in 1..{len(ds.train_y)} for {name}; got {train_subset}"
            )
        idx = torch.randperm(len(ds.train_y), generator=torch.Generator().manual_seed(seed))[:train_subset]
        ds.train_x, ds.train_y = ds.train_x[idx], ds.train_y[idx]
    return ds
