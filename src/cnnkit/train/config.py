"""Training configuration: a typed, frozen dataclass, resolved once, checked before any data.

Precedence, lowest first: the dataclass defaults, a named ``--recipe``, ``-c config.yaml``,
command-line flags, then a torchrun restart (which continues the run in ``--output``).
:func:`resolve_config` applies them all; the result is frozen, and the trainer only reads
it. ``--resume RUN`` takes the run's own ``config.yaml`` with the given flags on top
(:func:`resume_config`). :func:`validate_config` checks every value that can be checked
before a dataset is read, one line per problem. Flag names follow timm's where timm has
one (``--model --lr --sched --warmup-epochs --mixup --cutmix --drop-path --smoothing --amp
--channels-last --resume --output --initial-checkpoint``). The resolved config is written
as ``config.yaml`` in the run folder (:mod:`cnnkit.run`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "RECIPES",
    "TrainConfig",
    "add_train_args",
    "config_from_args",
    "config_with_sources",
    "load_config",
    "model_kwargs",
    "parse_kwargs",
    "resolve_config",
    "resume_config",
    "validate_config",
]


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of ``cnnkit train``; each field is also a flag (``warmup_epochs`` -> ``--warmup-epochs``)."""

    # what to train, on what
    model: str = field(default="fmnet", metadata={"help": "zoo model name (`cnnkit models`)"})
    dataset: str = field(
        default="fashion-mnist",
        metadata={"help": "fashion-mnist, mnist, kmnist, cifar10, cifar100, imagefolder, synthetic"},
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "folder with the dataset files (else $CNNKIT_DATA, system copy, cache)"},
    )
    train_subset: int | None = field(
        default=None, metadata={"help": "train on a fixed, seeded subset of N images"}
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "resize both splits to N x N at load, bilinear with antialiasing (imagefolder: shorter "
            "side, then a centre crop); default: as stored (imagefolder: 64)"
        },
    )
    small_input: bool | None = field(
        default=None, metadata={"help": "small-image stem; default: on for inputs under 64 px"}
    )
    test_subset: int | None = field(
        default=None, metadata={"help": "evaluate on a fixed, seeded subset of N test images (quick runs)"}
    )
    pretrained: bool = field(default=False, metadata={"help": "start from torchvision's ImageNet weights"})
    initial_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "start from the weights of a run folder or its model.safetensors (fine-tuning; "
            "a decomposed run keeps its structure)"
        },
    )
    model_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "extra model arguments as KEY=VALUE (timm's --model-kwargs), e.g. widths=[16,32,64]"
        },
    )
    # model ingredients
    norm: str | None = field(
        default=None, metadata={"help": "norm layer: batch, layer, instance, group, none"}
    )
    act: str | None = field(default=None, metadata={"help": "activation: relu, leaky_relu, swish, gelu, ..."})
    init: str = field(default="default", metadata={"help": "weight init scheme (cnnkit.layers.init)"})
    whiten: bool = field(
        default=False,
        metadata={
            "help": "make the first convolution a frozen patch-whitening layer computed from the "
            "training images (airbench's stem)"
        },
    )
    whiten_bias_epochs: int | None = field(
        default=None,
        metadata={
            "help": "with --whiten: train the stem's bias for this many epochs, then freeze it "
            "(airbench: 3); default: the whole run"
        },
    )
    drop: float = field(default=0.0, metadata={"help": "dropout rate before the classifier"})
    drop_path: float = field(
        default=0.0, metadata={"help": "stochastic depth rate of the last block (linear decay)"}
    )
    # optimisation
    epochs: int = field(default=10, metadata={"help": "epochs to train"})
    batch_size: int = field(default=256, metadata={"help": "global batch size"})
    opt: str = field(default="sgd", metadata={"help": "sgd, adam, adamw"})
    lr: float = field(default=0.1, metadata={"help": "peak learning rate, or auto: a range test chooses it"})
    lr_find: bool = field(
        default=False,
        metadata={"help": "choose the peak rate by a learning-rate range test of 100 steps (= --lr auto)"},
    )
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum / Adam beta1"})
    nesterov: bool = field(default=True, metadata={"help": "Nesterov momentum for SGD"})
    weight_decay: float = field(default=5e-4, metadata={"help": "weight decay"})
    decay_norm_bias: bool = field(default=False, metadata={"help": "also decay norm weights and biases"})
    sched: str = field(default="cosine", metadata={"help": "constant, step, multistep, exponential, cosine"})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warmup length in epochs"})
    min_lr: float = field(default=0.0, metadata={"help": "cosine floor eta_T"})
    decay_epochs: float = field(default=30.0, metadata={"help": "step schedule: epochs between decays"})
    decay_milestones: list[int] = field(
        default_factory=lambda: [30, 60, 90], metadata={"help": "multistep schedule: epochs"}
    )
    decay_rate: float = field(
        default=0.1, metadata={"help": "step/multistep factor; exponential: per-epoch factor"}
    )
    clip_grad: float | None = field(default=None, metadata={"help": "clip the gradient norm to this value"})
    model_ema: bool = field(
        default=False, metadata={"help": "evaluate an exponential moving average of the weights"}
    )
    model_ema_decay: float = field(default=0.999, metadata={"help": "EMA decay per step"})
    model_ema_warmup: bool = field(
        default=True, metadata={"help": "EMA decay min(decay, (1+t)/(10+t)) at step t (timm's warm-up)"}
    )
    # data ingredients
    crop_pad: int = field(default=0, metadata={"help": "random crop with this zero padding (translation)"})
    hflip: float = field(default=0.0, metadata={"help": "horizontal flip probability"})
    cutout: int = field(default=0, metadata={"help": "cutout square size in pixels"})
    mixup: float = field(default=0.0, metadata={"help": "mixup alpha (0: off)"})
    cutmix: float = field(default=0.0, metadata={"help": "cutmix alpha (0: off)"})
    smoothing: float = field(default=0.0, metadata={"help": "label smoothing"})
    tta: bool = field(
        default=False,
        metadata={
            "help": "test-time augmentation: average with the mirrored view (where trained with --hflip)"
        },
    )
    tta_shift: int = field(
        default=0,
        metadata={
            "help": "test-time augmentation: also average views shifted by +-N px diagonally (airbench)"
        },
    )
    precise_bn: int = field(
        default=0,
        metadata={
            "help": "before each evaluation, re-estimate batch-norm statistics on N training images (0: off)"
        },
    )
    # machine
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda"})
    amp: str = field(
        default="none",
        metadata={
            "help": "mixed precision: none, bf16, fp16 (cuda), auto (bf16 where it is native and faster); "
            "alone, as timm's switch: on, in --amp-dtype"
        },
    )
    amp_dtype: str | None = field(
        default=None, metadata={"help": "timm's --amp-dtype: bfloat16 or float16 (implies --amp)"}
    )
    channels_last: bool = field(
        default=False, metadata={"help": "NHWC memory format (faster with oneDNN/cuDNN)"}
    )
    fused: bool = field(
        default=True,
        metadata={
            "help": "cnnkit's fused CPU kernels where a layer matches them: [max-pool ->] batch norm -> "
            "ReLU, a frozen stem's bias -> ReLU, small-map 3x3 weight gradients (cnnkit.layers.fused)"
        },
    )
    threads: int | None = field(default=None, metadata={"help": "intra-op threads (default: free cores)"})
    deterministic: bool = field(
        default=False, metadata={"help": "deterministic algorithms (bitwise-repeatable runs)"}
    )
    seed: int = field(default=0, metadata={"help": "random seed (data order, augmentation, init)"})
    # run folder
    output: str | None = field(
        default=None, metadata={"help": "run folder (default runs/<model>-<dataset>-<time>)"}
    )
    resume: str | None = field(default=None, metadata={"help": "run folder to continue"})
    log: str | None = field(default=None, metadata={"help": "extra logger: tensorboard"})
    checkpoint_every: int = field(
        default=0, metadata={"help": "also checkpoint every N steps (0: each epoch only)"}
    )
    on_nonfinite: str = field(
        default="stop", metadata={"help": "NaN/Inf loss or gradient: stop, or skip the step"}
    )
    progress: bool | None = field(
        default=None, metadata={"help": "progress bar (default: when on a terminal)"}
    )
    recipe: str | None = field(
        default="default",
        metadata={
            "help": "named recipe under the YAML and flags: default, accurate (fmnet 2x wide, 18 epochs), "
            "plain (no ingredients beyond the fields' defaults)"
        },
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Named recipes: documented configurations of the same trainer (issue "Speed").
# `cnnkit train` with no arguments runs "default": fmnet on Fashion-MNIST for 10 epochs, SGD
# with Nesterov momentum, half an epoch of warm-up then cosine, random mirror, label smoothing
# 0.1, an EMA of the weights, six test-time views (mirror and +-1 px diagonal shifts), the
# precision the machine runs fastest and channels_last. For fmnet (the model it was tuned
# for) also airbench's frozen patch-whitening stem, its bias trained for the first 2 epochs
# only (airbench's schedule; frozen, a step skips the stem's backward), and a faster fmnet:
# ReLU, no batch norm in the stem. No random translation: Fashion-MNIST's items are centred
# and in a short run the shifted copies cost more fit than they buy (+1.2 points without it
# at 4 epochs). 10 epochs rather than 8: at 8 one seed of three ended at 93.99%; 94% comes
# at epoch 6-8 either way (cnnkit's fused CPU kernels made an epoch ~6 s on 2 AMX cores).
# Measured: benchmarks/results/time_to_accuracy_<kind>.md, speed_ablation_<kind>.md.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {
        "model_kwargs": {"stem_norm": False},
        "act": "relu",
        "whiten": True,
        "whiten_bias_epochs": 2,
        "epochs": 10,
        "lr": 0.2,
        "warmup_epochs": 0.5,
        "hflip": 0.5,
        "crop_pad": 0,
        "smoothing": 0.1,
        "model_ema": True,
        "tta": True,
        "tta_shift": 1,
        "precise_bn": 512,
        "amp": "auto",
        "channels_last": True,
    },
    # "accurate": fmnet at twice the widths (64/128/256) with the default's stem, 18 epochs,
    # label smoothing 0.2, random 1 px translation, the EMA and the six test-time views. About
    # 4x the default recipe's mult-adds per image and 2.25x its epochs. Measured (seed 0): no
    # translation overfits (16 epochs: train 99.8%, test 94.86%), 2 px ends lower (20 epochs:
    # 94.83%), 1 px ends at 95.05% after 18 epochs; cutout 8 and a third conv per group
    # (fmnet group_depth=3) did not help within the time.
    "accurate": {
        "model": "fmnet",
        "model_kwargs": {"widths": [64, 128, 256], "stem_width": 16, "stem_norm": False},
        "act": "relu",
        "whiten": True,
        "epochs": 18,
        "lr": 0.2,
        "warmup_epochs": 1.0,
        "hflip": 0.5,
        "crop_pad": 1,
        "smoothing": 0.2,
        "model_ema": True,
        "model_ema_decay": 0.999,
        "tta": True,
        "tta_shift": 1,
        "precise_bn": 512,
        "amp": "auto",
        "channels_last": True,
    },
    "plain": {},
}
# The model a recipe's model-specific settings were tuned for, and those settings: another
# model gets the fields' defaults for them, then its family's rule (cnnkit.train.defaults).
# (--whiten is fmnet's: another model's first convolution may have more channels than a
# whitening of its patches fills.)
RECIPE_TUNED: dict[str, tuple[str, tuple[str, ...]]] = {
    "default": ("fmnet", ("model_kwargs", "act", "whiten", "whiten_bias_epochs", "lr")),
    "accurate": ("fmnet", ("model_kwargs", "act", "whiten", "lr")),
}


