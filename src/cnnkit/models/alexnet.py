"""AlexNet and ZFNet, the ILSVRC 2012 and 2013 winners (lecture slides "AlexNet", "ZFNet",
and "Grouped Convolution", which AlexNet introduced to split the net over two GPUs).

- ``alexnet``: torchvision's single-tower AlexNet (Krizhevsky 2014, "One weird trick
  for parallelizing convolutional neural networks"; widths 64/192/384/256/256, no
  response normalisation), with torchvision's module names so its weights load.
- ``alexnet_grouped``: the two-tower net of Krizhevsky, Sutskever & Hinton 2012,
  "ImageNet classification with deep convolutional neural networks" (NIPS), fig. 2:
  widths 96/256/384/384/256, an 11x11 stride-4 first layer, conv2, conv4 and conv5
  with ``groups=2`` (each GPU's kernels see only that GPU's maps; conv3 and the
  fully connected layers see both), local response normalisation after the ReLUs of
  conv1 and conv2 (sec. 3.3: n=5, alpha=1e-4, beta=0.75, k=2) and overlapping 3x3
  stride-2 max-pools after both normalisations and after conv5 (sec. 3.4).
- ``zfnet``: Zeiler & Fergus 2014, "Visualizing and understanding convolutional
  networks" (ECCV), fig. 3: 7x7 stride-2 first layer (instead of 11x11 stride 4),
  5x5 stride-2 conv2, 3x3 stride-2 max-pools, contrast normalisation after the
  first two pools (the same LRN as AlexNet; the paper gives no constants), and dense
  (ungrouped) conv3-5 (sec. 3). Map sizes at 224: 110, 55, 26, 13, 13, 13, 13, 6.

Parameter counts at 1000 classes, each layer ``k*k*(c_in/groups)*c_out + c_out`` for
convolutions and ``n_in*n_out + n_out`` for the fully connected layers:

- alexnet: 61,100,840 (torchvision's ``AlexNet_Weights`` meta);
- alexnet_grouped: convs 34,944 + 307,456 + 885,120 + 663,936 + 442,624 = 2,334,080;
  FCs 37,752,832 + 16,781,312 + 4,097,000 = 58,631,144; total 60,965,224 (the
  paper: "60 million parameters");
- zfnet: convs 14,208 + 614,656 + 885,120 + 1,327,488 + 884,992 = 3,726,464; FCs as
  above; total 62,357,608.

``small_input=True`` makes the first layer a 3x3 stride-1 convolution, drops the
first max-pool and turns any other strided convolution (ZFNet's conv2) into a stride-1
"same" one, so a 28x28 input reaches the head as a 6x6 map, as 224 does in the
ImageNet nets. Module indices stay the same, so ImageNet weights still load into
every layer but the first (``create_model(..., pretrained=True)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from cnnkit.layers.act import ActLayer, get_act
from cnnkit.models._utils import check_model_args, fc_classifier, set_input_constraints
from cnnkit.models.api import ZooModel
from cnnkit.models.registry import register_model

__all__ = ["CFGS", "AlexNet", "ConvSpec", "alexnet", "alexnet_grouped", "lrn_paper", "zfnet"]


class ConvSpec(NamedTuple):
    """One convolutional layer and what follows its activation, in order."""

    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    groups: int
    after: tuple[str, ...]  # "lrn", "pool" (3x3 stride 2) or "pool_pad" (3x3 stride 2, padding 1)


# One row per convolution. Columns: out_channels, kernel_size, stride, padding, groups, after-ReLU ops.
CFGS: dict[str, list[ConvSpec]] = {
    "alexnet": [
        ConvSpec(64, 11, 4, 2, 1, ("pool",)),
        ConvSpec(192, 5, 1, 2, 1, ("pool",)),
        ConvSpec(384, 3, 1, 1, 1, ()),
        ConvSpec(256, 3, 1, 1, 1, ()),
        ConvSpec(256, 3, 1, 1, 1, ("pool",)),
    ],
    "alexnet_grouped": [
        ConvSpec(96, 11, 4, 2, 1, ("lrn", "pool")),
        ConvSpec(256, 5, 1, 2, 2, ("lrn", "pool")),
        ConvSpec(384, 3, 1, 1, 1, ()),
        ConvSpec(384, 3, 1, 1, 2, ()),
        ConvSpec(256, 3, 1, 1, 2, ("pool",)),
    ],
    "zfnet": [
        ConvSpec(96, 7, 2, 1, 1, ("pool_pad", "lrn")),
        ConvSpec(256, 5, 2, 0, 1, ("pool_pad", "lrn")),
        ConvSpec(384, 3, 1, 1, 1, ()),
        ConvSpec(384, 3, 1, 1, 1, ()),
        ConvSpec(256, 3, 1, 1, 1, ("pool",)),
    ],
}

_POOL_PADDING = {"pool": 0, "pool_pad": 1}


def lrn_paper(size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> nn.LocalResponseNorm:
    """Local response normalisation with Krizhevsky et al.'s constants, in their convention.

    The paper (sec. 3.3) divides by ``(k + alpha * sum a^2)^beta``; torch's
    ``LocalResponseNorm`` divides by ``(k + alpha / size * sum a^2)^beta``, so torch's
    ``alpha`` is ``alpha * size`` here.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"LRN size must be a positive odd number of channels; got {size}")
    return nn.LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)


