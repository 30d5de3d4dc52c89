"""The ATen fallback: calls the tracer has no rule for run for real, and their ATen operations are counted.

A call without a handler (:func:`unlisted`) runs on its ``meta`` tensors under
:class:`AtenRecorder`, a :class:`~torch.utils._python_dispatch.TorchDispatchMode`
that counts the mult-adds of the ATen operations it dispatches to (with the
formulas of :mod:`cnnkit.analysis.op_math`, then ``torch.utils.flop_counter``'s
registry); an ATen operation neither counted nor known to be free
(:data:`~cnnkit.analysis.op_tables.ATEN_FREE`) marks the layer as *unknown*, never
as zero. Autograd's saved-tensor hooks say what the call keeps for backward. A
``torch.nn.functional`` composite without a rule is instead run transparently
(:func:`transparent`), so the tracer sees the calls inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cnnkit.analysis.op_math import (
    arg_tensors,
    conv_shape_mult_adds,
    name_of,
    nbytes,
    sdpa_mult_adds,
    tensors,
)
from cnnkit.analysis.op_tables import ATEN_FREE

if TYPE_CHECKING:
    from cnnkit.analysis.tracer import Tracer

__all__ = ["AtenRecorder", "transparent", "unlisted"]

Tensor = torch.Tensor


def _flop_registry() -> dict[Any, Any]:
    from torch.utils.flop_counter import flop_registry

    return flop_registry


class AtenRecorder(TorchDispatchMode):
    """Counts the mult-adds of ATen operations with flop_counter's formulas; collects those it cannot judge."""

    def __init__(self) -> None:
        super().__init__()
        self.mult_adds = 0
        self.unknown: list[str] = []
        self.ops = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        name = func.overloadpacket.__name__
        if name == "mm":
            self.mult_adds += args[0].shape[0] * args[0].shape[1] * args[1].shape[1]
        elif name == "addmm":
            self.mult_adds += args[1].shape[0] * args[1].shape[1] * args[2].shape[1]
        elif name in ("bmm", "baddbmm"):
            a, b = (args[0], args[1]) if name == "bmm" else (args[1], args[2])
            self.mult_adds += a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
        elif name in ("convolution", "_convolution"):
            self.mult_adds += conv_shape_mult_adds(args[0].shape, args[1].shape, out.shape, bool(args[6]))
        elif name.startswith("_scaled_dot_product_"):
            self.mult_adds += sdpa_mult_adds(args[0].shape, args[1].shape, args[2].shape)
        elif name in ("mv", "addmv"):
            mat = args[0] if name == "mv" else args[1]
            self.mult_adds += mat.shape[0] * mat.shape[1]
        elif name == "dot":
            self.mult_adds += args[0].numel()
        elif name not in ATEN_FREE and name.rstrip("_") not in ATEN_FREE:
            formula = _flop_registry().get(func.overloadpacket)  # other registered formulas
            if formula is not None:
                self.mult_adds += int(formula(*args, **kwargs, out_val=out)) // 2
            else:
                self.unknown.append(f"aten.{name}")
        return out


def unlisted(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A call without a rule: run it for real under the ATen recorder (counts its products,
    names any operation it cannot judge), carry receptive fields by the generic rule, and let
    autograd itself say what it would keep for backward (a composite such as
    ``F.multi_head_attention_forward`` keeps its projections and attention weights)."""
    from torch.utils._pytree import tree_map

    name = name_of(func)
    if getattr(func, "__module__", None) == "torch.nn.functional" and hasattr(func, "__code__"):
        return transparent(tr, func, args, kwargs)
    recorder = AtenRecorder()
    aliases: dict[int, Tensor] = {}
    packed: list[Tensor] = []
    # Autograd is asked only for out-of-place calls: an in-place call on a detached alias would
    # not write to the original.
    with_grad = not name.endswith("_") and "out" not in kwargs

    def alias(t: Any) -> Any:
        if isinstance(t, Tensor) and (t.is_floating_point() or t.is_complex()) and not t.requires_grad:
            a = t.detach().requires_grad_(True)
            aliases[id(a)] = t
            return a
        return t

    def original(t: Any) -> Any:
        return aliases.get(id(t), t) if isinstance(t, Tensor) else t

    def pack(t: Tensor) -> Tensor:
        packed.append(t)
        return t

    if with_grad:
        call_args, call_kwargs = tree_map(alias, (args, kwargs))
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), recorder:
            out = func(*call_args, **call_kwargs)
        out = tree_map(original, out)
    else:
        with recorder:
            out = func(*args, **kwargs)
    outs = tensors(out)
    if not outs and not recorder.ops:
        return out
    tr.unlisted[name] = tr.unlisted.get(name, 0) + 1
    ins = arg_tensors(args, kwargs)
    for o in outs:
        tr.carry_rf(ins, o)
    unknown = [f"{name} ({u})" for u in dict.fromkeys(recorder.unknown)]
    saves: list[Tensor] = []
    internal: dict[int, int] = {}
    for t in packed:
        base = t._base if t._base is not None else t
        if id(base) in aliases:
            saves.append(aliases[id(base)])
        elif id(base) in tr.state_ids or id(base) in tr.params:
            continue
        else:  # a tensor made inside the call and kept for backward
            internal[id(base)] = nbytes(base)
    if not with_grad and outs:
        saves = ins  # without autograd's word, assume the inputs are kept
    tr._keep.append(packed)
    tr.record(
        ins,
        outs,
        mult_adds=recorder.mult_adds,
        saves=saves,
        extra_saved_bytes=sum(internal.values()),
        unknown=unknown,
    )
    return out


@contextlib.contextmanager
def _functional_checks_off() -> Iterator[None]:
    """Make ``torch.nn.functional``'s Python functions skip their ``has_torch_function`` checks,
    so their bodies run with the tracer active and it sees the calls inside them."""
    F = torch.nn.functional
    names = ("has_torch_function", "has_torch_function_unary", "has_torch_function_variadic")
    saved = {n: getattr(F, n) for n in names}
    for n in names:
        setattr(F, n, _never)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(F, n, fn)


def _never(*args: Any) -> bool:
    return False


def transparent(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A ``torch.nn.functional`` composite without a rule (``multi_head_attention_forward``): run
    its body under the tracer, which then handles the linear layers and attention inside."""
    with _functional_checks_off(), tr:
        return func(*args, **kwargs)
