"""The CIFAR ResNeXt (lecture slides "ResNeXt": "'cardinality' matters -- the next dimension").

Xie, Girshick, Dollar, Tu & He 2017, "Aggregated residual transformations for deep neural
networks" (CVPR, arXiv:1611.05431), sec. 5.2: ResNeXt-29 for CIFAR is a 3x3 convolution of 64
channels, three stages of three bottleneck blocks each (stage widths 64, 128, 256, outputs four
times wider: 256, 512, 1024; the last two stages start at stride 2), global average pool and a
linear classifier: 1 + 3 x 3 x 3 + 1 = 29 layers. A block is 1x1 -> grouped 3x3 -> 1x1 (fig. 3c):
``C`` groups ("cardinality") of ``d`` channels each in the first stage ("bottleneck width",
doubling with every stage), so ``C x d`` channels in the 3x3 convolution; "8x64d" is C = 8, d = 64.
Projection shortcuts (1x1 convolution + BN) where the shape changes, as the authors' code.

The ImageNet ResNeXts (``resnext50_32x4d``...) live in :mod:`cnnkit.models.resnet`; this net is the
same :class:`cnnkit.models.resnet.ResNet` and :class:`cnnkit.layers.residual.Bottleneck` with three
stages and the small-input stem, so a variant is arguments, not a class: ``widths`` narrows it for
small experiments (``widths=(8, 16, 32)`` is the paper's net at 1/8 width).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnkit.layers.residual import Bottleneck
from cnnkit.models.registry import register_model
from cnnkit.models.resnet import ResNet, _create_resnet

__all__ = ["RESNEXT29_BLOCKS", "resnext29", "resnext29_group_widths"]

RESNEXT29_BLOCKS = (3, 3, 3)  # bottleneck blocks per stage: (29 - 2) / 9 (Xie et al. sec. 5.2)


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def resnext29_group_widths(bottleneck_width: int, widths: Sequence[int]) -> list[int]:
    """Channels per group in each stage: ``d`` in the first, scaled with the stage's width.

    Raises when a stage's group width would not be a whole number (the paper's d doubles with the
    stage widths; ``widths=(8, 16, 32)`` with ``d=5`` gives 5, 10, 20).
    """
    widths = list(widths)
    if len(widths) != len(RESNEXT29_BLOCKS) or not all(_positive_int(w) for w in widths):
        raise ValueError(f"resnext29 needs three positive integer stage widths; got widths={widths}")
    if not _positive_int(bottleneck_width):
        raise ValueError(f"resnext29 needs an integer bottleneck_width >= 1; got {bottleneck_width!r}")
    if any(w * bottleneck_width % widths[0] or 64 * bottleneck_width % widths[0] for w in widths):
        raise ValueError(
            f"resnext29: bottleneck_width={bottleneck_width} with widths={widths} gives fractional group "
            f"widths (d * width / widths[0] and 64 * d / widths[0] must be whole numbers)"
        )
    return [w * bottleneck_width // widths[0] for w in widths]


@register_model()
def resnext29(
    *,
    cardinality: int = 8,
    bottleneck_width: int = 64,
    widths: Sequence[int] = (64, 128, 256),
    num_classes: int = 10,
    in_chans: int = 3,
    small_input: bool = True,
    **kwargs: Any,
) -> ResNet:
    """ResNeXt-29 (Xie et al. 2017, sec. 5.2): ``cardinality`` x ``bottleneck_width`` d, CIFAR layout.

    The default, 8x64d, has 34,426,698 parameters at 10 classes (the paper's table 7: 34.4M);
    ``cardinality=16`` has 68,155,210 (table 7: 68.1M). ``widths`` are the stages' bottleneck
    ``planes`` (outputs are four times wider; the stem has ``widths[0]`` channels unless
    ``stem_width`` is given). A CIFAR net is a small-input net by design: ``small_input`` is
    accepted for a uniform interface and changes nothing, as for the zoo's CIFAR ResNets. Other
    keyword arguments are :class:`cnnkit.models.resnet.ResNet`'s; ``groups`` and
    ``width_per_group`` are set here from ``cardinality`` and ``bottleneck_width``.
    """
    del small_input  # see the docstring: the 3x3/1 stem is the paper's
    for key, instead in (("groups", "cardinality"), ("width_per_group", "bottleneck_width")):
        if key in kwargs:
            raise ValueError(f"resnext29 sets {key} itself; pass {instead}= instead")
    if not _positive_int(cardinality):
        raise ValueError(f"resnext29 needs an integer cardinality >= 1; got {cardinality!r}")
    widths = list(widths)
    resnext29_group_widths(bottleneck_width, widths)  # validates
    return _create_resnet(
        "resnext29",
        ResNet,
        Bottleneck,
        RESNEXT29_BLOCKS,
        kwargs,
        defaults={"stem_width": widths[0]},
        widths=widths,
        # Bottleneck's width rule, int(planes * width_per_group / 64) * groups, gives d in stage 1
        groups=cardinality,
        width_per_group=64 * bottleneck_width // widths[0],
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=True,
    )
