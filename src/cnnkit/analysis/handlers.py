"""Handlers of the calls that count zero mult-adds: activations, norms, dropout, elementwise
arithmetic, concatenation, pooling, reductions, padding, resampling, views and factories.

Each handler takes ``(tracer, func, args, kwargs)``. Where the shape rule is simple
it returns an empty tensor of the output's shape instead of running PyTorch's meta
kernel (Python decompositions at ~0.3-1 ms each for BN, pooling and elementwise
ops); views and data movement run for real. Every handler carries the receptive
field (:mod:`cnnkit.analysis.rf`) and records what autograd keeps for backward
(the tables in :mod:`cnnkit.analysis.op_tables`). Normalisation, activation,
pooling, elementwise arithmetic, resampling and data movement count zero mult-adds
by rule: batch norm folds into the neighbouring convolution at inference, and the
papers (VGG, MobileNet, ResNet) count only products.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from cnnkit.analysis import rf as rfm
from cnnkit.analysis.aten import unlisted
from cnnkit.analysis.op_math import (
    arg,
    arg_tensors,
    broadcast,
    nbytes,
    result_dtype,
    tensors,
    tup,
    window_out,
)
from cnnkit.analysis.op_tables import INPLACE_FROM_RESULT, SAVES_BOTH, SAVES_NOTHING, SAVES_RESULT

if TYPE_CHECKING:
    from cnnkit.analysis.tracer import Handler, Tracer

__all__ = [
    "adaptive_pool",
    "binary",
    "cat",
    "dropout",
    "factory",
    "interpolate",
    "masked_fill",
    "metadata",
    "pad",
    "permute",
    "pool",
    "reduce",
    "unary",
    "view",
]

Tensor = torch.Tensor


def metadata(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return func(*args, **kwargs)


# ---------------------------------------------------------------------------- elementwise


def _norm_statistics_bytes(name: str, x: Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Training-mode norms also keep their batch statistics for backward (mean and inverse std,
    float32): per channel for batch norm, per sample and group for group and instance norm, per
    normalised row for layer norm."""
    if x.dim() < 2:
        return 0
    if name == "batch_norm":
        count = x.shape[1]
    elif name == "instance_norm":
        count = x.shape[0] * x.shape[1]
    elif name == "group_norm":
        count = x.shape[0] * int(arg(args, kwargs, 1, "num_groups", 1))
    elif name in ("layer_norm", "rms_norm"):
        shape = arg(args, kwargs, 1, "normalized_shape", (x.shape[-1],))
        count = x.numel() // max(1, math.prod([shape] if isinstance(shape, int) else shape))
    else:
        return 0
    return 2 * count * 4


def unary(
    inplace_pos: int | None = None, *, force_inplace: bool = False, norm: bool = False
) -> Callable[[str], Handler]:
    def make(name: str) -> Handler:
        saves_result = name in SAVES_RESULT
        saves_both = name in SAVES_BOTH
        saves_nothing = name in SAVES_NOTHING
        inplace_copies = name not in INPLACE_FROM_RESULT and not saves_nothing

        def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            x = arg(args, kwargs, 0, "input")
            if not isinstance(x, Tensor):
                return unlisted(tr, func, args, kwargs)
            inplace = force_inplace or (
                inplace_pos is not None and bool(arg(args, kwargs, inplace_pos, "inplace", False))
            )
            if inplace:
                out = func(*args, **kwargs) if not tr.shortcut else x
            elif tr.shortcut:
                dtype = kwargs.get("dtype") or x.dtype
                out = tr.empty(x.shape, dtype, x)
            else:
                out = func(*args, **kwargs)
            tr.pass_rf(x, out)
            saves: list[Tensor] = [] if saves_nothing else [out if saves_result else x]
            if saves_both:
                saves.append(out)
            extra = _norm_statistics_bytes(name, x, args, kwargs) if norm else 0
            if inplace and inplace_copies:
                saves = []
                extra += nbytes(x)
            tr.record(arg_tensors(args, kwargs), [out], new=not inplace, saves=saves, extra_saved_bytes=extra)
            return out

        return handler

    return make


