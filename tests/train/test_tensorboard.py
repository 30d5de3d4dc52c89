"""``cnnkit train --log tensorboard`` (``cnnkit[tensorboard]``): the epoch metrics, as TensorBoard reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnkit import cli


def test_log_tensorboard_writes_the_epoch_metrics(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="pip install 'cnnkit[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    small = ["--dataset", "synthetic", "--image-size", "12", "--train-subset", "512", "--test-subset", "64",
             "--model", "fmnet", "--model-kwargs", "widths=[8,16,32]", "stem_width=8", "--threads", "1",
             "--no-progress", "--epochs", "2", "--log", "tensorboard", "--output", str(out)]  # fmt: skip
    assert cli.main(["train", *small]) == 0
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = events.Scalars("test_top1")
    assert [e.step for e in logged] == [1, 2]  # one point an epoch, as metrics.jsonl
    assert [e.value for e in logged] == pytest.approx([m["test_top1"] for m in metrics])
