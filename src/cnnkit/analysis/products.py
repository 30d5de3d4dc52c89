"""Handlers of the calls that count mult-adds: convolutions, linear layers, matrix products, einsum, attention.

Each handler takes ``(tracer, func, args, kwargs)``, computes the output's shape and
returns an empty tensor of it (or, with ``tracer.shortcut`` off, runs the call),
counts its multiply-accumulates with :mod:`cnnkit.analysis.op_math`, carries the
receptive field, and records what autograd would keep for backward. A transposed
convolution is counted from its *input* (each input element meets every weight of
its group once); bias additions are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from cnnkit.analysis import rf as rfm
from cnnkit.analysis.aten import unlisted
from cnnkit.analysis.op_math import (
    arg,
    arg_tensors,
    conv_out,
    conv_shape_mult_adds,
    einsum_mult_adds,
    matmul_shape,
    nbytes,
    result_dtype,
    sdpa_mult_adds,
    tup,
)

if TYPE_CHECKING:
    from cnnkit.analysis.tracer import Handler, Tracer

__all__ = ["conv", "einsum", "linear", "matmul", "sdpa"]

Tensor = torch.Tensor


def _conv_args(
    args: tuple[Any, ...], kwargs: dict[str, Any], n: int, transposed: bool
) -> tuple[tuple[int, ...], Any, tuple[int, ...], int, tuple[int, ...]]:
    """stride, padding, output padding, groups and dilation of ``conv{n}d`` or ``conv_transpose{n}d``."""
    stride = tup(arg(args, kwargs, 3, "stride", 1), n)
    padding = arg(args, kwargs, 4, "padding", 0)
    if transposed:
        output_padding = tup(arg(args, kwargs, 5, "output_padding", 0), n)
        groups = arg(args, kwargs, 6, "groups", 1)
        dilation = tup(arg(args, kwargs, 7, "dilation", 1), n)
    else:
        output_padding = (0,) * n
        dilation = tup(arg(args, kwargs, 5, "dilation", 1), n)
        groups = arg(args, kwargs, 6, "groups", 1)
    return stride, padding, output_padding, groups, dilation


def _conv_channels(n: int, transposed: bool, x: Tensor, w: Tensor, groups: int) -> int:
    """The output channels, after checking the input's against the weight's."""
    c_in = x.shape[-n - 1]
    if transposed:
        if c_in != w.shape[0]:
            raise RuntimeError(
                f"conv_transpose{n}d: weight of size {list(w.shape)} expects {w.shape[0]} input channels; "
                f"got input of size {list(x.shape)}"
            )
        return w.shape[1] * groups
    if c_in != w.shape[1] * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(w.shape)}, expected input{list(x.shape)} "
            f"to have {w.shape[1] * groups} channels, but got {c_in} channels instead"
        )
    return w.shape[0]


def conv(n: int, transposed: bool) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x: Tensor = arg(args, kwargs, 0, "input")
        w: Tensor = arg(args, kwargs, 1, "weight")
        stride, padding, output_padding, groups, dilation = _conv_args(args, kwargs, n, transposed)
        kernel = tuple(w.shape[2:])
        in_sp = tuple(x.shape[-n:])
        left, out_sp = conv_out(in_sp, kernel, stride, padding, dilation, output_padding, transposed)
        c_out = _conv_channels(n, transposed, x, w, groups)
        if any(v <= 0 for v in out_sp):
            raise RuntimeError(
                f"conv{n}d output would be {list(out_sp)} for input {list(in_sp)} and kernel {list(kernel)}: "
                f"the input is too small"
            )
        out_shape = (*x.shape[: -n - 1], c_out, *out_sp)
        out = tr.empty(out_shape, x.dtype, x) if tr.shortcut else func(*args, **kwargs)
        batched = list(x.shape) if x.dim() == n + 2 else [1, *x.shape]
        out_b = list(out.shape) if out.dim() == n + 2 else [1, *out.shape]
        macs = conv_shape_mult_adds(batched, list(w.shape), out_b, transposed)
        rule = rfm.transposed_conv_rf if transposed else rfm.conv_rf
        tr.window_rf(x, out, n, lambda field: rule(field, kernel, stride, left, dilation))
        tr.record(arg_tensors(args, kwargs), [out], mult_adds=macs, new=True, saves=[x, w])
        return out

    return handler


def linear(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x: Tensor = arg(args, kwargs, 0, "input")
    w: Tensor = arg(args, kwargs, 1, "weight")
    if x.shape[-1] != w.shape[-1]:
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({math.prod(x.shape[:-1])}x{x.shape[-1]} and "
            f"{w.shape[-1]}x{w.shape[0] if w.dim() > 1 else 1})"
        )
    out_shape = (*x.shape[:-1], w.shape[0]) if w.dim() == 2 else tuple(x.shape[:-1])
    out = tr.empty(out_shape, x.dtype, x) if tr.shortcut else func(*args, **kwargs)
    macs = math.prod(x.shape[:-1]) * x.shape[-1] * (w.shape[0] if w.dim() == 2 else 1)
    e = tr.rf_of(x)
    if e is not None:
        if e[1] is not None and -1 in e[1]:
            tr.collapse_all([x], out)
        else:
            tr.set_rf(out, e[0], e[1])
    tr.record(arg_tensors(args, kwargs), [out], mult_adds=macs, new=True, saves=[x, w])
    return out


def _operands(kind: str, reverse: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """The two factors of a matrix product (after the added term of ``addmm`` and the like)."""
    if kind == "addmv":
        return arg(args, kwargs, 1, "mat"), arg(args, kwargs, 2, "vec")
    if kind in ("addmm", "baddbmm"):
        return (
            arg(args, kwargs, 1, "mat1" if kind != "baddbmm" else "batch1"),
            arg(args, kwargs, 2, "mat2" if kind != "baddbmm" else "batch2"),
        )
    a, b = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "other")
    if kind == "bmm" or kind == "mm":
        b = arg(args, kwargs, 1, "mat2")
    elif kind == "mv":
        b = arg(args, kwargs, 1, "vec")
    return (b, a) if reverse else (a, b)


def _matmul_saves(tr: Tracer, a: Tensor, b: Tensor, shape: Sequence[int]) -> tuple[list[Tensor], int]:
    """What a batched ``matmul`` keeps: it folds the batch dims into one (reshape) before bmm, and
    bmm keeps what it got: a view of the operand, or a copy (counted in bytes) where the fold needed one."""
    saves: list[Tensor] = []
    copies = 0
    batch = shape[: max(len(shape) - 2, 0)] if a.dim() > 1 and b.dim() > 1 else ()
    for t, rows, cols in (
        (a, a.shape[-2] if a.dim() > 1 else 1, a.shape[-1]),
        (b, b.shape[-2], b.shape[-1] if b.dim() > 1 else 1),
    ):
        if t.dim() > 2 and batch and not _folds_without_copy(t, batch, rows, cols):
            if id(t) not in tr.params and (t._base is None or id(t._base) not in tr.params):
                copies += nbytes(t) // max(1, t.numel()) * math.prod(batch) * rows * cols
        else:
            saves.append(t)
    return saves, copies


def _folds_without_copy(t: Tensor, batch: Sequence[int], rows: int, cols: int) -> bool:
    """Whether ``t`` broadcast to ``batch + (rows, cols)`` folds to ``(-1, rows, cols)`` as a view."""
    try:
        t.expand(*batch, rows, cols).view(-1, rows, cols)
    except RuntimeError:
        return False
    return True


def matmul(kind: str, reverse: bool = False) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        a, b = _operands(kind, reverse, args, kwargs)
        shape, macs = matmul_shape(a.shape, b.shape)
        if kind in ("mm", "addmm") and (a.dim() != 2 or b.dim() != 2):
            raise RuntimeError(f"{kind}: expected 2-d matrices; got {tuple(a.shape)} and {tuple(b.shape)}")
        if kind in ("bmm", "baddbmm") and (a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0]):
            raise RuntimeError(
                f"{kind}: expected batches of matrices; got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        out = (
            tr.empty(shape, result_dtype([a, b]), a)
            if tr.shortcut and "out" not in kwargs
            else func(*args, **kwargs)
        )
        tr.collapse_all([a, b], out)
        if kind == "matmul" and tr.shortcut and (a.dim() > 2 or b.dim() > 2):
            saves, copies = _matmul_saves(tr, a, b, shape)
        else:
            saves, copies = [a, b], 0
        tr.record(
            arg_tensors(args, kwargs), [out], mult_adds=macs, new=True, saves=saves, extra_saved_bytes=copies
        )
        return out

    return handler


def einsum(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    eq = args[0] if args else kwargs.get("equation")
    ops = list(args[1:])
    if len(ops) == 1 and isinstance(ops[0], list | tuple):
        ops = list(ops[0])
    if not isinstance(eq, str) or not all(isinstance(o, Tensor) for o in ops):
        return unlisted(tr, func, args, kwargs)
    out = func(*args, **kwargs)
    macs = einsum_mult_adds(eq, [tuple(o.shape) for o in ops])
    tr.collapse_all(ops, out)
    tr.record(ops, [out], mult_adds=macs, new=True, saves=ops if len(ops) > 1 else ())
    return out


def sdpa(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    q = arg(args, kwargs, 0, "query")
    k = arg(args, kwargs, 1, "key")
    v = arg(args, kwargs, 2, "value")
    out = tr.empty((*q.shape[:-1], v.shape[-1]), q.dtype, q) if tr.shortcut else func(*args, **kwargs)
    macs = sdpa_mult_adds(q.shape, k.shape, v.shape)
    tr.collapse_all([q, k, v], out)
    tr.record(arg_tensors(args, kwargs), [out], mult_adds=macs, new=True, saves=[q, k, v, out])
    return out
