"""``summarize`` as a user meets it: models left untouched, unknown layers named, renderings,
grouping, comparison, training memory (against autograd's own saved tensors) and plots."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_mod

from cnnkit.analysis import build_on_meta, compare, plot_receptive_field, rf_growth, summarize


def _small_resnet() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


# ---------------------------------------------------------------------------- left untouched


def test_user_model_state_dict_hooks_and_mode_are_untouched() -> None:
    model = _small_resnet()
    model.fc.weight.requires_grad_(False)  # one frozen tensor
    model.train()
    model.layer1.eval()  # mixed modes must come back as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    n_global = (len(module_mod._global_forward_hooks), len(module_mod._global_forward_pre_hooks))

    s = summarize(model, (3, 64, 64), batch_size=2)

    after = model.state_dict()
    assert list(after) == list(before)  # no buffer added or removed (thop adds total_ops / total_params)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(v.device.type == "cpu" for v in after.values())
    assert {n: m.training for n, m in model.named_modules()} == modes
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert (len(module_mod._global_forward_hooks), len(module_mod._global_forward_pre_hooks)) == n_global
    assert not model.fc.weight.requires_grad and model.conv1.weight.requires_grad
    assert s.method == "meta"
    assert s.total_params == sum(p.numel() for p in model.parameters())
    assert s.frozen_params == model.fc.weight.numel()
    assert s.output_shape == (2, 10)


def test_shared_weights_are_counted_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)
            self.b.weight = self.a.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    s = summarize(Tied(), (8,))
    assert s.total_params == 8 * 8 + 8 + 8
    assert [r.params for r in s.layers] == [8 * 8 + 8, 8]
    assert s.total_mult_adds == 2 * 8 * 8


def test_reused_module_gets_a_row_per_call_and_params_once() -> None:
    relu_conv = nn.Conv2d(4, 4, 3, padding=1)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = relu_conv

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x))

    s = summarize(Twice(), (4, 8, 8))
    assert [(r.name, r.call, r.params) for r in s.layers] == [("conv", 1, 4 * 4 * 9 + 4), ("conv", 2, 0)]
    assert s.total_mult_adds == 2 * 4 * 4 * 9 * 64
    assert s.layers[1].receptive_field.size == (5, 5)


# ---------------------------------------------------------------------------- unknown layers


class PrototypeDistance(nn.Module):
    """A custom layer whose work (pairwise distances) has no counting rule."""

    def __init__(self) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(5, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, self.prototypes)


class ScaledDot(nn.Module):
    """A custom layer built from operations with rules: counted, not unknown."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(16, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x @ self.w.t()) * 0.5


def test_custom_module_without_rule_is_reported_unknown_not_zero() -> None:
    model = nn.Sequential(nn.Linear(8, 16), ScaledDot(), PrototypeDistance(), nn.Softmax(-1))
    s = summarize(model, (8,))
    unknown = s.unknown_layers
    assert [r.name for r in unknown] == ["2"]
    assert unknown[0].type == "PrototypeDistance"
    assert any("cdist" in op for op in unknown[0].unknown_ops)
    assert s.layers[1].mult_adds == 16 * 16 and not s.layers[1].unknown
    assert s.layers[2].params == 5 * 16  # its parameters are still counted
    text = s.to_table()
    assert "2 (PrototypeDistance, UNKNOWN)" in text and "UNKNOWN: 1 layer" in text
    assert json.loads(s.to_json())["unknown_layers"] == ["2"]


def test_data_dependent_forward_falls_back_to_a_real_run() -> None:
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y if float(y.abs().sum()) >= 0 else -y  # needs values

    model = Gated()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = summarize(model, (3, 10, 10))
    assert s.method.startswith("cpu")
    assert s.total_mult_adds == 4 * 3 * 9 * 8 * 8
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------- renderings


