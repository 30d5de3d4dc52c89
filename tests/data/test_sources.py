"""Dataset sources: Fashion-MNIST from the system copy, checksums, the search order, subsets,
standardisation statistics and the errors of issues 5 and 7.

Outside references: torchvision's own IDX reader and class names, the published Fashion-MNIST
facts (60000/10000 images of 28x28, 6000/1000 per class; pixel mean 0.2860, std 0.3530 in [0, 1]
units, the figures used throughout the literature), and the z-score definition.
"""

import gzip
import shutil
import socket
from pathlib import Path

import pytest
import torch

from cnnkit.data import sources
from cnnkit.data.sources import DatasetError, DatasetTensors, load_dataset, search_dirs, synthetic

SYSTEM = Path("/usr/share/datasets/fashion-mnist")
FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
needs_fmnist = pytest.mark.skipif(
    not all((SYSTEM / f).is_file() for f in FILES),
    reason="Fashion-MNIST system copy missing: apt-get install dataset-fashion-mnist",
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No $CNNKIT_DATA and an empty home, so only what a test sets up is found (besides the system copy)."""
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt fails at once, as on these machines (name resolution fails)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def fmnist() -> DatasetTensors:
    if not all((SYSTEM / f).is_file() for f in FILES):
        pytest.skip("Fashion-MNIST system copy missing: apt-get install dataset-fashion-mnist")
    return load_dataset("fashion-mnist", data_dir=None)


def _link_copy(dst: Path) -> Path:
    """A valid copy of the system files (symlinks: nothing is rewritten)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        (dst / f).symlink_to(SYSTEM / f)
    return dst


def _real_copy(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        shutil.copyfile(SYSTEM / f, dst / f)
    return dst


def _flip_byte(path: Path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- Fashion-MNIST facts


@needs_fmnist
def test_fashion_mnist_shapes_labels_and_classes(fmnist: DatasetTensors) -> None:
    import torchvision.datasets as tvd

    assert fmnist.train_x.shape == (60000, 1, 28, 28) and fmnist.train_x.dtype == torch.uint8
    assert fmnist.test_x.shape == (10000, 1, 28, 28) and fmnist.test_x.dtype == torch.uint8
    assert fmnist.train_y.dtype == torch.int64 and fmnist.test_y.dtype == torch.int64
    assert torch.equal(torch.bincount(fmnist.train_y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(fmnist.test_y), torch.full((10,), 1000))
    assert fmnist.classes == tvd.FashionMNIST.classes
    assert fmnist.num_classes == 10 and fmnist.image_shape == (1, 28, 28)


@needs_fmnist
def test_idx_parser_agrees_with_torchvision(fmnist: DatasetTensors, tmp_path: Path) -> None:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    for stem, ours in (
        ("t10k-images-idx3-ubyte", fmnist.test_x[:, 0]),
        ("t10k-labels-idx1-ubyte", fmnist.test_y),
    ):
        raw = tmp_path / stem
        raw.write_bytes(gzip.decompress((SYSTEM / f"{stem}.gz").read_bytes()))
        reader = read_image_file if "images" in stem else read_label_file
        assert torch.equal(reader(str(raw)).long(), ours.long())


@needs_fmnist
def test_fashion_mnist_standardisation_statistics(fmnist: DatasetTensors) -> None:
    mean, std = fmnist.mean_std()
    assert mean.shape == std.shape == (1,)
    assert mean.item() == pytest.approx(0.2860, abs=5e-4)
    assert std.item() == pytest.approx(0.3530, abs=5e-4)


def test_mean_std_is_the_z_score_statistics_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (37, 3, 5, 4), generator=g, dtype=torch.uint8)
    ds = DatasetTensors(
        "t", x, torch.zeros(37, dtype=torch.long), x[:2], torch.zeros(2, dtype=torch.long), ["a"]
    )
    mean, std = ds.mean_std()
    for c in range(3):
        vals = [v / 255 for v in x[:, c].flatten().tolist()]
        m = sum(vals) / len(vals)
        s = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
        assert mean[c].item() == pytest.approx(m, rel=1e-6)
        assert std[c].item() == pytest.approx(s, rel=1e-6)
    z = (x.double() / 255 - mean.double().view(1, 3, 1, 1)) / std.double().view(1, 3, 1, 1)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(3, dtype=torch.float64), atol=1e-6)


# ---------------------------------------------------------------- checksums and damaged files


@needs_fmnist
def test_flipped_byte_is_rejected_naming_file_and_checksum(tmp_path: Path) -> None:
    copy = _real_copy(tmp_path / "fm")
    bad = copy / "train-labels-idx1-ubyte.gz"
    _flip_byte(bad, bad.stat().st_size // 2)
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", data_dir=copy)
    assert str(bad) in str(err.value) and "checksum" in str(err.value).lower()


@needs_fmnist
def test_altered_content_in_a_valid_gzip_fails_the_sha256(tmp_path: Path) -> None:
    # gzip's own CRC passes here: only the SHA-256 of the content can catch it
    copy = _real_copy(tmp_path / "fm")
    bad = copy / "train-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(bad.read_bytes()))
    content[100] = (content[100] + 1) % 10  # one label changed
    bad.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DatasetError, match="checksum mismatch") as err:
        load_dataset("fashion-mnist", data_dir=copy)
    assert str(bad) in str(err.value)


@needs_fmnist
def test_recompressed_identical_content_is_accepted(tmp_path: Path, fmnist: DatasetTensors) -> None:
    # Debian recompresses the upstream .gz files; the digest is of the content, so any gzip of it verifies
    copy = _link_copy(tmp_path / "fm")
    f = copy / "t10k-labels-idx1-ubyte.gz"
    content = gzip.decompress(f.read_bytes())
    f.unlink()
    f.write_bytes(gzip.compress(content, compresslevel=1, mtime=0))
    assert f.read_bytes() != (SYSTEM / f.name).read_bytes()
    ds = load_dataset("fashion-mnist", data_dir=copy)
    assert torch.equal(ds.test_y, fmnist.test_y)


@needs_fmnist
def test_truncated_gzip_gives_a_clear_error(tmp_path: Path) -> None:
    copy = _link_copy(tmp_path / "fm")
    f = copy / "train-labels-idx1-ubyte.gz"
    data = f.read_bytes()
    f.unlink()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated") as err:
        load_dataset("fashion-mnist", data_dir=copy)
    assert str(f) in str(err.value) and "\n" not in str(err.value)


@needs_fmnist
def test_incomplete_copy_names_the_missing_file(tmp_path: Path) -> None:
    copy = _link_copy(tmp_path / "fm")
    (copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", data_dir=copy)


@needs_fmnist
def test_torchvision_layout_is_verified_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a copy torchvision downloaded (root/FashionMNIST/raw) goes through the same SHA-256 check
    monkeypatch.setattr(sources, "_SYSTEM_ROOT", tmp_path / "no-system-copy")
    raw = _real_copy(tmp_path / "root" / "FashionMNIST" / "raw")
    bad = raw / "train-labels-idx1-ubyte.gz"
    _flip_byte(bad, bad.stat().st_size // 2)
    with pytest.raises(DatasetError, match="checksum") as err:
        load_dataset("fashion-mnist", data_dir=tmp_path / "root")
    assert str(bad) in str(err.value)


# ---------------------------------------------------------------- missing data, no network


def test_missing_mnist_without_network_is_one_clear_error(tmp_path: Path, no_network: None) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", data_dir=tmp_path / "empty")
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert "mnist not found" in msg and "--data-dir" in msg and "$CNNKIT_DATA" in msg
    assert str(tmp_path / "empty" / "mnist") in msg  # says where it looked


@pytest.mark.parametrize("download", [True, False])
def test_missing_fashion_mnist_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None, download: bool
) -> None:
    monkeypatch.setattr(sources, "_SYSTEM_ROOT", tmp_path / "no-system-copy")
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path / "empty", download=download)
    msg = str(err.value)
    assert "`apt-get install dataset-fashion-mnist`" in msg and "--data-dir" in msg
    assert "\n" not in msg


# ---------------------------------------------------------------- search order


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "env"))
    dirs = search_dirs("fashion-mnist", tmp_path / "flag")
    pos = {d: i for i, d in enumerate(dirs)}
    flag, env = tmp_path / "flag", tmp_path / "env"
    system = Path("/usr/share/datasets/fashion-mnist")
    cache = tmp_path / "home" / ".cache" / "cnnkit" / "fashion-mnist"
    assert (
        pos[flag / "fashion-mnist"]
        < pos[flag]
        < pos[env / "fashion-mnist"]
        < pos[env]
        < pos[system]
        < pos[cache]
    )
    assert max(pos[d] for d in dirs if str(d).startswith(str(flag))) < min(
        pos[d] for d in dirs if str(d).startswith(str(env))
    )


