"""Fold inference-mode batch normalisation into the convolution before it.

In eval mode a batch-norm layer (Ioffe & Szegedy 2015; the lecture's "Batch
Normalization" slide) is a fixed per-channel affine map,
``y = gamma (z - mu) / sqrt(var + eps) + beta`` with the running ``mu`` and ``var``.
When ``z = W * x + b`` is a convolution's output used by nothing else, the two compose
into one convolution with

    ``W' = W gamma / sqrt(var + eps)`` (per output channel),
    ``b' = (b - mu) gamma / sqrt(var + eps) + beta``,

which saves a full pass over the activations at inference. (The same folding as
``torch.nn.utils.fusion.fuse_conv_bn_eval``, used by torch's quantisation fuser.)

:func:`fuse_bn` finds the pairs with ``torch.fx`` (a symbolic trace of the forward, so
it follows the real data flow and not the order of attributes), then folds each pair
in a copy of the model and puts ``nn.Identity`` where the norm layer was: the copy
keeps the model's class, attributes, input checks and module names (minus the norm
layers' parameters), so it behaves and prints like the original.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

__all__ = ["fold_conv_bn", "foldable_pairs", "fuse_bn"]


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn``'s inference-mode affine map into ``conv``'s weight and bias, in place."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"cannot fold {bn}: it keeps no running statistics (track_running_stats=False), "
            "so it normalises with batch statistics even in eval mode"
        )
    if bn.num_features != conv.out_channels:
        raise ValueError(f"cannot fold {bn} into {conv}: {bn.num_features} != {conv.out_channels} channels")
    with torch.no_grad():
        w = conv.weight
        scale = torch.rsqrt(bn.running_var.to(torch.float64) + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.to(torch.float64)
        shift = -bn.running_mean.to(torch.float64) * scale
        if bn.bias is not None:
            shift = shift + bn.bias.to(torch.float64)
        if conv.bias is not None:
            shift = shift + conv.bias.to(torch.float64) * scale
        shape = (-1,) + (1,) * (w.dim() - 1)
        w.copy_((w.to(torch.float64) * scale.reshape(shape)).to(w.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(shift.to(device=w.device, dtype=w.dtype), requires_grad=w.requires_grad)
        else:
            conv.bias.copy_(shift.to(conv.bias.dtype))


class _Tracer(fx.Tracer):
    """fx's tracer, with every conv and norm layer a leaf (cnnkit's ``DepthwiseConv2d`` and
    friends subclass ``nn.Conv2d`` outside ``torch.nn``, which fx would otherwise trace into)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d | nn.BatchNorm2d) or super().is_leaf_module(m, module_qualified_name)


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv name, norm name)`` for each ``Conv2d -> BatchNorm2d`` edge of ``model``'s graph.

    A pair qualifies when the conv's output goes to the norm layer only, each module is
    called once in the forward, and the norm layer keeps running statistics.
    Raises ValueError when ``torch.fx`` cannot trace the model.
    """
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many kinds (TraceError, TypeError, ...) for untraceable Python
        raise ValueError(
            f"cannot fold batch norm in {type(model).__name__}: torch.fx cannot trace its forward "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        src = node.args[0]
        if src.op != "call_module" or len(src.users) != 1:
            continue
        bn, conv = model.get_submodule(str(node.target)), model.get_submodule(str(src.target))
        if (
            type(bn) is nn.BatchNorm2d
            and bn.track_running_stats
            and isinstance(conv, nn.Conv2d)
            and calls[str(node.target)] == 1
            and calls[str(src.target)] == 1
        ):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def fuse_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every ``Conv2d -> BatchNorm2d`` pair folded into the conv.

    The copy computes what ``model.eval()`` computes, up to float rounding; ``model`` is
    left untouched. Norm layers that follow something other than a conv (the
    pre-activation ResNets' ``bn -> relu -> conv``) stay. The copy records the folded
    pairs in ``fused_pairs``. Training the copy is possible but no longer batch-normalised.
    """
    fused = copy.deepcopy(model).eval()
    pairs = foldable_pairs(fused)
    for conv_name, bn_name in pairs:
        conv, bn = fused.get_submodule(conv_name), fused.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        fold_conv_bn(conv, bn)
        parent_name, _, child = bn_name.rpartition(".")
        setattr(fused.get_submodule(parent_name) if parent_name else fused, child, nn.Identity())
    fused.fused_pairs = pairs  # type: ignore[assignment]
    return fused