def test_json_keys_and_values() -> None:
    import torchvision

    s = summarize(build_on_meta(torchvision.models.vgg16))
    d = json.loads(s.to_json())
    for key in ("model", "input_size", "total_params", "total_mult_adds", "activation_elements", "layers"):
        assert key in d
    assert d["input_size"] == [3, 224, 224]
    assert d["total_params"] == 138_357_544
    assert d["total_flops"] == 2 * d["total_mult_adds"]
    first = d["layers"][0]
    for key in (
        "name",
        "type",
        "output_shape",
        "params",
        "mult_adds",
        "activation_elements",
        "receptive_field",
    ):
        assert key in first
    assert first["receptive_field"]["size"] == [3, 3]
    assert first["output_shape"] == [1, 64, 224, 224]
    assert s.to_dict() == d


def test_table_markdown_csv_carry_units_and_the_same_rows() -> None:
    s = summarize(_small_resnet(), (3, 64, 64))
    table = s.to_table()
    header = table.splitlines()[0]
    for unit in (
        "Params (#)",
        "Mult-adds (#/image)",
        "Activations (#/image)",
        "(MB/image)",
        "RF (px)",
        "Jump (px)",
    ):
        assert unit in header
    assert "FLOPs = 2 x mult-adds" in table
    md = s.to_markdown()
    assert md.splitlines()[0].startswith("| Layer (type) |") and "Mult-adds (#/image)" in md
    rows = list(csv.reader(io.StringIO(s.to_csv())))
    assert all("(" in h for h in rows[0][3:13])  # every numeric column names its unit
    assert len(rows) - 1 == len(s.layers)
    assert sum(int(r[7]) for r in rows[1:]) == s.total_mult_adds
    assert s.render("csv") == s.to_csv()
    with pytest.raises(ValueError, match="unknown format"):
        s.render("xml")


def test_depth_groups_rows_and_keeps_totals() -> None:
    s = summarize(_small_resnet(), (3, 64, 64))
    top = s.rows(depth=1)
    assert [r.name for r in top] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "(root)",
        "fc",
    ]
    assert sum(r.mult_adds for r in top) == s.total_mult_adds
    assert sum(r.params for r in top) == s.total_params
    layer4 = top[7]
    assert layer4.type == "Sequential" and layer4.output_shape == (1, 512, 2, 2)
    assert len(s.rows(depth=2)) > len(top)
    assert "layer4" in s.to_table(depth=1)


def test_rows_sum_to_totals() -> None:
    s = summarize(_small_resnet(), (3, 32, 32))
    assert sum(r.params for r in s.layers) + sum(p for _, p in s.unused) == s.total_params
    assert sum(r.activation_elements for r in s.layers) + 3 * 32 * 32 == s.activation_elements


# ---------------------------------------------------------------------------- training memory


def _autograd_saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """What autograd really keeps: unique storages packed by saved_tensors_hooks, minus parameters and buffers."""
    state = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in state:
            storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(storages.values())


# (torchvision model, input side): exact agreement with autograd, up to a few hundred bytes
# of tiny tensors (stochastic-depth noise, attention log-sum-exp)
AUTOGRAD_CASES = [
    ("resnet18", 64),
    ("mobilenet_v2", 64),  # in-place ReLU6 makes autograd keep a copy of its input
    ("efficientnet_b0", 64),  # SiLU, SE gates, stochastic depth, dropout
    ("densenet121", 64),  # concatenation, non-in-place ReLUs
    ("shufflenet_v2_x1_0", 64),  # channel shuffle, chunks
    ("vgg_like", 32),  # in-place ReLU followed by dropout (VGG's classifier)
    ("squeezenet1_1", 64),
    ("convnext_tiny", 64),  # permutes, LayerNorm, layer scale
    ("swin_t", 64),  # windowed attention with explicit matmuls (batched operands copied)
]


@pytest.mark.parametrize(("name", "side"), AUTOGRAD_CASES)
def test_saved_activations_match_autograd(name: str, side: int) -> None:
    import torchvision

    if name == "vgg_like":
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(),
            nn.Linear(8 * 16 * 16, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(64, 10),
        ).train()
    else:
        model = torchvision.models.get_model(name).train()
    x = torch.randn(2, 3, side, side)
    real = _autograd_saved_bytes(model, x)
    estimate = summarize(model, (3, side, side), batch_size=2).training_memory("sgd").activation_bytes
    assert abs(estimate - real) <= max(512, 1e-5 * real), (estimate, real)


