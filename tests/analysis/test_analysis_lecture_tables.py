"""The lecture's tables reproduced by ``summarize``: VGG-16 (slide "VGGNet") and MobileNet table 4.

A note on the lecture's VGG-16 total. The slide ends "TOTAL memory: 24M * 4 bytes ~= 96MB
/ image (for a forward pass)", but its own rows (INPUT 150,528 + the 13 conv, 5 pool and
3 FC outputs below) sum to 15,237,608 elements: 15.2M values, 60.95 MB at 4 bytes per
value, not 24M and 96 MB. :func:`test_lecture_memory_total_is_the_sum_of_its_rows`
checks that sum and ``summarize``'s figure (which adds torchvision's extra
``AdaptiveAvgPool2d(7)`` output, 25,088 values, absent from the original VGG).
The parameter total, 138M, is right: the weights of the rows sum to 138,344,128 and the
13,416 biases the slide leaves out ("not counting biases") make 138,357,544.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from torch import nn

from cnnkit.analysis import build_on_meta, summarize

# The slide's rows: (label, [H, W, C] of the output, "memory" = output values, "params" = weights).
# Memory and params as the slide computes them (224*224*64 = 3,211,264; (3*3*3)*64 = 1,728 ...).
LECTURE_VGG16 = [
    ("CONV3-64", (224, 224, 64), 224 * 224 * 64, (3 * 3 * 3) * 64),
    ("CONV3-64", (224, 224, 64), 224 * 224 * 64, (3 * 3 * 64) * 64),
    ("POOL2", (112, 112, 64), 112 * 112 * 64, 0),
    ("CONV3-128", (112, 112, 128), 112 * 112 * 128, (3 * 3 * 64) * 128),
    ("CONV3-128", (112, 112, 128), 112 * 112 * 128, (3 * 3 * 128) * 128),
    ("POOL2", (56, 56, 128), 56 * 56 * 128, 0),
    ("CONV3-256", (56, 56, 256), 56 * 56 * 256, (3 * 3 * 128) * 256),
    ("CONV3-256", (56, 56, 256), 56 * 56 * 256, (3 * 3 * 256) * 256),
    ("CONV3-256", (56, 56, 256), 56 * 56 * 256, (3 * 3 * 256) * 256),
    ("POOL2", (28, 28, 256), 28 * 28 * 256, 0),
    ("CONV3-512", (28, 28, 512), 28 * 28 * 512, (3 * 3 * 256) * 512),
    ("CONV3-512", (28, 28, 512), 28 * 28 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", (28, 28, 512), 28 * 28 * 512, (3 * 3 * 512) * 512),
    ("POOL2", (14, 14, 512), 14 * 14 * 512, 0),
    ("CONV3-512", (14, 14, 512), 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", (14, 14, 512), 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", (14, 14, 512), 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("POOL2", (7, 7, 512), 7 * 7 * 512, 0),
    ("FC", (1, 1, 4096), 4096, 7 * 7 * 512 * 4096),
    ("FC", (1, 1, 4096), 4096, 4096 * 4096),
    ("FC", (1, 1, 1000), 1000, 4096 * 1000),
]
LECTURE_INPUT_MEMORY = 224 * 224 * 3  # "INPUT: [224x224x3] memory: 224*224*3=150K"


def _vgg16_builders() -> list[tuple[str, Callable[[], nn.Module]]]:
    import torchvision

    builders: list[tuple[str, Callable[[], nn.Module]]] = [("torchvision", torchvision.models.vgg16)]
    from cnnkit.models.registry import list_models

    if "vgg16" in list_models():
        from cnnkit.models.registry import create_model

        builders.append(("cnnkit", lambda: create_model("vgg16")))
    return builders


@pytest.mark.parametrize(
    ("source", "builder"), _vgg16_builders(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_vgg16_reproduces_the_lecture_table_row_by_row(source: str, builder: Callable[[], nn.Module]) -> None:
    s = summarize(build_on_meta(builder), (3, 224, 224))
    rows = [r for r in s.layers if r.type in ("Conv2d", "MaxPool2d", "Linear")]
    assert len(rows) == len(LECTURE_VGG16)
    for row, (label, (h, w, c), memory, weights) in zip(rows, LECTURE_VGG16, strict=True):
        assert row.activation_elements == memory, (row.name, label)
        assert row.weight_params == weights, (row.name, label)
        expected_shape = (1, c) if label == "FC" else (1, c, h, w)
        assert row.output_shape == expected_shape, (row.name, label)
        assert row.bias_params == (c if weights else 0)
    assert s.total_params == 138_357_544
    assert sum(r.weight_params for r in s.layers) == sum(w for *_, w in LECTURE_VGG16) == 138_344_128
    assert sum(r.bias_params for r in s.layers) == 13_416
    assert s.input_elements == LECTURE_INPUT_MEMORY


def test_lecture_memory_total_is_the_sum_of_its_rows() -> None:
    """The slide's "24M * 4 bytes ~= 96MB" is not the sum of its rows: 15,237,608 values (60.95 MB)."""
    import torchvision

    lecture_sum = LECTURE_INPUT_MEMORY + sum(m for _, _, m, _ in LECTURE_VGG16)
    assert lecture_sum == 15_237_608
    assert abs(lecture_sum * 4 - 96e6) > 30e6  # the slide's total is off by more than a third
    s = summarize(build_on_meta(torchvision.models.vgg16))
    torchvision_extra_pool = 7 * 7 * 512  # AdaptiveAvgPool2d((7, 7)) output, not in the original VGG
    assert s.activation_elements == lecture_sum + torchvision_extra_pool
    assert s.activation_bytes == 4 * s.activation_elements
    # in-place ReLUs, eval-mode dropout and the flatten view allocate nothing more
    assert all(r.activation_elements == 0 for r in s.layers if r.type in ("ReLU", "Dropout") or r.own_ops)


