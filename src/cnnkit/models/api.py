"""timm's model API where it applies to CNNs, for every family of the zoo.

- :class:`ZooModel`, the base of every zoo network: ``get_classifier()`` and
  ``reset_classifier(num_classes, global_pool=None)`` (timm's names; 0 classes leaves the
  pooled features), and ``pretrained_cfg`` (set by ``create_model``: the input size, mean and
  std the model expects, the torchvision weights it maps to);
- ``create_model(..., features_only=True, out_indices=...)``: a :class:`FeatureExtractor`, the
  map at the end of each resolution (timm's ``features_only``), with ``feature_info`` (each
  feature's module, channels and reduction). Found by one forward pass on the ``meta`` device
  with hooks, so every family gets it without a table of its stages: for each input-to-map
  reduction the module that finishes last at it, before the global pooling. Hand-written:
  torchvision's ``create_feature_extractor`` needs the node names (FX), which differ per family;
- ``create_model(..., global_pool="max")``: the global pooling before the classifier, ``avg``
  (every family's default) or ``max``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["FeatureExtractor", "FeatureInfo", "ZooModel", "set_global_pool"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights' normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)


def _classifier_name(model: nn.Module) -> str:
    head = getattr(model, "_head", None)  # (name, in_features) once reset_classifier has run
    if head is not None:
        return str(head[0])
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear classifier")
    return linears[-1]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


class ZooModel(nn.Module):
    """The zoo's networks: timm's ``get_classifier``, ``reset_classifier`` and ``pretrained_cfg``."""

    _cfg: dict[str, Any] | None = None  # set by create_model
    _head: tuple[str, int] | None = None  # the classifier's place and input width, once reset

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """What input the model expects (size, mean, std: torchvision's ImageNet normalisation for
        3 channels) and the torchvision weights it maps to (None: none); timm's ``pretrained_cfg``."""
        if self._cfg is None:
            raise AttributeError("pretrained_cfg is set by cnnkit.create_model")
        cfg = dict(self._cfg)
        tv, cfg["torchvision_weights"] = cfg["torchvision"], None
        if tv is not None:
            from torchvision.models import get_model_weights

            cfg["torchvision_weights"] = str(get_model_weights(tv).DEFAULT)
        return cfg

    def get_classifier(self) -> nn.Module:
        """The final linear layer (timm's name): ``fc``, ``classifier[-1]``..."""
        return self.get_submodule(_classifier_name(self))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for ``num_classes`` (0: none, the model returns its pooled
        features), and optionally another ``global_pool`` (``avg`` or ``max``)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0; got {num_classes}")
        name = _classifier_name(self)
        if self._head is None:
            old = self.get_submodule(name)
            assert isinstance(old, nn.Linear)
            self._head = (name, old.in_features)
        param = next(self.parameters())
        new: nn.Module = nn.Identity()
        if num_classes:
            new = nn.Linear(self._head[1], num_classes, device=param.device, dtype=param.dtype)
        _replace(self, name, new)
        if global_pool is not None:
            set_global_pool(self, global_pool)


def model_cfg(
    name: str, torchvision: str | None, in_chans: int, small_input: bool, num_classes: int, classifier: str
) -> dict[str, Any]:
    """The plain data behind :attr:`ZooModel.pretrained_cfg`."""
    return {
        "architecture": name,
        "input_size": (in_chans, 32, 32) if small_input else (in_chans, 224, 224),
        "mean": IMAGENET_MEAN if in_chans == 3 else (0.5,) * in_chans,
        "std": IMAGENET_STD if in_chans == 3 else (0.5,) * in_chans,
        "num_classes": num_classes,
        "classifier": classifier,
        "torchvision": torchvision,
    }


def set_global_pool(model: nn.Module, kind: str) -> None:
    """Make the model's global pooling (its last ``AdaptiveAvgPool2d`` to 1x1) ``avg`` or ``max``."""
    if kind not in ("avg", "max"):
        raise ValueError(f"global_pool must be 'avg' or 'max'; got {kind!r}")
    pools = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and m.output_size in (1, (1, 1))
    ]
    if not pools:
        raise ValueError(
            f"{type(model).__name__} has no global pooling to change: its classifier takes a fixed-size map"
        )
    _replace(model, pools[-1], nn.AdaptiveMaxPool2d(1) if kind == "max" else nn.AdaptiveAvgPool2d(1))