def test_saved_activations_of_multihead_attention_are_close() -> None:
    """ViT's nn.MultiheadAttention: CPU's flash kernel keeps slightly less than the rule
    (q, k, v, output); the estimate is within 10%."""
    import torchvision

    model = torchvision.models.vit_b_32(image_size=64).train()
    x = torch.randn(2, 3, 64, 64)
    real = _autograd_saved_bytes(model, x)
    estimate = summarize(model, (3, 64, 64), batch_size=2).training_memory("sgd").activation_bytes
    assert real <= estimate < 1.1 * real


def test_training_memory_breakdown() -> None:
    model = nn.Sequential(nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 10))
    s = summarize(model, (100,))
    p = (100 * 50 + 50 + 50 * 10 + 10) * 4
    adam = s.training_memory("adam", batch_size=32)
    assert (adam.param_bytes, adam.grad_bytes, adam.optimizer_bytes) == (p, p, 2 * p)
    assert s.training_memory("sgd_momentum").optimizer_bytes == p
    assert s.training_memory("sgd").optimizer_bytes == 0
    # saved for backward per image: the input (first linear), the ReLU output (shared with the second linear)
    assert adam.activation_bytes == 32 * (100 + 50) * 4
    assert adam.total_bytes == 4 * p + 32 * 150 * 4
    with pytest.raises(ValueError, match="unknown optimizer"):
        s.training_memory("lion")


# ---------------------------------------------------------------------------- compare, plots, names


def test_compare_side_by_side() -> None:
    import torchvision

    table = compare(
        [build_on_meta(torchvision.models.resnet18), build_on_meta(torchvision.models.mobilenet_v2)]
    )
    text = table.to_table()
    assert "ResNet" in text and "MobileNetV2" in text and "Mult-adds (M/image)" in text
    d = table.to_dict()
    assert [m["total_params"] for m in d["models"]] == [11_689_512, 3_504_872]
    assert table.render("markdown").startswith("| Model |")


def test_rf_growth_and_plot(tmp_path: object) -> None:
    stack = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1),
        nn.Conv2d(1, 1, 3, padding=2, dilation=2),
        nn.Conv2d(1, 1, 3, padding=4, dilation=4),
    )
    steps = rf_growth(stack, (1, 32, 32))
    assert [st.size for st in steps] == [3, 7, 15]
    from pathlib import Path

    out = Path(str(tmp_path)) / "rf.png"
    fig = plot_receptive_field(stack, (1, 32, 32), output=out)
    assert out.stat().st_size > 1000 and fig.axes


def test_named_model_is_built_on_meta() -> None:
    from cnnkit.models.registry import list_models

    if "resnet18" not in list_models():
        pytest.skip("cnnkit's resnet18 is not registered yet")
    s = summarize("resnet18", (1, 28, 28), model_kwargs={"small_input": True, "num_classes": 10})
    assert s.model == "resnet18" and s.method == "meta"
    assert s.output_shape == (1, 10)
    half = summarize("resnet18", dtype=torch.float16)
    assert half.param_bytes == 2 * half.total_params


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="input_size"):
        summarize(nn.Linear(2, 2), (0, 3))
    with pytest.raises(ValueError, match="batch_size"):
        summarize(nn.Linear(2, 2), (2,), batch_size=0)
    with pytest.raises(ValueError, match="depth"):
        summarize(nn.Linear(2, 2), (2,), depth=0)
    with pytest.raises(ValueError, match=r"nn\.Module or a registered model name"):
        summarize(42)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="channels"):
        summarize(nn.Conv2d(3, 4, 3), (1, 8, 8))


def test_import_is_light() -> None:
    code = "import sys, cnnkit.analysis; print(sorted(m for m in ('torchvision', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
