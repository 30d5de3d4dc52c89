"""What one PyTorch call returns and costs, from its arguments' shapes alone (no tracing state).

Argument access (:func:`arg`, :func:`tup`, :func:`tensors`), PyTorch's type promotion
and broadcasting, the output size of a sliding window, and the mult-add formulas of
convolutions, matrix products, einsum and attention. The formulas are those of
:mod:`torch.utils.flop_counter` halved (it counts FLOPs = 2 x mult-adds), written out
because importing that module loads triton (~80 MB, ~0.3 s); the tests check them
against flop_counter's own functions. :func:`cnnkit.layers.cost.conv_mult_adds` is
the lecture's per-layer formula; :func:`conv_shape_mult_adds` is the same count from
the tensor shapes a traced call sees (batch, 1-3 spatial axes, transposed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "arg",
    "arg_tensors",
    "broadcast",
    "conv_out",
    "conv_shape_mult_adds",
    "einsum_mult_adds",
    "matmul_shape",
    "name_of",
    "nbytes",
    "result_dtype",
    "sdpa_mult_adds",
    "tensors",
    "tup",
    "window_out",
]

Tensor = torch.Tensor


# ---------------------------------------------------------------------------- arguments


def arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any = None) -> Any:
    """Argument ``i`` of a call, positional or by keyword ``name``."""
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def tup(v: Any, n: int) -> tuple[int, ...]:
    """An int or a sequence as an ``n``-tuple (a 1-sequence is repeated)."""
    if isinstance(v, int):
        return (v,) * n
    t = tuple(int(x) for x in v)
    return t * n if len(t) == 1 and n > 1 else t


def tensors(obj: Any) -> list[Tensor]:
    """The tensors in an argument or output (one level into lists, tuples and dicts, then deeper)."""
    if isinstance(obj, Tensor):
        return [obj]
    out: list[Tensor] = []
    if isinstance(obj, list | tuple):
        for o in obj:
            if isinstance(o, Tensor):
                out.append(o)
            elif isinstance(o, list | tuple | dict):
                out.extend(tensors(o))
    elif isinstance(obj, dict):
        for o in obj.values():
            out.extend(tensors(o))
    return out


def arg_tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    out = tensors(args)
    if kwargs:
        out.extend(tensors(kwargs))
    return out


def nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def name_of(func: Any) -> str:
    """The name a call is looked up by (``conv2d``, ``__add__``, ``relu_``)."""
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "__get__":
        name = getattr(getattr(func, "__self__", None), "__name__", "__get__")
    return str(name)


# ---------------------------------------------------------------------------- dtypes and shapes


def _category(dt: torch.dtype) -> int:
    if dt == torch.bool:
        return 0
    if dt.is_complex:
        return 3
    if dt.is_floating_point:
        return 2
    return 1


def result_dtype(operands: Sequence[Any], *, true_divide: bool = False) -> torch.dtype:
    """PyTorch's type promotion for elementwise ops on tensors and Python scalars (dim-0 tensors
    and scalars do not raise the dtype of a dimensioned tensor within a category)."""
    dims = [o.dtype for o in operands if isinstance(o, Tensor) and o.dim() > 0]
    zero = [o.dtype for o in operands if isinstance(o, Tensor) and o.dim() == 0]
    scalars = [o for o in operands if not isinstance(o, Tensor)]
    if dims:
        dt = dims[0]
        for d in dims[1:]:
            dt = torch.promote_types(dt, d)
    elif zero:
        dt = zero[0]
        zero = zero[1:]
    else:
        dt = torch.get_default_dtype()
    for d in zero:
        if _category(d) > _category(dt):
            dt = d if _category(d) < 2 else torch.promote_types(torch.get_default_dtype(), d)
    for s in scalars:
        if isinstance(s, bool):
            continue
        if isinstance(s, float) and _category(dt) < 2:
            dt = torch.get_default_dtype()
        elif isinstance(s, complex) and _category(dt) < 3:
            dt = torch.complex64
        elif isinstance(s, int) and dt == torch.bool:
            dt = torch.int64
    if true_divide and _category(dt) < 2:
        dt = torch.get_default_dtype()
    return dt


def broadcast(*shapes: Sequence[int]) -> tuple[int, ...]:
    first = tuple(shapes[0])
    if all(tuple(s) == first for s in shapes[1:]):
        return first
    n = max(len(s) for s in shapes)
    out = [1] * n
    for s in shapes:
        for i, v in enumerate(s, start=n - len(s)):
            if v != 1:
                if out[i] not in (1, v):
                    raise RuntimeError(f"shapes {[tuple(x) for x in shapes]} cannot be broadcast together")
                out[i] = v
    return tuple(out)


def window_out(L: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Output length of a sliding window (convolution or pooling) over ``L`` positions."""
    num = L + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        out = -(-num // s) + 1
        if (out - 1) * s >= L + p:  # the last window must start inside the input or left padding
            out -= 1
    else:
        out = num // s + 1
    return out


def conv_out(
    in_sp: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Any,
    dilation: Sequence[int],
    output_padding: Sequence[int],
    transposed: bool,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Left padding and output size, per spatial axis, of a convolution (``padding`` an int, a
    sequence, ``"same"`` or ``"valid"``) or of a transposed one."""
    n = len(in_sp)
    if isinstance(padding, str):
        if padding == "same":
            return tuple(dilation[i] * (kernel[i] - 1) // 2 for i in range(n)), tuple(in_sp)
        # "valid"
        return (0,) * n, tuple(
            window_out(in_sp[i], kernel[i], stride[i], 0, dilation[i], False) for i in range(n)
        )
    left = tup(padding, n)
    if transposed:
        out_sp = tuple(
            (in_sp[i] - 1) * stride[i] - 2 * left[i] + dilation[i] * (kernel[i] - 1) + output_padding[i] + 1
            for i in range(n)
        )
    else:
        out_sp = tuple(
            window_out(in_sp[i], kernel[i], stride[i], left[i], dilation[i], False) for i in range(n)
        )
    return left, out_sp


def matmul_shape(a: Sequence[int], b: Sequence[int]) -> tuple[tuple[int, ...], int]:
    """Output shape and mult-adds of ``torch.matmul`` (1-d operands are promoted, then squeezed)."""
    a1, b1 = len(a) == 1, len(b) == 1
    A = (1, a[0]) if a1 else tuple(a)
    B = (b[0], 1) if b1 else tuple(b)
    if A[-1] != B[-2]:
        raise RuntimeError(f"matmul: shapes {tuple(a)} and {tuple(b)} cannot be multiplied")
    batch = broadcast(A[:-2], B[:-2]) if (len(A) > 2 or len(B) > 2) else ()
    n, k, m = A[-2], A[-1], B[-1]
    out = [*batch, n, m]
    if b1:
        out.pop(-1)
    if a1:
        out.pop(-2 if not b1 else -1)
    return tuple(out), math.prod(batch) * n * k * m


# ---------------------------------------------------------------------------- mult-adds


def conv_shape_mult_adds(
    x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int], transposed: bool
) -> int:
    """``torch.utils.flop_counter.conv_flop_count / 2``: batch x spatial positions x kernel taps x
    ``w_shape[0] * w_shape[1]`` (C_out x C_in/groups, or for a transposed conv C_in x C_out/groups),
    over the *output* positions of a convolution and the *input* positions of a transposed one."""
    positions = (x_shape if transposed else out_shape)[2:]
    return x_shape[0] * math.prod(positions) * math.prod(w_shape[2:]) * w_shape[0] * w_shape[1]


def sdpa_mult_adds(q: Sequence[int], k: Sequence[int], v: Sequence[int]) -> int:
    """Attention mult-adds (``flop_counter.sdpa_flop_count / 2``): Q K^T, then the scores times V."""
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def einsum_mult_adds(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """Mult-adds of an einsum contracted left to right: each pairwise contraction costs the product
    of the sizes of all the indices of its two operands (a matrix product n k m, as ``mm``)."""
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum {equation!r} names {len(terms)} operands; got {len(shapes)}")
    sizes: dict[str, int] = {}
    letters: list[str] = []
    ell_n = max((len(s) - (len(t) - 3) for t, s in zip(terms, shapes, strict=True) if "..." in t), default=0)
    ell = [chr(0x100 + i) for i in range(ell_n)]
    for t, s in zip(terms, shapes, strict=True):
        if "..." in t:
            pre, post = t.split("...")
            k = len(s) - len(pre) - len(post)
            t = pre + "".join(ell[ell_n - k :]) + post
        for c, v in zip(t, s, strict=True):
            sizes[c] = max(sizes.get(c, 1), v)
        letters.append(t)
    if "->" in eq:
        out_letters = set(rhs.replace("...", "".join(ell)))
    else:
        counts: dict[str, int] = {}
        for t in letters:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out_letters = {c for c, n in counts.items() if n == 1} | set(ell)
    if len(letters) < 2:
        return 0
    total = 0
    cur = set(letters[0])
    for i in range(1, len(letters)):
        nxt = set(letters[i])
        union = cur | nxt
        total += math.prod(sizes[c] for c in union)
        later = set().union(*[set(t) for t in letters[i + 1 :]]) if i + 1 < len(letters) else set()
        cur = {c for c in union if c in out_letters or c in later}
    return total