class FeatureInfo(Sequence[dict[str, Any]]):
    """timm's ``feature_info``: per feature its ``module``, ``num_chs`` and ``reduction``."""

    def __init__(self, info: list[dict[str, Any]]) -> None:
        self._info = info

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        return self._info[i]

    def __len__(self) -> int:
        return len(self._info)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._info)

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self._info]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self._info]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self._info]

    def __repr__(self) -> str:
        return f"FeatureInfo({self._info})"


class _Enough(Exception):  # control flow: every asked-for map is taken
    pass


def _find_features(model: nn.Module, in_chans: int, size: int) -> list[dict[str, Any]]:
    """The map at the end of each resolution: ``model`` (on the meta device) runs once with hooks;
    among the modules of the shallowest nesting depth whose outputs show every reduction of the
    input, the one that finishes last at each reduction, before the classifier. (The shallowest:
    a deeper module can finish after its stage, inside the next block before that block
    downsamples, as an SE-ResNeXt bottleneck's first 1x1 convolution.) Maps of 1x1 (an SE
    gate's squeeze) and adaptive pools (the head) are not features."""
    classifier = _classifier_name(model)
    calls: dict[str, int] = {}
    seen: list[dict[str, Any]] = []
    done = False

    def hook(name: str, m: nn.Module) -> Any:
        def fn(_: nn.Module, __: Any, out: Any) -> None:
            nonlocal done
            k = calls[name] = calls.get(name, 0) + 1
            done = done or name == classifier
            pool = isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d)
            if (
                not done
                and not pool
                and isinstance(out, torch.Tensor)
                and out.dim() == 4
                and out.shape[-1] > 1
            ):
                r = size // out.shape[-1]
                seen.append({"module": name, "call": k, "num_chs": int(out.shape[1]), "reduction": r})

        return fn

    handles = [m.register_forward_hook(hook(name, m)) for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, size, size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    every = {f["reduction"] for f in seen}
    depth = 1
    while {f["reduction"] for f in seen if f["module"].count(".") < depth} != every:
        depth += 1
    last = {f["reduction"]: f for f in seen if f["module"].count(".") < depth}
    return [last[r] for r in sorted(last)]


class FeatureExtractor(nn.Module):
    """The zoo model's map at the end of each resolution (timm's ``features_only``); the layers
    after the last asked-for map do not run. ``feature_info`` describes the returned maps."""

    def __init__(
        self, model: nn.Module, info: list[dict[str, Any]], out_indices: Sequence[int] | None
    ) -> None:
        super().__init__()
        n = len(info)
        wanted = list(range(n)) if out_indices is None else list(out_indices)
        if any(not -n <= i < n for i in wanted):
            raise ValueError(f"out_indices {tuple(wanted)} out of range: the model has {n} feature maps")
        indices = [i % n for i in wanted]
        self.model = model
        self.feature_info = FeatureInfo(
            [{k: info[i][k] for k in ("module", "num_chs", "reduction")} for i in indices]
        )
        self._wanted = [(info[i]["module"], info[i]["call"]) for i in indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taken: dict[tuple[str, int], torch.Tensor] = {}
        calls: dict[str, int] = {}
        names = {name for name, _ in self._wanted}

        def hook(name: str) -> Any:
            def fn(_: nn.Module, __: Any, out: torch.Tensor) -> None:
                k = calls[name] = calls.get(name, 0) + 1
                if (name, k) in self._wanted:
                    taken[(name, k)] = out
                    if len(taken) == len(set(self._wanted)):
                        raise _Enough

            return fn

        handles = [
            m.register_forward_hook(hook(name)) for name, m in self.model.named_modules() if name in names
        ]
        try:
            self.model(x)
        except _Enough:
            pass
        finally:
            for h in handles:
                h.remove()
        return [taken[w] for w in self._wanted]


def features_only(
    model: nn.Module, build: Any, out_indices: Sequence[int] | None, in_chans: int
) -> FeatureExtractor:
    """``model`` wrapped as a :class:`FeatureExtractor`; ``build()`` gives its twin, traced on meta."""
    with torch.device("meta"):
        twin = build()
    return FeatureExtractor(model, _find_features(twin, in_chans, 224), out_indices)