def dropout(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x: Tensor = arg(args, kwargs, 0, "input")
    p = float(arg(args, kwargs, 1, "p", 0.5))
    training = arg(args, kwargs, 2, "training", kwargs.get("train", True))
    inplace = bool(arg(args, kwargs, 3, "inplace", False))
    if not tr.shortcut:
        out = func(*args, **kwargs)
    elif inplace or (not training and p == 0):
        out = x
    else:
        # In training, dropout makes a new output (which the next layer keeps for backward) and
        # keeps a mask of the input's size and dtype. The traced forward runs in eval mode, where
        # dropout is the identity, so the output is a stand-in: it counts for what backward keeps,
        # not as a forward activation.
        out = tr.empty(x.shape, x.dtype, x)
        if not training:
            tr.phantom.add(id(out))
            tr._keep.append(out)
    tr.pass_rf(x, out)
    is_new = out is not x and not out._is_view() and id(out) not in tr.phantom
    tr.record([x], [out], new=is_new, extra_saved_bytes=nbytes(x) if p > 0 else 0)
    return out


def binary(kind: str, *, inplace: bool = False, compare: bool = False, divide: bool = False) -> Handler:
    saves_operands = kind in ("mul", "div", "pow", "maximum", "minimum", "atan2")

    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        a = arg(args, kwargs, 0, "input")
        b = arg(args, kwargs, 1, "other", kwargs.get("exponent"))
        if "out" in kwargs or (not isinstance(a, Tensor) and not isinstance(b, Tensor)):
            return unlisted(tr, func, args, kwargs)
        tens = [t for t in (a, b) if isinstance(t, Tensor)]
        shape = broadcast(*[t.shape for t in tens])
        if inplace:
            if not isinstance(a, Tensor) or tuple(a.shape) != shape:
                raise RuntimeError(
                    f"output with shape {list(getattr(a, 'shape', []))} doesn't match the broadcast shape {list(shape)}"
                )
            out = a if tr.shortcut else func(*args, **kwargs)
        elif tr.shortcut:
            dtype = torch.bool if compare else result_dtype([a, b], true_divide=divide)
            out = tr.empty(shape, dtype, tens[0])
        else:
            out = func(*args, **kwargs)
        tr.merge_rf(tens, out)
        # a product or quotient keeps each operand for the other's gradient; with a Python scalar
        # it keeps nothing (x ** 2 keeps x)
        saves = tens if saves_operands and (len(tens) == 2 or kind == "pow") else []
        tr.record(tens, [out], new=not inplace, saves=saves)
        return out

    return handler


def masked_fill(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    out = func(*args, **kwargs)
    tr.carry_rf([x], out)
    tr.record(arg_tensors(args, kwargs), [out])
    return out


def _cat_shape(parts: list[Tensor], dim: int) -> tuple[int, ...]:
    ref = tuple(parts[0].shape)
    d = dim % len(ref)
    for t in parts:
        s = tuple(t.shape)
        if len(s) != len(ref) or s[:d] != ref[:d] or s[d + 1 :] != ref[d + 1 :]:
            raise RuntimeError(
                f"Sizes of tensors must match except in dimension {d}; got {[tuple(t.shape) for t in parts]}"
            )
    return (*ref[:d], sum(t.shape[d] for t in parts), *ref[d + 1 :])


def _stack_shape(tensors: list[Tensor], ref: tuple[int, ...], dim: int) -> tuple[int, ...]:
    for t in tensors:
        if tuple(t.shape) != ref:
            raise RuntimeError(
                f"stack expects each tensor to be equal size; got {[tuple(t.shape) for t in tensors]}"
            )
    d = dim % (len(ref) + 1)
    return (*ref[:d], len(tensors), *ref[d:])


def cat(stack: bool) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tensors = arg(args, kwargs, 0, "tensors")
        dim = arg(args, kwargs, 1, "dim", kwargs.get("axis", 0))
        if "out" in kwargs or not isinstance(tensors, list | tuple) or not tensors:
            return unlisted(tr, func, args, kwargs)
        tensors = list(tensors)
        if not tr.shortcut:
            out = func(*args, **kwargs)
        else:
            parts = [t for t in tensors if not (t.dim() == 1 and t.numel() == 0)] or tensors[:1]
            shape = _stack_shape(tensors, tuple(parts[0].shape), dim) if stack else _cat_shape(parts, dim)
            out = tr.empty(shape, result_dtype(parts), parts[0])
        if stack:
            tr.carry_rf(tensors, out)
        else:
            tr.merge_rf(tensors, out)
        tr.record(tensors, [out], new=True)
        return out

    return handler


# ---------------------------------------------------------------------------- pooling and reductions


def _pooled(
    tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor, shape: Any, indices: bool
) -> tuple[Any, Tensor]:
    """The result of a pooling call (with int64 indices if asked) and its output tensor."""
    if tr.shortcut:
        out = tr.empty(shape, x.dtype, x)
        return ((out, tr.empty(shape, torch.int64, x)) if indices else out), out
    result = func(*args, **kwargs)
    return result, (result[0] if indices else result)


def pool(n: int, kind: str, with_indices: bool = False) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x: Tensor = arg(args, kwargs, 0, "input")
        kernel = tup(arg(args, kwargs, 1, "kernel_size"), n)
        stride_arg = arg(args, kwargs, 2, "stride", None)
        stride = (
            kernel
            if stride_arg is None or (isinstance(stride_arg, list | tuple) and not stride_arg)
            else tup(stride_arg, n)
        )
        padding = tup(arg(args, kwargs, 3, "padding", 0), n)
        if kind == "max":
            dilation = tup(arg(args, kwargs, 4, "dilation", 1), n)
            ceil_mode = bool(arg(args, kwargs, 5, "ceil_mode", False))
            indices = with_indices or bool(arg(args, kwargs, 6, "return_indices", False))
        else:
            dilation = (1,) * n
            ceil_mode = bool(arg(args, kwargs, 4, "ceil_mode", False))
            indices = False
        in_sp = tuple(x.shape[-n:])
        out_sp = tuple(
            window_out(in_sp[i], kernel[i], stride[i], padding[i], dilation[i], ceil_mode) for i in range(n)
        )
        if any(v <= 0 for v in out_sp):
            raise RuntimeError(
                f"{kind}_pool{n}d: output size {list(out_sp)} is too small for input {list(x.shape)}"
            )
        result, out = _pooled(tr, func, args, kwargs, x, (*x.shape[:-n], *out_sp), indices)
        tr.window_rf(x, out, n, lambda field: rfm.conv_rf(field, kernel, stride, padding, dilation))
        # backward keeps the input (both kinds) and, for max pooling, int64 argmax indices
        tr.record([x], [out], new=True, saves=[x], extra_saved_bytes=out.numel() * 8 if kind == "max" else 0)
        return result

    return handler


def adaptive_pool(n: int, kind: str, with_indices: bool = False) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x: Tensor = arg(args, kwargs, 0, "input")
        osz = arg(args, kwargs, 1, "output_size")
        in_sp = tuple(x.shape[-n:])
        osz_t = (osz,) * n if isinstance(osz, int) else tuple(osz)
        if len(osz_t) == 1 and n > 1:
            osz_t = osz_t * n
        out_sp = tuple(in_sp[i] if osz_t[i] is None else int(osz_t[i]) for i in range(n))
        indices = with_indices or (kind == "max" and bool(arg(args, kwargs, 2, "return_indices", False)))
        result, out = _pooled(tr, func, args, kwargs, x, (*x.shape[:-n], *out_sp), indices)
        tr.window_rf(x, out, n, lambda field: rfm.adaptive_pool_rf(field, in_sp, out_sp))
        # average pooling to 1x1 is a mean, which keeps nothing; other sizes keep the input
        global_avg = kind == "avg" and all(v == 1 for v in out_sp)
        tr.record(
            [x],
            [out],
            new=True,
            saves=[] if global_avg else [x],
            extra_saved_bytes=out.numel() * 8 if kind == "max" else 0,
        )
        return result

    return handler


def _reduced_dims(dim: Any, nd: int, keeps: bool) -> set[int]:
    if dim is None or (isinstance(dim, list | tuple) and len(dim) == 0 and not keeps):
        return set(range(nd))
    if isinstance(dim, int):
        return {dim % max(nd, 1)}
    if isinstance(dim, list | tuple) and len(dim) == 0:
        return set(range(nd))
    return {int(d) % max(nd, 1) for d in dim}


def _reduced_dtype(name: str, x: Tensor, kwargs: dict[str, Any]) -> torch.dtype:
    dtype = kwargs.get("dtype") or (
        x.dtype if x.dtype.is_floating_point or name != "mean" else torch.get_default_dtype()
    )
    if name == "sum" and not x.dtype.is_floating_point and not x.dtype.is_complex and "dtype" not in kwargs:
        dtype = torch.int64
    return dtype


def reduce(name: str) -> Handler:
    keeps = name in ("amax", "amin")

    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = arg(args, kwargs, 0, "input")
        dim = arg(args, kwargs, 1, "dim", None)
        keepdim = bool(arg(args, kwargs, 2, "keepdim", False))
        if (
            not isinstance(x, Tensor)
            or isinstance(dim, torch.dtype)
            or "out" in kwargs
            or isinstance(keepdim, torch.dtype)
        ):
            return unlisted(tr, func, args, kwargs)
        nd = x.dim()
        red = _reduced_dims(dim, nd, keeps)
        shape = (
            tuple(1 if i in red else s for i, s in enumerate(x.shape))
            if keepdim
            else tuple(s for i, s in enumerate(x.shape) if i not in red)
        )
        out = tr.empty(shape, _reduced_dtype(name, x, kwargs), x) if tr.shortcut else func(*args, **kwargs)
        e = tr.rf_of(x)
        if e is not None:
            rf, dims = e
            if dims is not None and any(d % nd in red for d in dims):
                tr.set_rf(out, rfm.collapse(rf, [x.shape[d] for d in dims]), None)
            elif dims is not None and not keepdim:
                tr.set_rf(out, rf, tuple(d + sum(1 for r in red if r > d % nd) for d in dims))
            else:
                tr.set_rf(out, rf, dims)
        tr.record([x], [out], new=True, saves=[x, out] if keeps else [])
        return out

    return handler


# ---------------------------------------------------------------------------- geometry and data movement


def pad(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x: Tensor = arg(args, kwargs, 0, "input")
    widths = list(arg(args, kwargs, 1, "pad"))
    shape = list(x.shape)
    for i in range(len(widths) // 2):
        shape[-1 - i] += widths[2 * i] + widths[2 * i + 1]
    out = tr.empty(shape, x.dtype, x) if tr.shortcut else func(*args, **kwargs)
    e = tr.rf_of(x)
    if e is not None:
        rf, dims = e
        if dims is not None:
            left = [widths[2 * (-1 - d)] if 2 * (-1 - d) < len(widths) else 0 for d in dims]
            tr.set_rf(out, rfm.pad_rf(rf, left), dims)
        else:
            tr.set_rf(out, rf, dims)
    tr.record([x], [out], new=True)
    return out


def interpolate(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x: Tensor = arg(args, kwargs, 0, "input")
    mode = arg(args, kwargs, 3, "mode", "nearest")
    out = func(*args, **kwargs)
    n = x.dim() - 2
    in_sp, out_sp = x.shape[-n:], out.shape[-n:]
    if mode == "area":
        tr.window_rf(x, out, n, lambda field: rfm.adaptive_pool_rf(field, in_sp, out_sp))
    else:
        taps = 1 if "nearest" in str(mode) else (4 if mode == "bicubic" else 2)
        tr.window_rf(x, out, n, lambda field: rfm.resample_rf(field, in_sp, out_sp, taps))
    tr.record([x], [out], new=True)
    return out


def view(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Shape and data-movement calls that run for real (views on meta tensors are cheap)."""
    out = func(*args, **kwargs)
    outs = tensors(out)
    if not outs:
        return out
    ins = arg_tensors(args, kwargs)
    for o in outs:
        tr.carry_rf(ins[:1] if ins else [], o)
    tr.record(ins, outs)
    return out


def _axis_mapping(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any], nd: int) -> dict[int, int]:
    """Where each axis of the input goes in the output of ``permute``, ``transpose`` or ``t``."""
    if kind == "permute":
        perm = (
            args[1:]
            if len(args) > 2 or (len(args) == 2 and isinstance(args[1], int))
            else arg(args, kwargs, 1, "dims")
        )
        perm = [int(p) % nd for p in perm]
        return {old: new for new, old in enumerate(perm)}
    mapping = {i: i for i in range(nd)}
    if kind == "transpose":
        d0, d1 = int(arg(args, kwargs, 1, "dim0")) % nd, int(arg(args, kwargs, 2, "dim1")) % nd
        mapping[d0], mapping[d1] = d1, d0
    elif nd >= 2:  # t, T, mT: the last two axes swap
        mapping[nd - 1], mapping[nd - 2] = nd - 2, nd - 1
    return mapping


def permute(kind: str) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = func(*args, **kwargs)
        x = args[0]
        e = tr.rf_of(x)
        if e is not None:
            rf, dims = e
            if dims is not None:
                nd = x.dim()
                mapping = _axis_mapping(kind, args, kwargs, nd)
                tr.set_rf(out, rf, tuple(mapping[d % nd] - nd for d in dims))
            else:
                tr.set_rf(out, rf, None)
        tr.record([x], [out])
        return out

    return handler


def factory(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    out = func(*args, **kwargs)
    outs = tensors(out)
    if outs:
        tr.record(arg_tensors(args, kwargs), outs, new=True)
    return out
