"""DenseNet (lecture slide "DenseNet").

Huang, Liu, van der Maaten & Weinberger 2017, "Densely Connected Convolutional
Networks" (CVPR, arXiv:1608.06993): ``x_l = H_l([x_0, ..., x_{l-1}])`` inside
each dense block (see :mod:`cnnkit.layers.dense`), transitions with compression
between the blocks. All variants here are DenseNet-BC (bottleneck layers,
compression ``theta = 0.5``).

- ImageNet (paper Table 1): stem 7x7/2 conv with ``2k`` channels and 3x3/2 max
  pool, four dense blocks, ``k = 32`` (DenseNet-161: ``k = 48``, 96 stem channels).
  With ``small_input=False`` and ``in_chans=3`` the state_dict equals torchvision's
  ``densenet121/161/169/201`` (keys and shapes), so its weights load strictly.
- CIFAR (paper sec. 4.2, Table 2): DenseNet-BC with ``L = 100``, ``k = 12``: a 3x3
  conv with ``2k`` channels, then three dense blocks of ``(L - 4) / 6 = 16``
  bottleneck layers.

``small_input=True`` replaces the ImageNet stem with the CIFAR one (3x3 stride-1
conv, no max pool), so 28x28..32x32 inputs keep their resolution up to the first
transition. The model is the features ``conv0, norm0, relu0, [pool0], denseblock1,
transition1, ..., norm5``, then the final activation, global average pooling,
dropout (``drop_rate``) and the linear ``classifier``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.layers.act import ActLayer, get_act
from cnnkit.layers.dense import DenseBlock, Transition
from cnnkit.layers.norm import NormLayer, get_norm_layer
from cnnkit.models._utils import check_model_args, set_input_constraints, torchvision_init
from cnnkit.models.api import ZooModel
from cnnkit.models.registry import register_model

__all__ = [
    "DenseNet",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet264",
    "densenet_bc_100_12",
    "remap_legacy_keys",
]

# torchvision's DenseNet checkpoints predate the ban on "." in module names: their dense
# layers are "norm.1", "conv.2", ... where the modules (and torchvision's own models) say "norm1".
_LEGACY_DENSE_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")


def remap_legacy_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``...denselayerN.norm.1.weight`` to ``...denselayerN.norm1.weight`` (other keys unchanged).

    torchvision does the same in ``densenet._load_state_dict`` before loading its ImageNet
    weights; a raw ``weights.get_state_dict()`` still has the old names.
    """
    return {_LEGACY_DENSE_KEY.sub(r"\1\2.", key): value for key, value in state_dict.items()}