@needs_fmnist
def test_data_dir_beats_env_beats_system_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _link_copy(tmp_path / "good" / "fashion-mnist")  # found as root/<name>
    corrupt = _real_copy(tmp_path / "corrupt")  # found as root itself
    bad = corrupt / "train-labels-idx1-ubyte.gz"
    _flip_byte(bad, bad.stat().st_size // 2)

    # $CNNKIT_DATA is searched before the (valid) system copy: its corrupt file is what fails
    monkeypatch.setenv("CNNKIT_DATA", str(corrupt))
    with pytest.raises(DatasetError, match="checksum") as err:
        load_dataset("fashion-mnist")
    assert str(bad) in str(err.value)
    # --data-dir is searched before $CNNKIT_DATA: the valid copy there wins
    assert load_dataset("fashion-mnist", data_dir=good.parent).train_x.shape[0] == 60000
    # and the other way round: a corrupt --data-dir fails even though $CNNKIT_DATA is valid
    monkeypatch.setenv("CNNKIT_DATA", str(good.parent))
    with pytest.raises(DatasetError, match="checksum") as err:
        load_dataset("fashion-mnist", data_dir=corrupt)
    assert str(bad) in str(err.value)
    # an empty --data-dir falls through to $CNNKIT_DATA
    (tmp_path / "empty").mkdir()
    assert load_dataset("fashion-mnist", data_dir=tmp_path / "empty").test_x.shape[0] == 10000


# ---------------------------------------------------------------- subsets, synthetic, names


def _row_index(x: torch.Tensor) -> dict[bytes, int]:
    return {x[i].numpy().tobytes(): i for i in range(len(x))}


def test_train_subset_is_fixed_and_seeded() -> None:
    full = load_dataset("synthetic")
    a = load_dataset("synthetic", train_subset=300, seed=1)
    b = load_dataset("synthetic", train_subset=300, seed=1)
    c = load_dataset("synthetic", train_subset=300, seed=2)
    assert a.train_x.shape == (300, 1, 28, 28)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.train_x, c.train_x)
    index = _row_index(full.train_x)
    assert len(index) == len(full.train_x)  # rows are distinct, so each subset row has one origin
    rows = [index[a.train_x[i].numpy().tobytes()] for i in range(300)]
    assert len(set(rows)) == 300, "a subset draws without replacement"
    assert torch.equal(a.train_y, full.train_y[rows]), "labels stay with their images"
    assert torch.equal(a.test_x, full.test_x), "the test set is never subset"
    for n in (0, -1, len(full.train_y) + 1):
        with pytest.raises(DatasetError, match="--train-subset"):
            load_dataset("synthetic", train_subset=n)