def _field_type(f: dataclasses.Field[Any]) -> tuple[type, bool]:
    """The scalar type of a field (``dict`` for mappings) and whether it is a list."""
    hints = typing.get_type_hints(TrainConfig)
    t = hints[f.name]
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    if typing.get_origin(t) is list:
        return typing.get_args(t)[0], True
    if typing.get_origin(t) is dict:
        return dict, False
    return t, False


def _optional(f: dataclasses.Field[Any]) -> bool:
    t = typing.get_type_hints(TrainConfig)[f.name]
    return type(None) in typing.get_args(t)


def parse_kwargs(items: list[str]) -> dict[str, Any]:
    """``["widths=[16,32,64]", "stem_width=16"]`` -> ``{"widths": [16, 32, 64], "stem_width": 16}``.

    Values are read as YAML scalars and lists (``yaml.safe_load``: plain data, never code).
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-kwargs takes KEY=VALUE pairs; got {item!r}")
        try:
            out[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError as e:
            raise ValueError(f"--model-kwargs {key}: cannot read {value!r} ({str(e).splitlines()[0]})") from e
    return out


class _KeyValueAction(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | typing.Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        items = [values] if isinstance(values, str) else list(values or [])
        try:
            setattr(namespace, self.dest, parse_kwargs(items))
        except ValueError as e:
            parser.error(str(e))


# the values the default recipe fits to the model and the data (cnnkit.train.defaults)
_FITTED = {
    "batch_size": "256, halved until an epoch has 25 steps",
    "lr": "the model family's rate scaled to the batch (fmnet: 0.2 at 256)",
    "hflip": "0.5 where a flip keeps the label (Fashion-MNIST, CIFAR, image folders), else 0",
    "warmup_epochs": "0.5, at least min(100 steps, 10%% of the run)",
}


def _default_text(name: str, value: Any) -> str:
    """What ``cnnkit train --help`` says a flag defaults to: what the default recipe runs."""
    if name in _FITTED:
        return f"{_FITTED[name]}; see --print-config"
    if name in RECIPES["default"] and RECIPES["default"][name] != value:
        return f"{RECIPES['default'][name]} (--recipe plain: {value})"
    return str(value).replace("%", "%%")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """One flag per field; unset flags stay absent so a YAML file or recipe can supply them."""
    parser.add_argument("-c", "--config", help="YAML file of defaults (flags override it)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind, is_list = _field_type(f)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        help_ = f"{f.metadata.get('help', '')} (default: {_default_text(f.name, default)})"
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_
            )
        elif kind is dict:
            parser.add_argument(
                flag,
                nargs="*",
                action=_KeyValueAction,
                metavar="KEY=VALUE",
                default=argparse.SUPPRESS,
                help=help_,
            )
        elif f.name == "amp":  # timm's switch (`--amp`), or a value
            parser.add_argument(flag, nargs="?", const="on", default=argparse.SUPPRESS, help=help_)
        else:
            parser.add_argument(
                flag,
                type=_rate_or_auto if f.name == "lr" else kind,
                nargs="+" if is_list else None,
                default=argparse.SUPPRESS,
                help=help_,
            )


_AMP_DTYPES = {"bfloat16": "bf16", "float16": "fp16"}


def _rate_or_auto(text: str) -> float | str:
    """``--lr``: a number, or ``auto`` (the range test, :mod:`cnnkit.train.lr_find`)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto; got {text!r}") from None


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; unknown keys raise with the closest field names."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as e:
        raise ValueError(f"cannot read config {p}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{p} must hold a mapping of option: value; got {type(data).__name__}")
    _check_keys(data, str(p))
    _check_types(data, str(p))
    return data