def _remap_torchvision(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The registry's ``remap_state_dict`` hook: torchvision renames these old keys itself before loading."""
    return remap_legacy_keys(state_dict)


def _min_input_size(small_input: bool, num_transitions: int) -> int:
    """Smallest square input for which every pooling stage leaves at least one pixel."""

    def out_size(h: int) -> int:
        if not small_input:
            h = (h + 2 * 3 - 7) // 2 + 1  # conv0 7x7/2, padding 3
            h = (h + 2 * 1 - 3) // 2 + 1 if h >= 2 else 0  # pool0 3x3/2, padding 1 (needs 2 pixels)
        for _ in range(num_transitions):
            h //= 2  # 2x2/2 average pooling of each transition
        return h

    h = 1
    while out_size(h) < 1:
        h += 1
    return h


class DenseNet(ZooModel):
    """DenseNet-BC (Huang et al. 2017), configured by growth rate and layers per block.

    Args:
        growth_rate: ``k``, the channels each dense layer adds.
        block_config: the number of dense layers in each block.
        num_init_features: channels of the stem conv (``2k`` in the paper).
        bn_size: the bottleneck width factor (``bn_size * k`` channels after each 1x1 conv; 4 in the paper).
        compression: ``theta`` of the transitions (0.5 for DenseNet-BC, 1 for plain DenseNet-B).
        num_classes, in_chans, small_input: classes, input channels, CIFAR stem (see module docstring).
        norm_layer, act_layer: the norm and activation of every BN-ReLU pair (names or factories).
        drop_rate: dropout before the classifier.
        dense_drop_rate: dropout after every dense layer (torchvision's ``drop_rate``; the
            paper uses 0.2 on CIFAR without data augmentation).
        memory_efficient: checkpoint the bottlenecks (Pleiss et al. 2017), trading compute for memory.
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        compression: float = 0.5,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        norm_layer: NormLayer = "batch",
        act_layer: ActLayer = "relu",
        drop_rate: float = 0.0,
        dense_drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("growth_rate", growth_rate), ("num_init_features", num_init_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DenseNet needs {name} to be an integer >= 1; got {value!r}")
        check_model_args("DenseNet", num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
        if len(block_config) < 1 or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in block_config
        ):
            raise ValueError(
                f"DenseNet needs block_config to be a non-empty list of layer counts >= 1; got {block_config!r}"
            )
        norm = get_norm_layer(norm_layer)
        act = get_act(act_layer)

        # the CIFAR stem is a 3x3/1 conv; the ImageNet one a 7x7/2 conv and a 3x3/2 max-pool
        kernel, stride, padding = (3, 1, 1) if small_input else (7, 2, 3)
        self.features = nn.Sequential(
            OrderedDict(
                conv0=nn.Conv2d(
                    in_chans, num_init_features, kernel, stride=stride, padding=padding, bias=False
                ),
                norm0=norm(num_init_features),
                relu0=act(),
            )
        )
        if not small_input:
            self.features.add_module("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))

        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(
                num_layers,
                channels,
                growth_rate,
                bn_size,
                dense_drop_rate,
                norm_layer=norm,
                act_layer=act,
                memory_efficient=memory_efficient,
            )
            self.features.add_module(f"denseblock{i + 1}", block)
            channels = block.out_channels
            if i != len(block_config) - 1:
                trans = Transition(channels, compression, norm_layer=norm, act_layer=act)
                self.features.add_module(f"transition{i + 1}", trans)
                channels = trans.out_channels
        self.features.add_module(f"norm{len(block_config) + 1}", norm(channels))

        # The final BN of the features is followed by the activation, as in the paper's
        # reference code and torchvision (F.relu there; parameter-free, so no state_dict key).
        self.act = act()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(channels, num_classes)
        self.num_features = channels
        self.growth_rate = growth_rate
        self.block_config = tuple(block_config)

        # torchvision's init (after the authors' Lua code): He-normal convs, identity norms, zero bias.
        torchvision_init(self, "densenet")

        set_input_constraints(
            self,
            in_chans=in_chans,
            min_input_size=_min_input_size(small_input, len(block_config) - 1),
            small_input=small_input,
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature maps after the last block's norm and activation, (N, num_features, h, w)."""
        return self.act(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        return self.classifier(self.dropout(x))


# DenseNet-BC: (growth_rate k, layers per dense block, stem channels); ImageNet nets from the
# paper's Table 1, the CIFAR net from sec. 4.2 (L = 100: three blocks of (L - 4) / 6 = 16 layers).
_CFGS: dict[str, tuple[int, tuple[int, ...], int]] = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
    "densenet264": (32, (6, 12, 64, 48), 64),
    "densenet_bc_100_12": (12, (16, 16, 16), 24),
}


def _densenet(
    name: str, num_classes: int, in_chans: int, small_input: bool, kwargs: dict[str, Any]
) -> DenseNet:
    growth_rate, block_config, num_init_features = _CFGS[name]
    return DenseNet(
        growth_rate,
        block_config,
        num_init_features,
        num_classes=num_classes,
        in_chans=in_chans,
        small_input=small_input,
        **kwargs,
    )


@register_model(torchvision="densenet121", remap_state_dict=_remap_torchvision)
def densenet121(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> DenseNet:
    """DenseNet-121 (Huang et al. 2017, Table 1; k=32, blocks 6-12-24-16).

    7,978,856 parameters at 1000 classes, equal to torchvision's ``densenet121`` (8.0M in the paper's Fig. 3).
    """
    return _densenet("densenet121", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="densenet161", remap_state_dict=_remap_torchvision)
def densenet161(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> DenseNet:
    """DenseNet-161 (Huang et al. 2017, Table 1; k=48, 96 stem channels, blocks 6-12-36-24).

    28,681,000 parameters at 1000 classes, equal to torchvision's ``densenet161``.
    """
    return _densenet("densenet161", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="densenet169", remap_state_dict=_remap_torchvision)
def densenet169(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> DenseNet:
    """DenseNet-169 (Huang et al. 2017, Table 1; k=32, blocks 6-12-32-32).

    14,149,480 parameters at 1000 classes, equal to torchvision's ``densenet169`` (14.1M in the paper's Fig. 3).
    """
    return _densenet("densenet169", num_classes, in_chans, small_input, kwargs)


@register_model(torchvision="densenet201", remap_state_dict=_remap_torchvision)
def densenet201(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> DenseNet:
    """DenseNet-201 (Huang et al. 2017, Table 1; k=32, blocks 6-12-48-32).

    20,013,928 parameters at 1000 classes, equal to torchvision's ``densenet201`` (20.0M in the paper's Fig. 3).
    """
    return _densenet("densenet201", num_classes, in_chans, small_input, kwargs)


@register_model()
def densenet264(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> DenseNet:
    """DenseNet-264 (Huang et al. 2017, Table 1; k=32, blocks 6-12-64-48), the lecture's ILSVRC table entry.

    33,337,704 parameters at 1000 classes (measured; the 33.3M commonly cited for it).
    torchvision has no DenseNet-264.
    """
    return _densenet("densenet264", num_classes, in_chans, small_input, kwargs)


@register_model()
def densenet_bc_100_12(
    *, num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs: Any
) -> DenseNet:
    """DenseNet-BC for CIFAR with L=100, k=12 (Huang et al. 2017, sec. 4.2 and Table 2).

    Three dense blocks of 16 bottleneck layers, 2k = 24 stem channels, theta = 0.5. The
    paper's CIFAR network is ``small_input=True`` (the builder's default, as for the other
    CIFAR nets: 3x3 stem conv, no pooling before the first block); ``small_input=False``
    (``create_model``'s default) puts the ImageNet 7x7/2 conv and 3x3/2 max pool in front
    instead. 769,210 parameters at 10 classes with ``small_input=True`` (0.8M in the paper's
    Table 2; the authors' Lua code has no BN-ReLU after the stem conv, 48 parameters fewer,
    which cnnkit keeps so the state_dict matches the ImageNet models'); 1,108,780 at 1000
    classes.
    """
    return _densenet("densenet_bc_100_12", num_classes, in_chans, small_input, kwargs)
