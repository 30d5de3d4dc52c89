"""Checkpoints: resume equals an uninterrupted run, and no checkpoint file runs code.

Faults are injected in-process (issue 7): an exception raised right after a checkpoint
write, in the middle of an epoch, during a checkpoint write and before the first
checkpoint stands for a kill at that moment. ``cnnkit train --resume`` must then finish
the run with final weights *bitwise* equal to a run that was never interrupted (CPU,
one thread, deterministic mode), with crop, flip, mixup, cutmix, dropout and an EMA of
the weights all drawing random numbers.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from cnnkit import cli
from cnnkit.run import CheckpointError, atomic_write, load_model_state, load_state, load_weights
from cnnkit.train import loop

# 256 synthetic 12x12 images, batches of 32: 8 steps per epoch, 3 epochs, about 1 s per run.
TINY = [
    "--dataset", "synthetic", "--image-size", "12", "--train-subset", "256", "--test-subset", "64",
    "--model", "fmnet", "--model-kwargs", "widths=[8,16,32]", "stem_width=8",
    "--batch-size", "32", "--threads", "1", "--deterministic", "--no-progress", "--recipe", "plain",
]  # fmt: skip
# every source of randomness the trainer has, and a schedule that depends on the run's length
AUGMENTED = [
    "--epochs", "3", "--sched", "cosine", "--warmup-epochs", "0.5", "--lr", "0.05",
    "--crop-pad", "2", "--hflip", "0.5", "--mixup", "0.4", "--cutmix", "1.0", "--drop", "0.3",
    "--model-ema", "--model-ema-decay", "0.9", "--smoothing", "0.1",
]  # fmt: skip
STEPS_PER_EPOCH = 8


class Killed(KeyboardInterrupt):
    """Stands for kill -9 at the injection point (the CLI maps KeyboardInterrupt to exit 130)."""


def run(*args: str) -> int:
    return cli.main(["train", *args])


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal, f"{len(unequal)} tensors differ, e.g. {unequal[0]}"


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run that every interrupted one must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert run(*TINY, *AUGMENTED, "--output", str(out)) == 0
    return out


def kill_after_save(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Raise right after the n-th checkpoint.pt write (later writes never happen)."""
    real = loop.save_state
    calls = 0

    def save_then_die(path: Path, state: dict[str, Any]) -> None:
        nonlocal calls
        real(path, state)
        calls += 1
        if calls == n:
            raise Killed

    monkeypatch.setattr(loop, "save_state", save_then_die)