def _small_input_cfg(cfg: Sequence[ConvSpec]) -> list[ConvSpec]:
    # 3x3 stride-1 first layer without its pool; later strided convs become stride-1 "same" convs.
    first = cfg[0]
    out = [
        first._replace(kernel_size=3, stride=1, padding=1, after=tuple(a for a in first.after if a == "lrn"))
    ]
    out += [s._replace(stride=1, padding=s.kernel_size // 2) if s.stride > 1 else s for s in cfg[1:]]
    return out


def _min_input_size(cfg: Sequence[ConvSpec]) -> int:
    """Smallest square input for which every convolution and pool has an output of at least 1x1."""

    def fits(h: int) -> bool:
        for s in cfg:
            h = (h + 2 * s.padding - s.kernel_size) // s.stride + 1
            if h < 1:
                return False
            for op in s.after:
                if op in _POOL_PADDING:
                    h = (h + 2 * _POOL_PADDING[op] - 3) // 2 + 1
                    if h < 1:
                        return False
        return True

    return next(h for h in range(1, 1024) if fits(h))


class AlexNet(ZooModel):
    """AlexNet-style net: ``features`` (conv -> act [-> LRN/pool]) x 5, ``avgpool`` to 6x6, ``classifier``.

    The classifier is torchvision's: dropout, FC 4096, act, dropout, FC 4096, act,
    FC ``num_classes`` (dropout in the first two FC layers, as Krizhevsky et al.).
    """

    def __init__(
        self,
        cfg: Sequence[ConvSpec],
        num_classes: int = 1000,
        in_chans: int = 3,
        small_input: bool = False,
        *,
        act_layer: ActLayer = "relu",
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        check_model_args("AlexNet", num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
        if len(cfg) == 0:
            raise ValueError("AlexNet needs at least one ConvSpec in cfg")
        act = get_act(act_layer)
        layers = _small_input_cfg(cfg) if small_input else list(cfg)
        features: list[nn.Module] = []
        c_in = in_chans
        for i, (spec, orig) in enumerate(zip(layers, cfg, strict=True)):
            if c_in % spec.groups or spec.out_channels % spec.groups:
                raise ValueError(
                    f"layer {i}: groups={spec.groups} must divide in ({c_in}) and out ({spec.out_channels}) channels"
                )
            for op in orig.after:
                if op not in ("lrn", *_POOL_PADDING):
                    raise ValueError(
                        f"layer {i}: unknown op {op!r} after the activation; use 'lrn', 'pool' or 'pool_pad'"
                    )
            features += [
                nn.Conv2d(
                    c_in, spec.out_channels, spec.kernel_size, spec.stride, spec.padding, groups=spec.groups
                ),
                act(),
            ]
            # ops of the original row: the ones small_input dropped stay as identities, keeping module indices
            for op in orig.after:
                if op not in spec.after:
                    features.append(nn.Identity())
                elif op == "lrn":
                    features.append(lrn_paper())
                else:
                    features.append(nn.MaxPool2d(3, stride=2, padding=_POOL_PADDING[op]))
            c_in = spec.out_channels
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = fc_classifier(c_in * 6 * 6, num_classes, act, drop_rate, dropout_first=True)
        set_input_constraints(
            self, in_chans=in_chans, min_input_size=_min_input_size(layers), small_input=small_input
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _alexnet(
    variant: str, num_classes: int, in_chans: int, small_input: bool, kwargs: dict[str, Any]
) -> AlexNet:
    if "cfg" in kwargs:
        raise ValueError(f"{variant} fixes the layer table; build AlexNet(cfg=...) directly for another one")
    return AlexNet(
        CFGS[variant], num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs
    )


@register_model(torchvision="alexnet")
def alexnet(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> AlexNet:
    """AlexNet in torchvision's single-tower form (Krizhevsky 2014, "One weird trick...").

    61,100,840 parameters at 1000 classes (torchvision's ``AlexNet_Weights`` meta).
    Options: ``act_layer``, ``drop_rate`` (0.5).
    """
    return _alexnet("alexnet", num_classes, in_chans, small_input, kwargs)


@register_model()
def alexnet_grouped(
    *, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any
) -> AlexNet:
    """AlexNet as published: two towers as grouped convolutions, with LRN (Krizhevsky et al. 2012).

    60,965,224 parameters at 1000 classes (derivation in the module docstring; the
    paper says 60 million). Options: ``act_layer``, ``drop_rate`` (0.5).
    """
    return _alexnet("alexnet_grouped", num_classes, in_chans, small_input, kwargs)


@register_model()
def zfnet(*, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs: Any) -> AlexNet:
    """ZFNet (Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks", fig. 3).

    62,357,608 parameters at 1000 classes (derivation in the module docstring; the
    paper gives no total). Options: ``act_layer``, ``drop_rate`` (0.5).
    """
    return _alexnet("zfnet", num_classes, in_chans, small_input, kwargs)
