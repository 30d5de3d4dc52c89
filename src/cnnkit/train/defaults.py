"""Defaults that adapt to what is trained: the model's family, the dataset and its size.

A recipe's settings were tuned for one model on one dataset (``default`` and ``accurate``:
fmnet on Fashion-MNIST, batch 256). Applied as they are to another model or a small
folder of images they fail (lr 0.2 diverges a ResNet-18; 6 steps an epoch leave half of
them to warm-up; a flip changes a digit's label). So with those recipes, every value the
user did not set is derived here from what is trained, and :func:`adapt` says which rule
set it (the source shown by ``--print-config`` and written to ``config.yaml``):

- **batch** (data rule): 256, halved until an epoch has at least ``MIN_STEPS_PER_EPOCH``
  optimizer steps (down to 16);
- **peak learning rate** (family rule): the family's paper rate per ``base`` images,
  scaled with the square root of the batch (Krizhevsky 2014; Hoffer et al. 2017; timm's
  ``lr_base``/``lr_base_size`` with ``lr_base_scale='sqrt'``): the linear rule (Goyal et
  al. 2017) is for long runs at large batches; from 256 down to 32 it divides the rate by
  8 and short runs fall 2-3 points behind (benchmarks/zoo_defaults.py). The recipe's own
  rate, where it was tuned for this model, is kept at every batch (measured: fmnet at batch
  32 loses 5-10 points to the square-root rule);
- **warm-up** (data rule): the recipe's, but at least ``min(100, 10% of the run)``
  optimizer steps;
- **horizontal flips** (data rule): only where a flip keeps the label (``FLIP_KEEPS_LABEL``);
- **residual init** (family rule): a deep residual network (``DEEP_RESIDUAL`` branches or
  more) starts each residual branch at zero (its last batch norm's scale 0: Goyal et al.
  2017, sec. 5.1; timm's default), so that it starts as a shallow one: without it
  ResNeXt-50 (16 branches) at batch 32 diverges at every rate from 0.01 (loss 10-27 in the
  first epoch) and ShuffleNet (13) restarts twice. The shallow ones (ResNet-18 and SE-ResNet-18:
  8, ResNet-20: 9) are left as torchvision builds them: a zero branch gets no gradient
  but its scale's, and in short runs they lose 5-40 points to it (2 epochs: ResNet-20 24.5%
  vs 67.5% on 1,000 Fashion-MNIST images, ResNet-18 47.5% vs 69.0%, SE-ResNet-18 92.2% vs
  97.2% on the photo folder);
- **He init** (family rule): a model without normalisation layers (AlexNet, ZFNet, VGG
  without BN) starts its convolutions from Kaiming-normal weights (He et al. 2015) and its
  linear layers from N(0, 0.01) (``init_weights(..., "kaiming_conv")``). torch's per-layer
  default (Var = 1 / (3 fan_in)) shrinks a ReLU signal about 2.4x a layer, and ZFNet on
  1,000 Fashion-MNIST images stays at chance (11.1%) for 2 epochs at every rate from
  0.01 to 0.05; with He init it reaches 66% at 0.01. He init in the linear layers too
  starts AlexNet at loss 11 (chance 2.3); the small classifier starts it at 2.5.

A value from a flag or a YAML file is never changed. The ``plain`` recipe adapts nothing.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, NamedTuple

from cnnkit.data.sources import DatasetTensors
from cnnkit.train.config import TrainConfig

__all__ = [
    "ADAPTIVE_RECIPES",
    "FAMILY_LR",
    "FLIP_KEEPS_LABEL",
    "FamilyLR",
    "Traits",
    "adapt",
    "banner",
    "batch_rule",
    "model_traits",
]

ADAPTIVE_RECIPES = ("default", "accurate")

# Does a horizontal flip keep the label? Clothes and natural images: yes; digits and
# characters: no (a mirrored 2 or a mirrored kana is another glyph or none); the synthetic
# set's classes are fixed patterns, not mirror-symmetric. An image folder is assumed to hold
# natural images (the run's first line says so, and --hflip 0 turns it off).
FLIP_KEEPS_LABEL = {
    "fashion-mnist": True,
    "cifar10": True,
    "cifar100": True,
    "imagefolder": True,
    "mnist": False,
    "kmnist": False,
    "synthetic": False,
}


class FamilyLR(NamedTuple):
    lr: float  # peak learning rate (SGD with momentum) ...
    per: int  # ... for a batch of this many images
    source: str


# Each family's peak rate from its paper (or the reference recipe that trains it with SGD),
# per `per` images; scaled with the square root of the batch ratio to the run's batch.
FAMILY_LR: dict[str, FamilyLR] = {
    "fmnet": FamilyLR(0.2, 256, "cnnkit's default recipe, tuned on Fashion-MNIST"),
    "resnet": FamilyLR(0.1, 256, "He et al. 2016: 0.1 at batch 256"),
    "senet": FamilyLR(0.15, 256, "Hu et al. 2018: 0.6 at batch 1024"),
    "resnext": FamilyLR(0.1, 128, "Xie et al. 2017 (CIFAR, sec. 5.2): 0.1 at batch 128"),
    "densenet": FamilyLR(0.1, 64, "Huang et al. 2017: 0.1 at batch 64"),
    # GoogLeNet was trained with asynchronous SGD (Szegedy et al. 2015), no batch rate to
    # take; measured at batch 32 (2 epochs, Fashion-MNIST and the photo folder): 0.01 best,
    # 0.03 -1 and -21 points, 0.1 -22 and -25.
    "googlenet": FamilyLR(0.01, 32, "measured on short runs"),
    "vgg": FamilyLR(0.01, 256, "Simonyan & Zisserman 2015: 0.01 at batch 256"),
    # VGG with batch norm (the `_bn` models): measured at batch 32 (2
    # epochs, Fashion-MNIST) the paper's rate scaled gives 47.6%, 0.01 66.4%, 0.03 70.4%.
    # On the photo folder (64x64) 0.035 at batch 32 never diverged but ended at 39.6% (0.01:
    # 96.6%): the 4096-wide classifier has no batch norm. Half a ResNet's rate.
    "vgg_bn": FamilyLR(
        0.05, 256, "batch norm in the convolutions: half a ResNet's rate (Ioffe & Szegedy 2015)"
    ),
    # Krizhevsky et al. 2012: 0.01 at batch 128 for 90 epochs, without batch norm. Measured
    # here with He init at batch 32 (2 epochs, ZFNet on the photo folder): 0.01 gives 90.6%,
    # 0.03 73%, 0.1 and 0.3 diverge.
    "alexnet": FamilyLR(0.01, 32, "measured on short runs (Krizhevsky et al. 2012: 0.01 at batch 128)"),
    # MobileNet was trained with RMSprop and asynchronous updates (Howard et al. 2017), no SGD
    # rate to take; torchvision's recipe for v2 (0.045 per 256, 300 epochs) scaled to batch
    # 32 gave 48.4% on 1,000 Fashion-MNIST images in 2 epochs where 0.03 gave 63.0%, and
    # 89.4% on the photo folder where 0.03 gave 94.4%: a batch-norm net, a ResNet's rate.
    "mobilenet": FamilyLR(0.1, 256, "batch norm: a ResNet's rate (the paper trains with RMSprop)"),
    "shufflenet": FamilyLR(0.5, 1024, "Zhang et al. 2018: 0.5 at batch 1024"),
}
_FALLBACK_LR = FamilyLR(0.1, 256, "SGD's common 0.1 at batch 256")

MIN_STEPS_PER_EPOCH = 25
_MAX_BATCH, _MIN_BATCH = 256, 16
_WARMUP_FLOOR_STEPS, _WARMUP_FLOOR_SHARE = 100, 0.1
DEEP_RESIDUAL = 12  # residual branches from which they start at zero (ResNet-50: 16, ResNet-18: 8)
_CHOSEN = ("default", "recipe")  # sources cnnkit may replace; flags, files and runs it may not


def batch_rule(n_train: int) -> int:
    """256, halved while an epoch of ``n_train`` images would have fewer than ``MIN_STEPS_PER_EPOCH`` steps."""
    batch = _MAX_BATCH
    while batch > _MIN_BATCH and n_train // batch < MIN_STEPS_PER_EPOCH:
        batch //= 2
    return min(batch, max(n_train, 1))


class Traits(NamedTuple):
    residual_branches: int  # how many residual branches zero_init_residual=True starts at zero
    normalised: bool  # has a normalisation layer (batch, group, layer norm...)


def model_traits(model: str) -> Traits:
    """What the init rules need to know of ``model``: its norm layers (built on the meta
    device, no memory) and its residual branches (the layers ``zero_init_residual=True``
    zeroes, counted on a CPU build: 0.3 s for ResNeXt-50)."""
    import torch
    from torch import nn

    from cnnkit.models import create_model

    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    with torch.device("meta"):
        built = create_model(model, num_classes=10)
    try:
        zeroed = create_model(model, num_classes=10, zero_init_residual=True)
    except (TypeError, ValueError):  # no residual branches (a plain net refuses it)
        branches = 0
    else:
        weights = (getattr(m, "weight", None) for m in zeroed.modules() if not list(m.children()))
        branches = sum(1 for w in weights if isinstance(w, torch.Tensor) and w.numel() and not w.any())
    return Traits(branches, any(isinstance(m, norms) for m in built.modules()))


_PLAIN_BN = Traits(residual_branches=0, normalised=True)  # a model neither rule changes


def adapt(
    cfg: TrainConfig,
    sources: dict[str, str],
    *,
    n_train: int,
    family: str,
    tuned_for: str | None,
    traits: Traits = _PLAIN_BN,
) -> tuple[TrainConfig, dict[str, str]]:
    """The config with every value cnnkit chose (source ``default`` or ``recipe``) fitted to the data.

    ``tuned_for`` is the model the recipe's learning rate was tuned for (None: none);
    ``traits``: what the model has (:func:`model_traits`). The returned
    sources name the rule behind each changed value.
    """
    if cfg.recipe not in ADAPTIVE_RECIPES:
        return cfg, sources
    sources, new = dict(sources), dict[str, Any]()
    batch = cfg.batch_size
    if sources.get("batch_size") == "default":
        batch = new["batch_size"] = batch_rule(n_train)
        sources["batch_size"] = f"data rule: >= {MIN_STEPS_PER_EPOCH} steps an epoch of {n_train} images"
    if sources.get("lr") in _CHOSEN:
        if sources["lr"] == "recipe" and cfg.model == tuned_for:
            # kept as tuned at every batch: fmnet at batch 32 (2 epochs of 1,000 Fashion-MNIST
            # images, of 1,500 photos) scored 67.3% and 86.0% at the square-root-scaled 0.071,
            # 71.0% and 96.2% at 0.1, 72.5% and 94.2% at 0.3 (benchmarks/zoo_defaults.py)
            sources["lr"] = f"recipe ({cfg.lr:g}, tuned for {tuned_for}; kept at batch {batch})"
        else:
            family += "_bn" if traits.normalised and f"{family}_bn" in FAMILY_LR else ""
            rule = FAMILY_LR.get(family, _FALLBACK_LR)
            new["lr"] = rule.lr * math.sqrt(batch / rule.per)
            sources["lr"] = f"family rule ({family}: {rule.source}), scaled (square root) to batch {batch}"
    if sources.get("hflip") in _CHOSEN:
        keeps = FLIP_KEEPS_LABEL.get(cfg.dataset, False)
        new["hflip"] = (cfg.hflip or 0.5) if keeps else 0.0
        sources["hflip"] = f"data rule: a flip {'keeps' if keeps else 'changes'} a {cfg.dataset} label"
    deep = traits.residual_branches >= DEEP_RESIDUAL
    if deep and cfg.model != tuned_for and sources.get("model_kwargs") in _CHOSEN:
        new["model_kwargs"] = {**cfg.model_kwargs, "zero_init_residual": True}
        sources["model_kwargs"] = (
            f"family rule: {traits.residual_branches} residual branches start at zero (Goyal et al. 2017)"
        )
    if not traits.normalised and cfg.model != tuned_for and sources.get("init") in _CHOSEN:
        new["init"] = "kaiming_conv"
        sources["init"] = "family rule: no normalisation layer, so He init for convolutions (He et al. 2015)"
    if sources.get("warmup_epochs") in _CHOSEN and cfg.warmup_epochs > 0:
        steps = max(n_train // batch, 1)
        floor = min(_WARMUP_FLOOR_STEPS, int(_WARMUP_FLOOR_SHARE * steps * cfg.epochs))
        if round(cfg.warmup_epochs * steps) < floor:
            new["warmup_epochs"] = floor / steps
            sources["warmup_epochs"] = f"data rule: at least {floor} steps (min(100, 10% of the run))"
    return dataclasses.replace(cfg, **new), sources


_PRECISION = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}


def _why(sources: dict[str, str] | None, key: str) -> str:
    """The first word(s) of a value's source: ``flag``, ``recipe``, ``family rule``, ``data rule``..."""
    if sources is None:
        return "given"
    return sources.get(key, "default").split(":")[0].split(" (")[0].split(",")[0]