def _check_keys(data: dict[str, Any], where: str) -> None:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"{where}: unknown option {key!r}{hint}")


def _check_types(data: dict[str, Any], where: str) -> None:
    """YAML values must have their field's type (an int is accepted for a float), so that a
    quoted number or a list in the wrong place fails here, not inside a training step."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for key, value in data.items():
        f = fields[key]
        kind, is_list = _field_type(f)
        if value is None and _optional(f):
            continue

        def ok(v: Any, kind: type = kind) -> bool:
            if kind is float:
                return isinstance(v, int | float) and not isinstance(v, bool)
            if kind is int:
                return isinstance(v, int) and not isinstance(v, bool)
            return isinstance(v, kind)

        good = isinstance(value, list) and all(ok(v) for v in value) if is_list else ok(value)
        if not good:
            want = (
                f"a list of {kind.__name__}" if is_list else ("a mapping" if kind is dict else kind.__name__)
            )
            raise ValueError(f"{where}: {key} must be {want}; got {value!r}")


def config_from_args(args: argparse.Namespace | dict[str, Any]) -> TrainConfig:
    """Merge defaults < recipe < YAML < flags into a :class:`TrainConfig`."""
    return config_with_sources(args)[0]


def config_with_sources(args: argparse.Namespace | dict[str, Any]) -> tuple[TrainConfig, dict[str, str]]:
    """:func:`config_from_args`, and where each value came from: default, recipe, file or flag.

    A recipe's model-specific settings (``RECIPE_TUNED``) apply only to the model they were
    tuned for; for another model they fall back to the fields' defaults.
    """
    given = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    yaml_path = given.pop("config", None)
    from_yaml = load_config(yaml_path) if yaml_path else {}
    recipe = given.get("recipe", from_yaml.get("recipe", TrainConfig.recipe))
    merged: dict[str, Any] = {}
    if recipe is not None:
        if recipe not in RECIPES:
            close = difflib.get_close_matches(recipe, list(RECIPES), n=3)
            raise ValueError(
                f"unknown recipe {recipe!r}"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + f"; choose from {', '.join(RECIPES)}"
            )
        merged.update(RECIPES[recipe])
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    sources = dict.fromkeys(names, "default") | dict.fromkeys(merged, "recipe")
    merged.update(from_yaml)
    sources.update(dict.fromkeys(from_yaml, "file"))
    flags = {k: v for k, v in given.items() if k in names}
    if flags.get("lr") == "auto":  # the range test chooses it; until then, the default's rule
        del flags["lr"]
        flags["lr_find"] = True
        sources["lr"] = "auto"
    if flags.get("amp") == "on" or (flags.get("amp_dtype") and "amp" not in flags):  # timm's switch
        flags["amp"] = _AMP_DTYPES.get(flags.get("amp_dtype") or "bfloat16", "?")
    # a recipe's settings for the model it was tuned for do not reach another model, not even
    # merged under a flag's --model-kwargs
    tuned_for, tuned = RECIPE_TUNED.get(recipe or "", (None, ()))
    if flags.get("model", merged.get("model", TrainConfig.model)) != tuned_for:
        for key in tuned:
            if sources[key] == "recipe":
                del merged[key]
                sources[key] = "default"
    if "model_kwargs" in flags:  # per key: flags override the file's entries, others stay
        flags["model_kwargs"] = {**merged.get("model_kwargs", {}), **flags["model_kwargs"]}
    merged.update(flags)
    sources.update(dict.fromkeys(flags, "flag"))
    _check_keys(merged, "config")
    return TrainConfig(**merged), sources


def resume_config(run_dir: str | Path, overrides: dict[str, Any]) -> TrainConfig:
    """The config of the run in ``run_dir`` (its ``config.yaml``), with ``overrides`` on top
    (e.g. a larger ``epochs`` to train on)."""
    from cnnkit.run import read_config  # here, not at the top: cnnkit.run loads torch, `--help` does not

    try:
        saved = read_config(run_dir)
    except ValueError as e:
        raise ValueError(f"{e}; check --resume") from e
    _check_keys(saved, str(Path(run_dir) / "config.yaml"))
    _check_types(saved, str(Path(run_dir) / "config.yaml"))
    given = {k: v for k, v in overrides.items() if k not in ("config", "resume", "output")}
    return TrainConfig(**{**saved, **given, "resume": str(run_dir), "output": str(run_dir)})


def resolve_config(given: dict[str, Any]) -> tuple[TrainConfig, dict[str, str]]:
    """The one resolved config of a ``cnnkit train`` command line (``given``: its parsed flags),
    and where each value came from.

    ``--resume RUN``: the run's config with the flags on top. Else defaults < recipe < YAML
    < flags; then, when torchrun restarts the workers of a run that has a checkpoint in
    ``--output`` (``TORCHELASTIC_RESTART_COUNT`` > 0), the run continues from it. The values
    that depend on the data are fitted by the trainer (:func:`cnnkit.train.defaults.adapt`).
    """
    if given.get("resume"):
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        flags = {k for k in given if k in names and k not in ("resume", "output")}
        sources = {k: ("flag" if k in flags else "run") for k in names}
        return resume_config(given["resume"], given), sources
    cfg, sources = config_with_sources(given)
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restarts and cfg.output and (Path(cfg.output) / "checkpoint.pt").exists():
        cfg = dataclasses.replace(cfg, resume=cfg.output)
        sources["resume"] = "torchrun restart"
    return cfg, sources


# ---------------------------------------------------------------- checks before any data


def validate_config(cfg: TrainConfig) -> None:
    """Check every value that can be checked before any data is read; one clear line per problem."""
    # imports in this module's functions: `cnnkit --help` reads its flags, and must not load torch
    from cnnkit.data.sources import check_dataset_name
    from cnnkit.layers.act import get_act
    from cnnkit.layers.init import INIT_SCHEMES
    from cnnkit.layers.norm import get_norm_layer
    from cnnkit.models.registry import get_model_info
    from cnnkit.train.optim import OPTIMIZERS
    from cnnkit.train.schedule import SCHEDULES

    get_model_info(cfg.model)
    check_dataset_name(cfg.dataset)
    for name, value in (("--epochs", cfg.epochs), ("--batch-size", cfg.batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"--lr must be a positive number; got {cfg.lr}")
    for name, p in (("--drop", cfg.drop), ("--drop-path", cfg.drop_path), ("--smoothing", cfg.smoothing)):
        if not 0 <= p < 1:
            raise ValueError(f"{name} must be in [0, 1); got {p}")
    if not 0 <= cfg.hflip <= 1:
        raise ValueError(f"--hflip is a probability in [0, 1]; got {cfg.hflip}")
    for name, v in (
        ("--mixup", cfg.mixup),
        ("--cutmix", cfg.cutmix),
        ("--crop-pad", cfg.crop_pad),
        ("--cutout", cfg.cutout),
        ("--tta-shift", cfg.tta_shift),
        ("--weight-decay", cfg.weight_decay),
        ("--warmup-epochs", cfg.warmup_epochs),
        ("--min-lr", cfg.min_lr),
        ("--precise-bn", cfg.precise_bn),
    ):
        if v < 0:
            raise ValueError(f"{name} must be >= 0; got {v}")
    for name, n in (
        ("--train-subset", cfg.train_subset),
        ("--test-subset", cfg.test_subset),
        ("--image-size", cfg.image_size),
        ("--threads", cfg.threads),
    ):
        if n is not None and n < 1:
            raise ValueError(f"{name} must be >= 1; got {n}")
    if cfg.checkpoint_every < 0:
        raise ValueError(f"--checkpoint-every must be >= 0 (0: each epoch only); got {cfg.checkpoint_every}")
    if cfg.clip_grad is not None and not cfg.clip_grad > 0:
        raise ValueError(f"--clip-grad must be > 0; got {cfg.clip_grad}")
    if cfg.warmup_epochs >= cfg.epochs and cfg.warmup_epochs > 0:
        raise ValueError(
            f"--warmup-epochs ({cfg.warmup_epochs}) must be shorter than --epochs ({cfg.epochs})"
        )
    for flag, choice, known in (("--opt", cfg.opt, OPTIMIZERS), ("--sched", cfg.sched, SCHEDULES)):
        if choice not in known:
            raise ValueError(f"unknown {flag} {choice!r}; choose from {', '.join(known)}")
    _check_machine(cfg)
    if cfg.init not in INIT_SCHEMES:
        raise ValueError(f"unknown --init {cfg.init!r}; choose from {', '.join(INIT_SCHEMES)}")
    if cfg.norm is not None:
        get_norm_layer(cfg.norm)
    if cfg.act is not None:
        get_act(cfg.act)
    if cfg.log not in (None, "tensorboard"):
        raise ValueError(f"--log must be tensorboard; got {cfg.log!r}")
    if not 0 < cfg.model_ema_decay < 1:
        raise ValueError(f"--model-ema-decay must be in (0, 1); got {cfg.model_ema_decay}")
    if cfg.whiten_bias_epochs is not None and cfg.whiten_bias_epochs < 0:
        raise ValueError(f"--whiten-bias-epochs must be >= 0; got {cfg.whiten_bias_epochs}")
    if cfg.whiten and (cfg.pretrained or cfg.initial_checkpoint is not None):
        raise ValueError(
            "--whiten replaces the first convolution's weights, so it cannot start from trained ones: "
            "drop --whiten or --pretrained/--initial-checkpoint"
        )
    if cfg.initial_checkpoint is not None:
        _check_initial_checkpoint(cfg)
    else:
        _check_model_args(cfg)


def _check_machine(cfg: TrainConfig) -> None:
    import torch

    if cfg.amp_dtype is not None and cfg.amp_dtype not in _AMP_DTYPES:
        raise ValueError(f"--amp-dtype must be bfloat16 or float16; got {cfg.amp_dtype!r}")
    if cfg.amp not in ("none", "bf16", "fp16", "auto"):
        raise ValueError(f"--amp must be none, bf16, fp16 or auto (or alone, as a switch); got {cfg.amp!r}")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"--device must be auto, cpu or cuda; got {cfg.device!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available (use --device cpu)")
    if cfg.on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"--on-nonfinite must be stop or skip; got {cfg.on_nonfinite!r}")


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The model's constructor arguments beyond the data-given ones (classes, channels, stem)."""
    kwargs: dict[str, Any] = {}
    if cfg.norm is not None:
        kwargs["norm_layer"] = cfg.norm
    if cfg.act is not None:
        kwargs["act_layer"] = cfg.act
    if cfg.drop:
        kwargs["drop_rate"] = cfg.drop
    if cfg.drop_path:
        kwargs["drop_path_rate"] = cfg.drop_path
    for key, value in cfg.model_kwargs.items():
        if key in kwargs or key in ("num_classes", "in_chans", "small_input", "pretrained"):
            raise ValueError(
                f"--model-kwargs {key}=... duplicates a trainer option; set it with its own flag "
                "(--norm, --act, --drop, --drop-path, --small-input, --pretrained)"
            )
        kwargs[key] = value
    return kwargs


