"""``--amp auto`` (cnnkit.train.precision): the machine's rules, the timed choice, and what a run records."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from cnnkit import cli
from cnnkit.train import precision
from cnnkit.train.precision import MIN_GAIN, machine_amp, timed_amp


def test_the_machine_decides_where_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda: None)  # AVX2: bf16 emulated, ~8x slower
    assert machine_amp("cpu", 10_000)[0] == "none"
    monkeypatch.setattr(precision, "native_bf16", lambda: "avx512_bf16")
    amp, why = machine_amp("cpu", 100)  # 8 timed passes would be 8% of a 100-step run
    assert amp == "none" and "too short" in why
    amp, why = machine_amp("cpu", 10_000)
    assert amp == "auto" and "timed" in why
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert machine_amp("cuda", 10) == ("bf16", "auto: CUDA with bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert machine_amp("cuda", 10)[0] == "fp16"


@pytest.mark.parametrize(
    ("fp32", "bf16", "chosen"), [(1.0, 0.5, "bf16"), (1.0, 1.0 / MIN_GAIN + 0.01, "none")]
)
def test_bf16_only_where_it_is_faster_enough(
    monkeypatch: pytest.MonkeyPatch, fp32: float, bf16: float, chosen: str
) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda: "avx512_bf16")
    monkeypatch.setattr(precision, "_step_seconds", lambda m, x, y, dtype: fp32 if dtype is None else bf16)
    amp, why = timed_amp(nn.Linear(4, 2), torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    assert amp == chosen and f"{fp32 / bf16:.2f}x" in why


def test_timing_leaves_the_model_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    model(x)  # materialise the lazy layer
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    timed_amp(model, x, y)  # real passes, both precisions, on a copy
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_a_run_records_the_precision_it_chose_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    small = ["--dataset", "synthetic", "--image-size", "12", "--train-subset", "512", "--test-subset", "64",
             "--model", "fmnet", "--model-kwargs", "widths=[8,16,32]", "stem_width=8", "--threads", "1",
             "--no-progress", "--epochs", "1", "--output", str(out)]  # fmt: skip
    assert cli.main(["train", *small]) == 0
    text = (out / "config.yaml").read_text()
    assert yaml.safe_load(text)["amp"] in ("none", "bf16")  # resolved: never "auto" in a run folder
    assert "# auto: " in next(line for line in text.splitlines() if line.startswith("amp:"))
    first = capsys.readouterr().err.splitlines()[0]
    assert ("fp32 (auto)" in first) or ("bf16 (auto)" in first)
    # a flag is kept as given
    assert cli.main(["train", *small[:-1], str(tmp_path / "flag"), "--amp", "none"]) == 0
    assert "amp: none  # flag" in (tmp_path / "flag" / "config.yaml").read_text()