def banner(cfg: TrainConfig, sources: dict[str, str] | None, data: DatasetTensors, out: Path) -> str:
    """The first line of a run: what it trains on what, and the settings it chose, with their source."""
    c, h, w = data.image_shape
    steps = max(len(data.train_y) // cfg.batch_size, 1)
    aug = [f"flip {cfg.hflip:g} ({_why(sources, 'hflip')})"] if cfg.hflip else ["no flip"]
    aug += [f"crop {cfg.crop_pad} px"] * bool(cfg.crop_pad) + [f"cutout {cfg.cutout}"] * bool(cfg.cutout)
    aug += [f"mixup {cfg.mixup:g}"] * bool(cfg.mixup) + [f"cutmix {cfg.cutmix:g}"] * bool(cfg.cutmix)
    aug += [f"smoothing {cfg.smoothing:g}"] * bool(cfg.smoothing)
    bias = f" (bias {cfg.whiten_bias_epochs} epochs)" if cfg.whiten_bias_epochs is not None else ""
    aug += [f"whitened stem{bias}"] * cfg.whiten + ["EMA"] * cfg.model_ema
    views = (1 + (cfg.tta and cfg.hflip > 0)) * (3 if cfg.tta_shift else 1)  # as cnnkit.train.loop evaluates
    aug += [f"{views} test views"] * (views > 1)
    line = (
        f"{cfg.model} on {cfg.dataset} ({len(data.train_y):,} images {c}x{h}x{w}, {data.num_classes} classes): "
        f"{cfg.epochs} epochs, batch {cfg.batch_size} ({_why(sources, 'batch_size')}), "
        f"lr {cfg.lr:.4g} ({_why(sources, 'lr')}), {_PRECISION.get(cfg.amp, cfg.amp)} ({_why(sources, 'amp')}), "
        f"warm-up {round(cfg.warmup_epochs * steps)} steps, "
        f"{', '.join(aug)}; run folder {out}"
    )
    if cfg.dataset == "imagefolder" and cfg.hflip and sources and sources.get("hflip", "").startswith("data"):
        line += " (flips: an image folder is taken for natural images; --hflip 0 if a flip changes a label)"
    return line