def _check_model_args(cfg: TrainConfig) -> None:
    """Build the model on the meta device (no memory, no data) so that an option the
    architecture does not take fails now rather than after the dataset is loaded."""
    import torch

    from cnnkit.models.registry import create_model

    kwargs = model_kwargs(cfg)
    if not kwargs:
        return
    try:
        with torch.device("meta"):
            create_model(cfg.model, small_input=bool(cfg.small_input), **kwargs)
    except TypeError as e:
        raise ValueError(f"{cfg.model} does not take {', '.join(kwargs)} ({e})") from e
    except (RuntimeError, NotImplementedError):
        return  # the model's init needs real tensors; the real build reports any problem


def _check_initial_checkpoint(cfg: TrainConfig) -> None:
    """``--initial-checkpoint`` names weights of this config's model, options included."""
    from cnnkit.run import read_meta, run_folder

    if cfg.pretrained:
        raise ValueError("--initial-checkpoint and --pretrained both give the starting weights; choose one")
    path = Path(cfg.initial_checkpoint or "")
    meta = read_meta(path if path.is_file() else run_folder(path))
    want = json.loads(json.dumps(model_kwargs(cfg)))  # as the metadata stores them (lists, not tuples)
    if meta.get("model") != cfg.model or meta.get("model_kwargs", {}) != want:
        raise ValueError(
            f"--initial-checkpoint {path} holds a {meta.get('model')} with {meta.get('model_kwargs', {})}; "
            f"this run trains a {cfg.model} with {want} (give the same --model and options)"
        )