def kill_at_step(monkeypatch: pytest.MonkeyPatch, global_step: int) -> None:
    """Raise while preparing the batch of ``global_step`` (1-based), mid-way through the loop."""
    real = loop._augment
    calls = 0

    def augment_or_die(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == global_step:
            raise Killed
        return real(*args)

    monkeypatch.setattr(loop, "_augment", augment_or_die)


# ---------------------------------------------------------------- resume == uninterrupted


def test_reference_run_trains_and_writes_a_complete_folder(reference: Path) -> None:
    rows = metrics(reference)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at eta_T = 0
    state = load_state(reference / "checkpoint.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (3, 0)
    assert state["scheduler"]["last_epoch"] == 3 * STEPS_PER_EPOCH


def test_resume_after_an_epoch_boundary_kill_is_bitwise_equal(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    kill_after_save(monkeypatch, 1)  # dies just after the epoch-1 checkpoint
    assert run(*TINY, *AUGMENTED, "--output", str(out)) == 130
    assert load_state(out / "checkpoint.pt")["epoch"] == 1
    monkeypatch.undo()
    assert run("--resume", str(out)) == 0  # the epoch count etc. come from the run's config.yaml
    assert_bitwise_equal(weights(out), weights(reference))
    assert_bitwise_equal(
        load_state(out / "checkpoint.pt")["model"], load_state(reference / "checkpoint.pt")["model"]
    )
    ours, theirs = metrics(out), metrics(reference)
    assert [r["epoch"] for r in ours] == [1, 2, 3]  # no epoch lost or repeated in metrics.jsonl
    for a, b in zip(ours, theirs, strict=True):
        for key in ("train_loss", "train_acc", "test_loss", "test_top1", "test_top5", "lr"):
            assert a[key] == b[key], key


def test_resume_mid_epoch_with_checkpoint_every_is_bitwise_equal(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    # checkpoints after global steps 3, 6, 9 (= epoch 2, step 1), ...; killed at step 11, mid-epoch 2
    kill_at_step(monkeypatch, 11)
    assert run(*TINY, *AUGMENTED, "--checkpoint-every", "3", "--output", str(out)) == 130
    state = load_state(out / "checkpoint.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)
    monkeypatch.undo()
    assert run("--resume", str(out)) == 0
    assert_bitwise_equal(weights(out), weights(reference))
    ours, theirs = metrics(out), metrics(reference)
    # the epoch's training loss/accuracy include the steps before the kill (saved with the checkpoint)
    assert ours[1]["train_loss"] == pytest.approx(theirs[1]["train_loss"], rel=1e-6)
    assert ours[1]["train_acc"] == theirs[1]["train_acc"]


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    real_save = torch.save
    writes = 0

    def half_written_then_die(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal writes
        writes += 1
        if writes < 2:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf)
        Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise Killed

    monkeypatch.setattr(torch, "save", half_written_then_die)  # the 2nd checkpoint write dies half-way
    assert run(*TINY, *AUGMENTED, "--output", str(out)) == 130
    monkeypatch.undo()
    assert load_state(out / "checkpoint.pt")["epoch"] == 1  # the epoch-1 checkpoint, whole
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert run("--resume", str(out)) == 0
    assert_bitwise_equal(weights(out), weights(reference))


def test_kill_before_the_first_checkpoint_then_resume_starts_over(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    kill_at_step(monkeypatch, 3)
    assert run(*TINY, *AUGMENTED, "--output", str(out)) == 130
    assert (out / "config.yaml").is_file() and not (out / "checkpoint.pt").exists()
    monkeypatch.undo()
    assert run("--resume", str(out)) == 0
    assert_bitwise_equal(weights(out), weights(reference))


def test_resume_with_more_epochs_continues_a_constant_schedule_exactly(tmp_path: Path) -> None:
    """--epochs 2 then --resume --epochs 3 equals --epochs 3 (the schedule does not depend on the length)."""
    flags = [
        *TINY,
        "--sched",
        "constant",
        "--lr",
        "0.05",
        "--crop-pad",
        "2",
        "--hflip",
        "0.5",
        "--drop",
        "0.3",
    ]
    assert run(*flags, "--epochs", "3", "--output", str(tmp_path / "full")) == 0
    assert run(*flags, "--epochs", "2", "--output", str(tmp_path / "part")) == 0
    assert run("--resume", str(tmp_path / "part"), "--epochs", "3") == 0
    assert_bitwise_equal(weights(tmp_path / "part"), weights(tmp_path / "full"))


def test_resume_with_more_epochs_follows_the_new_cosine(tmp_path: Path) -> None:
    """The lecture's eta_t = eta_T + (eta_0 - eta_T)/2 (1 + cos(pi t/T)) with T the *new* length:
    the saved scheduler must not bring back the old T (which would sit at eta_T = 0)."""
    import math

    lr, spe = 0.05, STEPS_PER_EPOCH
    assert run(*TINY, "--sched", "cosine", "--lr", str(lr), "--epochs", "2", "--output", str(tmp_path)) == 0
    assert run("--resume", str(tmp_path), "--epochs", "4") == 0
    rows = metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for r in rows[2:]:  # lr logged at the end of epoch e = the rate of step e * spe
        t = r["epoch"] * spe
        assert r["lr"] == pytest.approx(lr / 2 * (1 + math.cos(math.pi * t / (4 * spe))), abs=1e-12)
    assert rows[2]["lr"] > 0.005


def test_resume_with_a_new_lr_uses_it(tmp_path: Path) -> None:
    assert run(*TINY, "--sched", "constant", "--lr", "0.05", "--epochs", "1", "--output", str(tmp_path)) == 0
    assert run("--resume", str(tmp_path), "--epochs", "2", "--lr", "0.01") == 0
    assert [r["lr"] for r in metrics(tmp_path)] == [0.05, 0.01]


# ---------------------------------------------------------------- files that must not load


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small") / "run"
    assert run(*TINY, "--epochs", "1", "--output", str(out)) == 0
    return out


def test_checkpoint_loads_with_torch_weights_only(small_run: Path) -> None:
    state = torch.load(small_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "step_in_epoch", "config"):
        assert key in state
    assert state["config"]["model"] == "fmnet"  # the config inside is plain data
    assert_bitwise_equal(state["model"], weights(small_run))


class Evil:
    """Unpickling this calls Path.touch(target): code execution, if the loader allowed it."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.target,))


@pytest.mark.parametrize("fmt", ["torch-zip", "plain-pickle"])
def test_a_pickle_that_runs_code_is_rejected_and_never_runs(
    small_run: Path, tmp_path: Path, fmt: str
) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    payload = {"model": {}, "x": Evil(target)}
    if fmt == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="rejected") as err:
        load_state(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not target.exists()


def test_resume_from_a_malicious_checkpoint_fails_cleanly(
    small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(small_run, run_dir)
    target = tmp_path / "pwned"
    torch.save({"model": Evil(target)}, run_dir / "checkpoint.pt")
    assert run("--resume", str(run_dir)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnkit: error:") and "checkpoint.pt" in err and "\n" not in err
    assert "Traceback" not in err
    assert not target.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_damaged_checkpoint_gives_one_line_naming_the_file(
    small_run: Path, tmp_path: Path, damage: str
) -> None:
    good = (small_run / "checkpoint.pt").read_bytes()
    data = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "garbage": bytes(range(256)) * 64,
    }[damage]
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as err:
        load_state(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_damaged_weights_file_gives_one_line_naming_the_file(
    small_run: Path, tmp_path: Path, damage: str
) -> None:
    good = (small_run / "model.safetensors").read_bytes()
    data = {"truncated": good[: len(good) // 2], "empty": b"", "garbage": b"\xff" * 4096}[damage]
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as err:
        load_weights(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_state(tmp_path / "checkpoint.pt")


def test_checkpoint_of_another_architecture_is_refused(small_run: Path) -> None:
    from cnnkit.models.registry import create_model

    state = load_state(small_run / "checkpoint.pt")["model"]
    path = small_run / "checkpoint.pt"
    wider = create_model("fmnet", num_classes=10, in_chans=1, widths=[8, 16, 64], stem_width=8)
    with pytest.raises(CheckpointError, match=r"do not fit fmnet|shape mismatch") as err:
        load_model_state(wider, state, path)
    assert "groups.2" in str(err.value) and "\n" not in str(err.value)
    other = create_model("resnet20", num_classes=10, in_chans=1, small_input=True)
    with pytest.raises(CheckpointError, match="another model") as err:
        load_model_state(other, state, path)
    assert str(path) in str(err.value)


def test_resume_into_a_run_of_another_architecture_fails_cleanly(
    small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    flags = [a if a != "widths=[8,16,32]" else "widths=[8,16,64]" for a in TINY]
    assert run(*flags, "--epochs", "1", "--output", str(other)) == 0
    shutil.copy(small_run / "checkpoint.pt", other / "checkpoint.pt")
    capsys.readouterr()
    assert run("--resume", str(other), "--epochs", "2") == 2
    err = capsys.readouterr().err.strip()
    assert "do not fit" in err and "checkpoint.pt" in err and "\n" not in err


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_leaves_the_old_file_intact_when_the_writer_fails(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old contents")

    def dies_midway(tmp: Path) -> None:
        tmp.write_bytes(b"new con")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, dies_midway)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary file left


def test_atomic_write_replaces_and_keeps_a_shareable_mode(tmp_path: Path) -> None:
    def writer(data: bytes) -> Any:
        return lambda tmp: tmp.write_bytes(data) and None

    path = tmp_path / "model.safetensors"
    atomic_write(path, writer(b"new"))
    assert path.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    os.chmod(path, 0o640)
    atomic_write(path, writer(b"newer"))
    assert path.read_bytes() == b"newer" and path.stat().st_mode & 0o777 == 0o640