def test_synthetic_is_deterministic_and_learnable() -> None:
    a, b = synthetic(), synthetic()
    for t in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, t), getattr(b, t))
    assert a.train_x.dtype == torch.uint8 and a.train_x.shape == (2048, 1, 28, 28)
    assert synthetic(image_size=16, channels=3).train_x.shape == (2048, 3, 16, 16)
    with pytest.raises(DatasetError, match="image_size"):
        synthetic(image_size=0)
    assert set(a.train_y.tolist()) == set(range(10))
    # a nearest-class-mean classifier, fitted on train, is far above chance (0.1) on test
    means = torch.stack([a.train_x[a.train_y == k].float().mean(0) for k in range(10)])
    dist = (a.test_x.float()[:, None] - means[None]).pow(2).flatten(2).sum(2)
    assert (dist.argmin(1) == a.test_y).float().mean().item() > 0.5


@pytest.mark.parametrize(
    ("name", "suggestion"), [("fashion_mnist", "fashion-mnist"), ("cifar", "cifar10"), ("mnsit", "mnist")]
)
def test_unknown_dataset_suggests_close_matches(name: str, suggestion: str) -> None:
    with pytest.raises(DatasetError, match=rf"did you mean .*{suggestion}"):
        load_dataset(name)
    assert issubclass(DatasetError, ValueError)


def test_unknown_dataset_without_close_match_lists_choices() -> None:
    with pytest.raises(DatasetError, match=r"choose from .*fashion-mnist.*synthetic") as err:
        load_dataset("zzzzzz")
    assert "did you mean" not in str(err.value)