def _registered(*names: str) -> bool:
    from cnnkit.models.registry import list_models

    have = set(list_models())
    return all(n in have for n in names)


@pytest.mark.skipif(
    not _registered("mobilenet_v1", "mobilenet_v1_conv"),
    reason="cnnkit's mobilenet_v1 / mobilenet_v1_conv are not registered yet (models/mobilenet.py)",
)
@pytest.mark.parametrize(
    ("name", "mult_adds_millions", "params_millions"),
    [("mobilenet_v1", 569, 4.2), ("mobilenet_v1_conv", 4866, 29.3)],
)
def test_mobilenet_table_4(name: str, mult_adds_millions: int, params_millions: float) -> None:
    """Howard et al. 2017, table 4 (the lecture's "MobileNets" slide): million mult-adds and parameters."""
    s = summarize(name)
    assert abs(s.total_mult_adds / 1e6 - mult_adds_millions) / mult_adds_millions < 0.005
    assert round(s.total_params / 1e6, 1) == params_millions
    assert s.unknown_layers == []


def test_depthwise_separable_slide_numbers() -> None:
    """Lecture slide "Depthwise Separable Convolution": D_K D_K M N D_F D_F = 603,979,776 and
    D_K D_K M D_F D_F + M N D_F D_F = 71,827,456 (D_K = 3, M = 2048, N = 128, D_F = 16 solve both),
    a ratio of 1/N + 1/D_K^2."""
    m, n, f = 2048, 128, 16
    full = summarize(nn.Conv2d(m, n, 3, padding=1, bias=False), (m, f, f))
    separable = nn.Sequential(
        nn.Conv2d(m, m, 3, padding=1, groups=m, bias=False), nn.Conv2d(m, n, 1, bias=False)
    )
    sep = summarize(separable, (m, f, f))
    assert full.total_mult_adds == 603_979_776
    assert sep.total_mult_adds == 71_827_456
    assert [r.mult_adds for r in sep.layers] == [3 * 3 * m * f * f, m * n * f * f]
    assert sep.total_mult_adds / full.total_mult_adds == pytest.approx(1 / n + 1 / 9)
