"""The model registry: ``register_model``, ``list_models`` and ``create_model``.

After torchvision's ``models/_api.py``: a duplicate name raises (timm only
warns), unknown names raise with the closest matches, and ``list_models`` filters
with fnmatch patterns (``list_models("resnet*")``).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = [
    "ModelInfo",
    "create_model",
    "get_model_info",
    "list_models",
    "load_torchvision_weights",
    "register_model",
]

F = TypeVar("F", bound=Callable[..., nn.Module])
# (torchvision's checkpoint, the freshly built model) -> the checkpoint as the model names it
StateDictRemap = Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model besides its builder."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    torchvision: str | None = None  # torchvision builder of the same architecture, if any
    remap_state_dict: StateDictRemap | None = None  # the family's fix-up of torchvision's checkpoint


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *, name: str | None = None, torchvision: str | None = None, remap_state_dict: StateDictRemap | None = None
) -> Callable[[F], F]:
    """Register a public builder under ``name`` (default: the function's name).

    ``torchvision`` names torchvision's builder of the same architecture; such
    models share torchvision's ``state_dict`` and can load its weights.
    ``remap_state_dict(state_dict, model)`` is the family's hook that adapts torchvision's
    checkpoint to the built model before ``pretrained=True`` loads it (old key names, heads
    the model was built without); the default loads the checkpoint as it is.
    """

    def wrap(fn: F) -> F:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered (by {_REGISTRY[key].builder.__module__})")
        family = fn.__module__.rsplit(".", 1)[-1]
        _REGISTRY[key] = ModelInfo(key, fn, family, torchvision, remap_state_dict)
        return fn

    return wrap


def _ensure_loaded() -> None:
    # Importing the families registers them; done on first use, not at `import cnnkit`.
    from cnnkit import models  # noqa: F401


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Names of the registered models in natural order (resnet18 before resnet101), filtered by
    an fnmatch ``pattern``; with ``pretrained``, only those with torchvision's ImageNet weights
    (timm's ``list_models(pretrained=True)``)."""
    _ensure_loaded()
    names = sorted(_REGISTRY, key=_natural_key)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if pretrained:
        names = [n for n in names if _REGISTRY[n].torchvision is not None]
    return names


def _natural_key(name: str) -> list[int | str]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def get_model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``; unknown names raise with the closest matches."""
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (`cnnkit models` lists all {len(_REGISTRY)})")
    return _REGISTRY[name]


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    pretrained: bool = False,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    global_pool: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name``.

    ``pretrained=True`` loads torchvision's ImageNet weights through torchvision's
    own weight enums (downloaded and cached under ``$TORCH_HOME`` when a network is
    there). With another ``num_classes``, ``in_chans`` or ``small_input``, the
    tensors whose shapes differ (classifier, stem) keep their fresh initialisation,
    as when fine-tuning. As timm's: ``features_only`` returns the map at the end of each
    resolution (``out_indices`` picks some; ``.feature_info`` says their channels and
    reductions), ``global_pool`` (``avg``, ``max``) sets the pooling before the classifier,
    and the model has ``get_classifier()``, ``reset_classifier()`` and ``pretrained_cfg``
    (:mod:`cnnkit.models.api`).
    """
    info = get_model_info(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1; got {in_chans}")
    if out_indices is not None and not features_only:
        raise ValueError("out_indices applies with features_only=True")
    from cnnkit.models import api

    def build() -> nn.Module:
        return info.builder(num_classes=num_classes, in_chans=in_chans, small_input=small_input, **kwargs)

    model = build()
    model.model_name = name  # type: ignore[assignment]
    if global_pool is not None:
        api.set_global_pool(model, global_pool)
    if isinstance(model, api.ZooModel):
        model._cfg = api.model_cfg(
            name, info.torchvision, in_chans, small_input, num_classes, api._classifier_name(model)
        )
    if pretrained:
        if info.torchvision is None:
            raise ValueError(
                f"no pretrained weights for {name!r}: torchvision has no such architecture "
                f"(pretrained models: {', '.join(n for n in list_models() if _REGISTRY[n].torchvision)})"
            )
        state = dict(_torchvision_state_dict(info.torchvision))
        if info.remap_state_dict is not None:
            state = info.remap_state_dict(state, model)
        load_torchvision_weights(model, state, strict=False)
    if features_only:
        return api.features_only(model, build, out_indices, in_chans)
    return model


def _torchvision_state_dict(tv_name: str) -> Mapping[str, torch.Tensor]:
    from torchvision.models import get_model_weights

    weights = get_model_weights(tv_name).DEFAULT
    try:
        state: Mapping[str, torch.Tensor] = weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise RuntimeError(
            f"could not load torchvision's {weights} ({e.__class__.__name__}: {e}); with no network, "
            f"put the file {weights.url.rsplit('/', 1)[-1]} in {torch.hub.get_dir()}/checkpoints/"
        ) from e
    return state


def load_torchvision_weights(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True
) -> list[str]:
    """Load a torchvision ``state_dict`` into the cnnkit model of the same architecture.

    The keys are identical by construction, so no mapping is needed. With
    ``strict=True`` every key and shape must match; with ``strict=False`` tensors
    whose shapes differ (a new classifier or stem) are skipped and their names
    returned. Unknown keys always raise.
    """
    own = model.state_dict()
    unexpected = sorted(set(state_dict) - set(own))
    missing = sorted(set(own) - set(state_dict))
    if unexpected or missing:
        raise ValueError(
            f"state_dict does not fit {type(model).__name__}: "
            f"unexpected keys {unexpected[:5]}, missing keys {missing[:5]}"
        )
    skipped = [k for k, v in state_dict.items() if v.shape != own[k].shape]
    if skipped and strict:
        k = skipped[0]
        raise ValueError(
            f"shape mismatch for {k}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)}"
        )
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in skipped}, strict=False)
    return skipped
