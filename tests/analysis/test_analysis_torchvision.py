"""Mult-adds and parameters against torchvision's documented figures.

torchvision records, for each classification weight, ``meta["_ops"]`` (its docs'
"GFLOPS" column, which counts mult-adds: ResNet-50 4.089) at the resolution of the
weight's transforms, and ``meta["num_params"]``. Each model is built on ``meta`` with
the architecture those weights use and summarised at that resolution. The published
figure has three decimals, so the check allows 0.5% or the figure's own rounding
(half a unit in the last place, 0.0005 G), whichever is larger: MobileNetV3-Small's
0.057 and ShuffleNetV2-x0.5's 0.040 are rounded by more than 0.5%.
"""

from __future__ import annotations

import pytest

from cnnkit.analysis import build_on_meta, summarize


def _documented() -> list[str]:
    import torchvision.models as tvm
    from torchvision.models import get_model_weights, list_models

    return [n for n in list_models(module=tvm) if "_ops" in get_model_weights(n).DEFAULT.meta]


def _check(name: str) -> None:
    from torchvision.models import get_model, get_model_weights

    weights = get_model_weights(name).DEFAULT
    ops = weights.meta["_ops"]
    crop = weights.transforms.keywords["crop_size"]
    kwargs = {}
    if name.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]  # SWAG ViT-H/14 weights are for 518x518
    if name == "googlenet":
        kwargs["aux_logits"] = False  # the weights' model drops the auxiliary classifiers
    if name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = False  # (meta tensors are not initialised anyway)
    model = build_on_meta(get_model, name, **kwargs)
    s = summarize(model, (3, crop, crop))
    got = s.total_mult_adds / 1e9
    assert abs(got - ops) <= max(0.005 * ops, 0.0005), f"{name}: {got:.4f} G mult-adds vs documented {ops}"
    assert s.total_params == weights.meta["num_params"]
    assert s.unknown_layers == [], [r.name for r in s.unknown_layers]


DOCUMENTED = _documented()

# run by default: one or two of each family and kind of operation (grouped and depthwise
# convolutions, SE gates, channel shuffle, concatenation, attention, windowed attention);
# the rest are marked slow (the whole sweep takes ~20 s on one core)
FAST = {
    "alexnet",
    "resnet50",
    "resnext50_32x4d",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "shufflenet_v2_x0_5",
    "densenet121",
    "googlenet",
    "inception_v3",
    "squeezenet1_1",
    "regnet_y_400mf",
    "convnext_tiny",
    "mnasnet0_5",
    "vit_b_32",
    "swin_t",
    "vgg16",
}


def test_torchvision_documents_most_models() -> None:
    assert len(DOCUMENTED) >= 70  # every classification model of torchvision 0.29 has _ops


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in DOCUMENTED]
)
def test_mult_adds_and_params_match_torchvision_documentation(name: str) -> None:
    _check(name)
