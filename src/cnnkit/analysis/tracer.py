"""Trace one forward pass and account for every operation in it, without computing anything.

The lecture's arithmetic (slides "VGGNet", "MobileNets", "Depthwise Separable
Convolution", "Dilated Convolution", "Receptive Fields") applied to whatever a
model's ``forward`` does. A :class:`~torch.overrides.TorchFunctionMode` sees each
PyTorch call (``F.conv2d``, ``x + y``, ``torch.cat``, ``x.flatten(1)``) with its
real arguments; global module hooks say which module is running. For each call the
tracer

* counts mult-adds (multiply-accumulates; see below),
* computes the output's shape and returns an empty ``meta`` tensor of that shape
  instead of running the kernel (PyTorch's own meta kernels for BN, pooling and
  elementwise ops run as Python decompositions at ~0.3-1 ms each, so SENet-154
  would take seconds; the shape rules here take microseconds),
* propagates receptive fields (:mod:`cnnkit.analysis.rf`) from its inputs to its
  outputs, keyed by the tensor objects, so branches that merge are handled whatever
  the model's structure,
* records which tensors autograd would keep for the backward pass.

Mult-adds count the multiply-accumulates of convolutions (ordinary, grouped,
depthwise, dilated and transposed), linear layers, matrix products (``matmul``,
``bmm``, ``einsum``) and attention, with the formulas of
:mod:`torch.utils.flop_counter` halved (it counts FLOPs = 2 x mult-adds). They are
written out here because importing that module loads triton (~80 MB, ~0.3 s); the
tests check them against flop_counter's own functions and against brute-force counts
of reference implementations. A transposed convolution is
counted from its *input*: each input element meets every weight of its group once,
``N * H_in * W_in * C_in * C_out / groups * k_h * k_w``, which is what its
scatter-and-add reference does (tools that count it like a convolution from the
output size report ``stride^2`` times too many). Bias additions are not counted.
Normalisation, activation, pooling, elementwise arithmetic, resampling and data
movement count zero mult-adds by rule: batch norm folds into the neighbouring
convolution at inference, and the papers (VGG, MobileNet, ResNet) and torchvision's
``_ops`` metadata count only the products above. Calls with no rule here run for
real (on ``meta`` tensors) under a :class:`~torch.utils._python_dispatch.TorchDispatchMode`
that counts their ATen operations (with the formulas below, then
``torch.utils.flop_counter``'s registry); an ATen operation neither counted nor
known to be free marks the layer as *unknown*, never as zero.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from cnnkit.analysis import rf as rfm
from cnnkit.analysis.rf import ReceptiveField

__all__ = ["ParamInfo", "TracedRow", "Tracer"]

Tensor = torch.Tensor
Handler = Callable[["Tracer", Any, tuple[Any, ...], dict[str, Any]], Any]


# ---------------------------------------------------------------------------- records


@dataclass
class ParamInfo:
    """A parameter as the tracer sees it: where it lives and how it is counted."""

    name: str  # qualified name, e.g. "features.0.weight"
    owner: str  # qualified name of the module that holds it
    numel: int
    nbytes: int
    trainable: bool
    kind: str  # "weight", "bias" or "other"


@dataclass
class TracedRow:
    """One row as traced, for the whole batch (the summary divides by the batch size)."""

    name: str
    type: str
    module_id: int
    leaf: bool
    call: int
    output_shape: tuple[int, ...] | None = None
    mult_adds: int = 0
    activation_elements: int = 0
    activation_bytes: int = 0
    receptive_field: ReceptiveField | None = None
    unknown_ops: list[str] = field(default_factory=list)
    params: list[ParamInfo] = field(default_factory=list)
    events: int = 0


class _Frame:
    __slots__ = ("glue", "leaf", "module", "name", "row", "type")

    def __init__(self, module: nn.Module, name: str, leaf: bool, row: TracedRow | None) -> None:
        self.module = module
        self.name = name
        self.type = type(module).__name__
        self.leaf = leaf
        self.row = row  # the leaf's row
        self.glue: TracedRow | None = None  # the row collecting a container's own operations


# ---------------------------------------------------------------------------- small helpers


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _tup(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    t = tuple(int(x) for x in v)
    return t * n if len(t) == 1 and n > 1 else t


def _tensors(obj: Any) -> list[Tensor]:
    """The tensors in an argument or output (one level into lists, tuples and dicts, then deeper)."""
    if isinstance(obj, Tensor):
        return [obj]
    out: list[Tensor] = []
    if isinstance(obj, list | tuple):
        for o in obj:
            if isinstance(o, Tensor):
                out.append(o)
            elif isinstance(o, list | tuple | dict):
                out.extend(_tensors(o))
    elif isinstance(obj, dict):
        for o in obj.values():
            out.extend(_tensors(o))
    return out


def _arg_tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
    out = _tensors(args)
    if kwargs:
        out.extend(_tensors(kwargs))
    return out


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _category(dt: torch.dtype) -> int:
    if dt == torch.bool:
        return 0
    if dt.is_complex:
        return 3
    if dt.is_floating_point:
        return 2
    return 1


def _result_dtype(operands: Sequence[Any], *, true_divide: bool = False) -> torch.dtype:
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


def _broadcast(*shapes: Sequence[int]) -> tuple[int, ...]:
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


def _pool_out(L: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    num = L + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        out = -(-num // s) + 1
        if (out - 1) * s >= L + p:  # the last window must start inside the input or left padding
            out -= 1
    else:
        out = num // s + 1
    return out


# ---------------------------------------------------------------------------- ATen fallback


def _flop_registry() -> dict[Any, Any]:
    from torch.utils.flop_counter import flop_registry

    return flop_registry


def conv_mult_adds(
    x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int], transposed: bool
) -> int:
    """``torch.utils.flop_counter.conv_flop_count / 2``: batch x spatial positions x kernel taps x
    ``w_shape[0] * w_shape[1]`` (C_out x C_in/groups, or for a transposed conv C_in x C_out/groups),
    over the *output* positions of a convolution and the *input* positions of a transposed one."""
    positions = (x_shape if transposed else out_shape)[2:]
    return x_shape[0] * math.prod(positions) * math.prod(w_shape[2:]) * w_shape[0] * w_shape[1]


def _sdpa_macs(q: Sequence[int], k: Sequence[int], v: Sequence[int]) -> int:
    """Attention mult-adds (``flop_counter.sdpa_flop_count / 2``): Q K^T, then the scores times V."""
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


# ATen operations that do no multiply-accumulate (their work is elementwise, a reduction,
# a normalisation, pooling, resampling or data movement), used for calls without a rule.
_ATEN_FREE = frozenset(
    [
        "_adaptive_avg_pool2d",
        "_adaptive_avg_pool3d",
        "_local_scalar_dense",
        "_log_softmax",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_functional",
        "_native_batch_norm_legit_no_training",
        "_reshape_alias",
        "_softmax",
        "_to_copy",
        "_unsafe_index",
        "_unsafe_view",
        "abs",
        "adaptive_avg_pool1d",
        "adaptive_max_pool2d",
        "adaptive_max_pool3d",
        "add",
        "alias",
        "amax",
        "amin",
        "any",
        "all",
        "arange",
        "argmax",
        "argmin",
        "as_strided",
        "avg_pool2d",
        "avg_pool3d",
        "batch_norm",
        "bernoulli",
        "bitwise_and",
        "bitwise_not",
        "bitwise_or",
        "bitwise_xor",
        "cat",
        "ceil",
        "channel_shuffle",
        "clamp",
        "clamp_max",
        "clamp_min",
        "clone",
        "col2im",
        "constant_pad_nd",
        "contiguous",
        "copy",
        "copy_",
        "cos",
        "cumsum",
        "detach",
        "diagonal",
        "div",
        "elu",
        "embedding",
        "empty",
        "empty_like",
        "empty_strided",
        "eq",
        "erf",
        "exp",
        "exp2",
        "expand",
        "expand_copy",
        "expm1",
        "fill",
        "fill_",
        "flip",
        "floor",
        "floor_divide",
        "fmod",
        "full",
        "full_like",
        "gather",
        "ge",
        "gelu",
        "gt",
        "hardsigmoid",
        "hardswish",
        "hardtanh",
        "im2col",
        "index",
        "index_put",
        "index_select",
        "layer_norm",
        "le",
        "leaky_relu",
        "lift_fresh",
        "linspace",
        "log",
        "log1p",
        "log2",
        "logical_and",
        "logical_not",
        "logical_or",
        "logsumexp",
        "lt",
        "masked_fill",
        "max",
        "max_pool2d_with_indices",
        "max_pool3d_with_indices",
        "maximum",
        "mean",
        "min",
        "minimum",
        "mish",
        "mul",
        "native_batch_norm",
        "native_channel_shuffle",
        "native_dropout",
        "native_group_norm",
        "native_layer_norm",
        "ne",
        "neg",
        "new_empty",
        "new_empty_strided",
        "new_full",
        "new_ones",
        "new_zeros",
        "norm",
        "linalg_vector_norm",
        "ones",
        "ones_like",
        "permute",
        "pixel_shuffle",
        "pixel_unshuffle",
        "pow",
        "prelu",
        "_prelu_kernel",
        "prod",
        "reciprocal",
        "reflection_pad1d",
        "reflection_pad2d",
        "relu",
        "remainder",
        "repeat",
        "replication_pad1d",
        "replication_pad2d",
        "reshape",
        "roll",
        "round",
        "rsqrt",
        "rsub",
        "scalar_tensor",
        "scatter",
        "select",
        "sgn",
        "sigmoid",
        "sign",
        "silu",
        "sin",
        "slice",
        "softplus",
        "split",
        "split_with_sizes",
        "sqrt",
        "squeeze",
        "stack",
        "std",
        "sub",
        "sum",
        "t",
        "tanh",
        "threshold",
        "topk",
        "sort",
        "transpose",
        "tril",
        "triu",
        "unbind",
        "unfold",
        "unsqueeze",
        "upsample_bicubic2d",
        "upsample_bilinear2d",
        "upsample_linear1d",
        "upsample_nearest1d",
        "upsample_nearest2d",
        "upsample_nearest3d",
        "upsample_trilinear3d",
        "var",
        "var_mean",
        "view",
        "where",
        "zero_",
        "zeros",
        "zeros_like",
        "_pin_memory",
        "lift",
        "_assert_tensor_metadata",
        "sym_size",
        "sym_numel",
        "sym_stride",
        "clone_",
        "selu",
        "celu",
        "_safe_softmax",
    ]
)


class _AtenRecorder(TorchDispatchMode):
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
            self.mult_adds += conv_mult_adds(args[0].shape, args[1].shape, out.shape, bool(args[6]))
        elif name.startswith("_scaled_dot_product_"):
            self.mult_adds += _sdpa_macs(args[0].shape, args[1].shape, args[2].shape)
        elif name in ("mv", "addmv"):
            mat = args[0] if name == "mv" else args[1]
            self.mult_adds += mat.shape[0] * mat.shape[1]
        elif name == "dot":
            self.mult_adds += args[0].numel()
        elif name not in _ATEN_FREE and name.rstrip("_") not in _ATEN_FREE:
            formula = _flop_registry().get(func.overloadpacket)  # other registered formulas
            if formula is not None:
                self.mult_adds += int(formula(*args, **kwargs, out_val=out)) // 2
            else:
                self.unknown.append(f"aten.{name}")
        return out


# ---------------------------------------------------------------------------- the tracer


class Tracer(TorchFunctionMode):
    """Records rows (leaf modules, and the own operations of containers) for one forward pass.

    ``params`` maps ``id`` of each parameter tensor the forward will see to its
    :class:`ParamInfo`; ``frozen_ids`` holds the ids of buffers (and parameters), which
    are neither activations nor saved activations. With ``shortcut=False`` every call
    runs for real (used when a model cannot run on ``meta`` tensors).
    """

    def __init__(
        self,
        *,
        names: dict[int, str],
        leaves: set[int],
        params: dict[int, ParamInfo],
        state_ids: set[int],
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        self.names = names
        self.leaves = leaves
        self.params = params
        self.state_ids = state_ids
        self.shortcut = shortcut
        self.rows: list[TracedRow] = []
        self.stack: list[_Frame] = []
        self.info: dict[int, tuple[Tensor, ReceptiveField, tuple[int, ...] | None]] = {}
        self.saved: dict[int, tuple[Any, int]] = {}
        self.param_use: dict[int, TracedRow] = {}
        self.first_row: dict[int, TracedRow] = {}
        self.calls: dict[int, int] = {}
        self.unlisted: dict[str, int] = {}  # name -> count of calls that ran under the ATen recorder
        self._keep: list[Any] = []  # keeps saved-mask placeholders alive (ids stay unique)
        self.phantom: set[int] = set()  # training-only stand-ins (dropout outputs): not forward activations

    # ------------------------------------------------------------------ module hooks

    def pre_hook(self, module: nn.Module, args: Any) -> None:
        mid = id(module)
        name = self.names.get(mid)
        if name is None:
            name = f"<{type(module).__name__}>"
            leaf = not module._modules
        else:
            leaf = mid in self.leaves
        call = self.calls.get(mid, 0) + 1
        self.calls[mid] = call
        if self.stack:
            self.stack[-1].glue = None  # a child call ends the parent's current run of own operations
        row = None
        if leaf:
            row = TracedRow(name, type(module).__name__, mid, True, call)
            self.rows.append(row)
            self.first_row.setdefault(mid, row)
        self.stack.append(_Frame(module, name, leaf, row))

    def post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self.stack or self.stack[-1].module is not module:
            return
        frame = self.stack.pop()
        if self.stack:
            self.stack[-1].glue = None
        if not frame.leaf:
            return
        with torch._C.DisableTorchFunction():
            outs = _tensors(output)
            row = frame.row
            assert row is not None
            if outs:
                row.output_shape = tuple(outs[0].shape)
                entry = self.info.get(id(outs[0]))
                if entry is not None and entry[0] is outs[0]:
                    row.receptive_field = entry[1]
            ins = _tensors(args)
            alias = {id(t) for t in ins} | {id(t._base) for t in ins if t._base is not None}
            for t in outs:
                base = t._base if t._base is not None else t
                if (
                    id(base) in alias
                    or id(t) in alias
                    or id(base) in self.state_ids
                    or id(base) in self.phantom
                ):
                    continue
                row.activation_elements += t.numel()
                row.activation_bytes += _nbytes(t)
            if row.events == 0 and row.activation_elements:
                # A new tensor appeared without a single traced PyTorch call (an extension
                # kernel called directly): its cost is not known.
                row.unknown_ops.append("untraced computation")

    # ------------------------------------------------------------------ bookkeeping

    def _row(self) -> TracedRow:
        frame = self.stack[-1]
        if frame.row is not None:
            return frame.row
        if frame.glue is None:
            mid = id(frame.module)
            row = TracedRow(frame.name, frame.type, mid, False, self.calls.get(mid, 1))
            self.rows.append(row)
            self.first_row.setdefault(mid, row)
            frame.glue = row
        return frame.glue

    def rf_of(self, t: Any) -> tuple[ReceptiveField, tuple[int, ...] | None] | None:
        if not isinstance(t, Tensor):
            return None
        entry = self.info.get(id(t))
        if entry is None or entry[0] is not t:
            return None
        return entry[1], entry[2]

    def set_rf(self, t: Tensor, rf: ReceptiveField | None, dims: tuple[int, ...] | None) -> None:
        if rf is not None:
            self.info[id(t)] = (t, rf, dims)

    def record(
        self,
        inputs: Iterable[Tensor],
        outputs: Sequence[Tensor],
        *,
        mult_adds: int = 0,
        new: bool | None = None,
        saves: Iterable[Tensor] = (),
        extra_saved_bytes: int = 0,
        unknown: Sequence[str] = (),
    ) -> None:
        """Account one call: mult-adds, parameters used, new activations (for containers' own rows),
        what backward keeps, and unknown operations. ``new=None`` decides per output (not a view,
        not one of the inputs)."""
        if not self.stack:
            return
        row = self._row()
        row.events += 1
        row.mult_adds += mult_adds
        if unknown:
            row.unknown_ops.extend(u for u in unknown if u not in row.unknown_ops)
        inputs = list(inputs)
        params = self.params
        for t in inputs:
            pid = id(t)
            if pid not in params:
                b = t._base
                if b is None or id(b) not in params:
                    continue
                pid = id(b)
            if pid not in self.param_use:
                self.param_use[pid] = row
        if outputs and not row.leaf:
            in_ids = {id(t) for t in inputs}
            for o in outputs:
                is_new = new
                if is_new is None:
                    is_new = id(o) not in in_ids and not o._is_view()
                if is_new and id(o) not in self.state_ids:
                    row.activation_elements += o.numel()
                    row.activation_bytes += _nbytes(o)
            row.output_shape = tuple(outputs[-1].shape)
            entry = self.rf_of(outputs[-1])
            if entry is not None:
                row.receptive_field = entry[0]
        for t in saves:
            base = t._base if t._base is not None else t
            bid = id(base)
            if bid in self.state_ids or bid in params:
                continue
            if bid not in self.saved:
                self.saved[bid] = (base, _nbytes(base))
        if extra_saved_bytes:
            token = object()
            self._keep.append(token)
            self.saved[id(token)] = (token, extra_saved_bytes)

    def empty(self, shape: Sequence[int], dtype: torch.dtype, like: Tensor) -> Tensor:
        return torch.empty(tuple(shape), dtype=dtype, device=like.device)

    # ------------------------------------------------------------------ receptive fields

    def carry_rf(self, inputs: Sequence[Any], out: Tensor, *, src: Tensor | None = None) -> None:
        """The generic rule: merge the inputs' fields; keep the spatial axes if the output's
        trailing dimensions from the first spatial axis on are the input's, else collapse."""
        entries = [(t, e) for t in inputs if (e := self.rf_of(t)) is not None]
        if not entries:
            return
        fields = [e[0] for _, e in entries]
        spatial = [(t, e) for t, e in entries if e[1] is not None]
        if not spatial:
            self.set_rf(out, rfm.merge(fields, spatial=False), None)
            return
        t0, (_, dims) = spatial[0]
        assert dims is not None
        first = min(dims)
        if out.dim() == t0.dim() or (
            out.dim() >= -first and tuple(out.shape[first:]) == tuple(t0.shape[first:])
        ):
            self.set_rf(out, rfm.merge(fields), dims)
        else:
            collapsed = [
                rfm.collapse(e[0], [t.shape[d] for d in e[1]]) if e[1] is not None else e[0]
                for t, e in entries
            ]
            self.set_rf(out, rfm.merge(collapsed, spatial=False), None)

    def collapse_all(self, inputs: Sequence[Any], out: Tensor) -> None:
        """Outputs that mix all positions (matrix products over the spatial layout, attention)."""
        fields = []
        for t in inputs:
            e = self.rf_of(t)
            if e is not None:
                fields.append(rfm.collapse(e[0], [t.shape[d] for d in e[1]]) if e[1] is not None else e[0])
        if fields:
            self.set_rf(out, rfm.merge(fields, spatial=False), None)

    # ------------------------------------------------------------------ dispatch

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if kwargs is None:
            kwargs = {}
        if not self.stack:
            return func(*args, **kwargs)
        handler = _CACHE.get(func)
        if handler is None:
            handler = _resolve(func)
        return handler(self, func, args, kwargs)


# ---------------------------------------------------------------------------- handlers


def _metadata(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return func(*args, **kwargs)


def _conv(n: int, transposed: bool) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x: Tensor = _arg(args, kwargs, 0, "input")
        w: Tensor = _arg(args, kwargs, 1, "weight")
        stride = _tup(_arg(args, kwargs, 3, "stride", 1), n)
        padding = _arg(args, kwargs, 4, "padding", 0)
        if transposed:
            output_padding = _tup(_arg(args, kwargs, 5, "output_padding", 0), n)
            groups = _arg(args, kwargs, 6, "groups", 1)
            dilation = _tup(_arg(args, kwargs, 7, "dilation", 1), n)
        else:
            dilation = _tup(_arg(args, kwargs, 5, "dilation", 1), n)
            groups = _arg(args, kwargs, 6, "groups", 1)
        kernel = tuple(w.shape[2:])
        in_sp = tuple(x.shape[-n:])
        c_in = x.shape[-n - 1]
        if isinstance(padding, str):
            if padding == "same":
                left = tuple(dilation[i] * (kernel[i] - 1) // 2 for i in range(n))
                out_sp = in_sp
            else:  # "valid"
                left = (0,) * n
                out_sp = tuple(
                    _pool_out(in_sp[i], kernel[i], stride[i], 0, dilation[i], False) for i in range(n)
                )
        else:
            left = _tup(padding, n)
            if transposed:
                out_sp = tuple(
                    (in_sp[i] - 1) * stride[i]
                    - 2 * left[i]
                    + dilation[i] * (kernel[i] - 1)
                    + output_padding[i]
                    + 1
                    for i in range(n)
                )
            else:
                out_sp = tuple(
                    _pool_out(in_sp[i], kernel[i], stride[i], left[i], dilation[i], False) for i in range(n)
                )
        if transposed:
            if c_in != w.shape[0]:
                raise RuntimeError(
                    f"conv_transpose{n}d: weight of size {list(w.shape)} expects {w.shape[0]} input channels; "
                    f"got input of size {list(x.shape)}"
                )
            c_out = w.shape[1] * groups
        else:
            if c_in != w.shape[1] * groups:
                raise RuntimeError(
                    f"Given groups={groups}, weight of size {list(w.shape)}, expected input{list(x.shape)} "
                    f"to have {w.shape[1] * groups} channels, but got {c_in} channels instead"
                )
            c_out = w.shape[0]
        if any(v <= 0 for v in out_sp):
            raise RuntimeError(
                f"conv{n}d output would be {list(out_sp)} for input {list(in_sp)} and kernel {list(kernel)}: "
                f"the input is too small"
            )
        out_shape = (*x.shape[: -n - 1], c_out, *out_sp)
        out = tr.empty(out_shape, x.dtype, x) if tr.shortcut else func(*args, **kwargs)
        batched = list(x.shape) if x.dim() == n + 2 else [1, *x.shape]
        out_b = list(out.shape) if out.dim() == n + 2 else [1, *out.shape]
        macs = conv_mult_adds(batched, list(w.shape), out_b, transposed)
        e = tr.rf_of(x)
        if e is not None:
            field_in, dims = e
            if dims is not None and tuple(dims) == tuple(range(-n, 0)):
                rule = rfm.transposed_conv_rf if transposed else rfm.conv_rf
                tr.set_rf(out, rule(field_in, kernel, stride, left, dilation), dims)
            else:
                tr.set_rf(out, field_in, dims)
        tr.record(_arg_tensors(args, kwargs), [out], mult_adds=macs, new=True, saves=[x, w])
        return out

    return handler


def _linear(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x: Tensor = _arg(args, kwargs, 0, "input")
    w: Tensor = _arg(args, kwargs, 1, "weight")
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
    tr.record(_arg_tensors(args, kwargs), [out], mult_adds=macs, new=True, saves=[x, w])
    return out


def _matmul_shape(a: Sequence[int], b: Sequence[int]) -> tuple[tuple[int, ...], int]:
    """Output shape and mult-adds of ``torch.matmul`` (1-d operands are promoted, then squeezed)."""
    a1, b1 = len(a) == 1, len(b) == 1
    A = (1, a[0]) if a1 else tuple(a)
    B = (b[0], 1) if b1 else tuple(b)
    if A[-1] != B[-2]:
        raise RuntimeError(f"matmul: shapes {tuple(a)} and {tuple(b)} cannot be multiplied")
    batch = _broadcast(A[:-2], B[:-2]) if (len(A) > 2 or len(B) > 2) else ()
    n, k, m = A[-2], A[-1], B[-1]
    out = [*batch, n, m]
    if b1:
        out.pop(-1)
    if a1:
        out.pop(-2 if not b1 else -1)
    return tuple(out), math.prod(batch) * n * k * m


def _matmul(kind: str, reverse: bool = False) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kind in ("addmm", "baddbmm", "addmv"):
            a, b = (
                _arg(args, kwargs, 1, "mat1" if kind != "baddbmm" else "batch1"),
                _arg(args, kwargs, 2, "mat2" if kind != "baddbmm" else "batch2"),
            )
            if kind == "addmv":
                a, b = _arg(args, kwargs, 1, "mat"), _arg(args, kwargs, 2, "vec")
        else:
            a, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "other")
            if kind == "bmm" or kind == "mm":
                b = _arg(args, kwargs, 1, "mat2")
            elif kind == "mv":
                b = _arg(args, kwargs, 1, "vec")
            if reverse:
                a, b = b, a
        shape, macs = _matmul_shape(a.shape, b.shape)
        if kind in ("mm", "addmm") and (a.dim() != 2 or b.dim() != 2):
            raise RuntimeError(f"{kind}: expected 2-d matrices; got {tuple(a.shape)} and {tuple(b.shape)}")
        if kind in ("bmm", "baddbmm") and (a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0]):
            raise RuntimeError(
                f"{kind}: expected batches of matrices; got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        out = (
            tr.empty(shape, _result_dtype([a, b]), a)
            if tr.shortcut and "out" not in kwargs
            else func(*args, **kwargs)
        )
        tr.collapse_all([a, b], out)
        saves: list[Tensor] = []
        copies = 0
        if kind == "matmul" and tr.shortcut and (a.dim() > 2 or b.dim() > 2):
            # batched matmul folds the batch dims into one (reshape) before bmm, and bmm keeps
            # what it got: a view of the operand, or a copy where the fold needed one
            batch = shape[: max(len(shape) - 2, 0)] if a.dim() > 1 and b.dim() > 1 else ()
            for t, rows, cols in (
                (a, a.shape[-2] if a.dim() > 1 else 1, a.shape[-1]),
                (b, b.shape[-2], b.shape[-1] if b.dim() > 1 else 1),
            ):
                if t.dim() > 2 and batch and not _folds_without_copy(t, batch, rows, cols):
                    if id(t) not in tr.params and (t._base is None or id(t._base) not in tr.params):
                        copies += _nbytes(t) // max(1, t.numel()) * math.prod(batch) * rows * cols
                else:
                    saves.append(t)
        else:
            saves = [a, b]
        tr.record(
            _arg_tensors(args, kwargs), [out], mult_adds=macs, new=True, saves=saves, extra_saved_bytes=copies
        )
        return out

    return handler


def _folds_without_copy(t: Tensor, batch: Sequence[int], rows: int, cols: int) -> bool:
    """Whether ``t`` broadcast to ``batch + (rows, cols)`` folds to ``(-1, rows, cols)`` as a view."""
    try:
        t.expand(*batch, rows, cols).view(-1, rows, cols)
    except RuntimeError:
        return False
    return True


def _einsum(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    eq = args[0] if args else kwargs.get("equation")
    ops = list(args[1:])
    if len(ops) == 1 and isinstance(ops[0], list | tuple):
        ops = list(ops[0])
    if not isinstance(eq, str) or not all(isinstance(o, Tensor) for o in ops):
        return _unlisted(tr, func, args, kwargs)
    out = func(*args, **kwargs)
    macs = einsum_mult_adds(eq, [tuple(o.shape) for o in ops])
    tr.collapse_all(ops, out)
    tr.record(ops, [out], mult_adds=macs, new=True, saves=ops if len(ops) > 1 else ())
    return out


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


def _sdpa(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    q = _arg(args, kwargs, 0, "query")
    k = _arg(args, kwargs, 1, "key")
    v = _arg(args, kwargs, 2, "value")
    out = tr.empty((*q.shape[:-1], v.shape[-1]), q.dtype, q) if tr.shortcut else func(*args, **kwargs)
    macs = _sdpa_macs(q.shape, k.shape, v.shape)
    tr.collapse_all([q, k, v], out)
    tr.record(_arg_tensors(args, kwargs), [out], mult_adds=macs, new=True, saves=[q, k, v, out])
    return out


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
        count = x.shape[0] * int(_arg(args, kwargs, 1, "num_groups", 1))
    elif name in ("layer_norm", "rms_norm"):
        shape = _arg(args, kwargs, 1, "normalized_shape", (x.shape[-1],))
        count = x.numel() // max(1, math.prod([shape] if isinstance(shape, int) else shape))
    else:
        return 0
    return 2 * count * 4


# Which tensor autograd keeps for backward (derivatives.yaml; checked with saved_tensors_hooks):
# the output for these, the input for the other elementwise ops, both for sqrt and rsqrt ...
_SAVES_RESULT = frozenset(["relu", "sigmoid", "tanh", "softmax", "log_softmax", "exp", "reciprocal"])
_SAVES_BOTH = frozenset(["sqrt", "rsqrt"])
# ... and in place, these backward from their result (same storage), while the other in-place
# activations (hardtanh_/ReLU6, silu_, hardswish_, hardsigmoid_, mish_, clamp_, threshold_) make
# autograd keep a copy of their input: in-place ReLU6 saves no memory in training.
_INPLACE_FROM_RESULT = frozenset(["relu", "leaky_relu", "elu", "selu", "celu", "sigmoid", "tanh", "rrelu"])
_SAVES_NOTHING = frozenset(
    ["neg", "contiguous", "clone", "detach", "channel_shuffle", "native_channel_shuffle"]
)


def _unary(
    inplace_pos: int | None = None, *, force_inplace: bool = False, norm: bool = False
) -> Callable[[str], Handler]:
    def make(name: str) -> Handler:
        saves_result = name in _SAVES_RESULT
        saves_both = name in _SAVES_BOTH
        saves_nothing = name in _SAVES_NOTHING
        inplace_copies = name not in _INPLACE_FROM_RESULT and not saves_nothing

        def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            x = _arg(args, kwargs, 0, "input")
            if not isinstance(x, Tensor):
                return _unlisted(tr, func, args, kwargs)
            inplace = force_inplace or (
                inplace_pos is not None and bool(_arg(args, kwargs, inplace_pos, "inplace", False))
            )
            if inplace:
                out = func(*args, **kwargs) if not tr.shortcut else x
            elif tr.shortcut:
                dtype = kwargs.get("dtype") or x.dtype
                out = tr.empty(x.shape, dtype, x)
            else:
                out = func(*args, **kwargs)
            e = tr.rf_of(x)
            if e is not None:
                tr.set_rf(out, e[0], e[1])
            saves: list[Tensor] = [] if saves_nothing else [out if saves_result else x]
            if saves_both:
                saves.append(out)
            extra = _norm_statistics_bytes(name, x, args, kwargs) if norm else 0
            if inplace and inplace_copies:
                saves = []
                extra += _nbytes(x)
            tr.record(
                _arg_tensors(args, kwargs), [out], new=not inplace, saves=saves, extra_saved_bytes=extra
            )
            return out

        return handler

    return make


def _dropout(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x: Tensor = _arg(args, kwargs, 0, "input")
    p = float(_arg(args, kwargs, 1, "p", 0.5))
    training = _arg(args, kwargs, 2, "training", kwargs.get("train", True))
    inplace = bool(_arg(args, kwargs, 3, "inplace", False))
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
    e = tr.rf_of(x)
    if e is not None:
        tr.set_rf(out, e[0], e[1])
    is_new = out is not x and not out._is_view() and id(out) not in tr.phantom
    tr.record([x], [out], new=is_new, extra_saved_bytes=_nbytes(x) if p > 0 else 0)
    return out


def _binary(kind: str, *, inplace: bool = False, compare: bool = False, divide: bool = False) -> Handler:
    saves_operands = kind in ("mul", "div", "pow", "maximum", "minimum", "atan2")

    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        a = _arg(args, kwargs, 0, "input")
        b = _arg(args, kwargs, 1, "other", kwargs.get("exponent"))
        if "out" in kwargs or (not isinstance(a, Tensor) and not isinstance(b, Tensor)):
            return _unlisted(tr, func, args, kwargs)
        tens = [t for t in (a, b) if isinstance(t, Tensor)]
        shape = _broadcast(*[t.shape for t in tens])
        if inplace:
            if not isinstance(a, Tensor) or tuple(a.shape) != shape:
                raise RuntimeError(
                    f"output with shape {list(getattr(a, 'shape', []))} doesn't match the broadcast shape {list(shape)}"
                )
            out = a if tr.shortcut else func(*args, **kwargs)
        elif tr.shortcut:
            dtype = torch.bool if compare else _result_dtype([a, b], true_divide=divide)
            out = tr.empty(shape, dtype, tens[0])
        else:
            out = func(*args, **kwargs)
        entries = [e for t in tens if (e := tr.rf_of(t)) is not None]
        if entries:
            spatial = [e[1] for e in entries if e[1] is not None]
            tr.set_rf(
                out,
                rfm.merge([e[0] for e in entries], spatial=bool(spatial)),
                spatial[0] if spatial else None,
            )
        # a product or quotient keeps each operand for the other's gradient; with a Python scalar
        # it keeps nothing (x ** 2 keeps x)
        saves = tens if saves_operands and (len(tens) == 2 or kind == "pow") else []
        tr.record(tens, [out], new=not inplace, saves=saves)
        return out

    return handler


def _masked_fill(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0]
    out = func(*args, **kwargs)
    tr.carry_rf([x], out)
    tr.record(_arg_tensors(args, kwargs), [out])
    return out


def _cat(stack: bool) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tensors = _arg(args, kwargs, 0, "tensors")
        dim = _arg(args, kwargs, 1, "dim", kwargs.get("axis", 0))
        if "out" in kwargs or not isinstance(tensors, list | tuple) or not tensors:
            return _unlisted(tr, func, args, kwargs)
        tensors = list(tensors)
        if not tr.shortcut:
            out = func(*args, **kwargs)
        else:
            parts = [t for t in tensors if not (t.dim() == 1 and t.numel() == 0)] or tensors[:1]
            ref = tuple(parts[0].shape)
            if stack:
                for t in tensors:
                    if tuple(t.shape) != ref:
                        raise RuntimeError(
                            f"stack expects each tensor to be equal size; got {[tuple(t.shape) for t in tensors]}"
                        )
                d = dim % (len(ref) + 1)
                shape = (*ref[:d], len(tensors), *ref[d:])
            else:
                d = dim % len(ref)
                for t in parts:
                    s = tuple(t.shape)
                    if len(s) != len(ref) or s[:d] != ref[:d] or s[d + 1 :] != ref[d + 1 :]:
                        raise RuntimeError(
                            f"Sizes of tensors must match except in dimension {d}; got {[tuple(t.shape) for t in parts]}"
                        )
                shape = (*ref[:d], sum(t.shape[d] for t in parts), *ref[d + 1 :])
            out = tr.empty(shape, _result_dtype(parts), parts[0])
        if stack:
            tr.carry_rf(tensors, out)
        else:
            entries = [e for t in tensors if (e := tr.rf_of(t)) is not None]
            if entries:
                spatial = [e[1] for e in entries if e[1] is not None]
                tr.set_rf(
                    out,
                    rfm.merge([e[0] for e in entries], spatial=bool(spatial)),
                    spatial[0] if spatial else None,
                )
        tr.record(tensors, [out], new=True)
        return out

    return handler


def _pool(n: int, kind: str, with_indices: bool = False) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x: Tensor = _arg(args, kwargs, 0, "input")
        kernel = _tup(_arg(args, kwargs, 1, "kernel_size"), n)
        stride_arg = _arg(args, kwargs, 2, "stride", None)
        stride = (
            kernel
            if stride_arg is None or (isinstance(stride_arg, list | tuple) and not stride_arg)
            else _tup(stride_arg, n)
        )
        padding = _tup(_arg(args, kwargs, 3, "padding", 0), n)
        if kind == "max":
            dilation = _tup(_arg(args, kwargs, 4, "dilation", 1), n)
            ceil_mode = bool(_arg(args, kwargs, 5, "ceil_mode", False))
            indices = with_indices or bool(_arg(args, kwargs, 6, "return_indices", False))
        else:
            dilation = (1,) * n
            ceil_mode = bool(_arg(args, kwargs, 4, "ceil_mode", False))
            indices = False
        in_sp = tuple(x.shape[-n:])
        out_sp = tuple(
            _pool_out(in_sp[i], kernel[i], stride[i], padding[i], dilation[i], ceil_mode) for i in range(n)
        )
        if any(v <= 0 for v in out_sp):
            raise RuntimeError(
                f"{kind}_pool{n}d: output size {list(out_sp)} is too small for input {list(x.shape)}"
            )
        shape = (*x.shape[:-n], *out_sp)
        if tr.shortcut:
            out = tr.empty(shape, x.dtype, x)
            result: Any = (out, tr.empty(shape, torch.int64, x)) if indices else out
        else:
            result = func(*args, **kwargs)
            out = result[0] if indices else result
        e = tr.rf_of(x)
        if e is not None:
            if e[1] is not None and tuple(e[1]) == tuple(range(-n, 0)):
                tr.set_rf(out, rfm.conv_rf(e[0], kernel, stride, padding, dilation), e[1])
            else:
                tr.set_rf(out, e[0], e[1])
        # backward keeps the input (both kinds) and, for max pooling, int64 argmax indices
        tr.record([x], [out], new=True, saves=[x], extra_saved_bytes=out.numel() * 8 if kind == "max" else 0)
        return result

    return handler


def _adaptive_pool(n: int, kind: str, with_indices: bool = False) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x: Tensor = _arg(args, kwargs, 0, "input")
        osz = _arg(args, kwargs, 1, "output_size")
        in_sp = tuple(x.shape[-n:])
        osz_t = (osz,) * n if isinstance(osz, int) else tuple(osz)
        if len(osz_t) == 1 and n > 1:
            osz_t = osz_t * n
        out_sp = tuple(in_sp[i] if osz_t[i] is None else int(osz_t[i]) for i in range(n))
        indices = with_indices or (kind == "max" and bool(_arg(args, kwargs, 2, "return_indices", False)))
        shape = (*x.shape[:-n], *out_sp)
        if tr.shortcut:
            out = tr.empty(shape, x.dtype, x)
            result: Any = (out, tr.empty(shape, torch.int64, x)) if indices else out
        else:
            result = func(*args, **kwargs)
            out = result[0] if indices else result
        e = tr.rf_of(x)
        if e is not None:
            if e[1] is not None and tuple(e[1]) == tuple(range(-n, 0)):
                tr.set_rf(out, rfm.adaptive_pool_rf(e[0], in_sp, out_sp), e[1])
            else:
                tr.set_rf(out, e[0], e[1])
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


def _reduce(name: str) -> Handler:
    keeps = name in ("amax", "amin")

    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = _arg(args, kwargs, 0, "input")
        dim = _arg(args, kwargs, 1, "dim", None)
        keepdim = bool(_arg(args, kwargs, 2, "keepdim", False))
        if (
            not isinstance(x, Tensor)
            or isinstance(dim, torch.dtype)
            or "out" in kwargs
            or isinstance(keepdim, torch.dtype)
        ):
            return _unlisted(tr, func, args, kwargs)
        nd = x.dim()
        if dim is None or (isinstance(dim, list | tuple) and len(dim) == 0 and not keeps):
            red = set(range(nd))
        elif isinstance(dim, int):
            red = {dim % max(nd, 1)}
        elif isinstance(dim, list | tuple) and len(dim) == 0:
            red = set(range(nd))
        else:
            red = {int(d) % max(nd, 1) for d in dim}
        shape = (
            tuple(1 if i in red else s for i, s in enumerate(x.shape))
            if keepdim
            else tuple(s for i, s in enumerate(x.shape) if i not in red)
        )
        if tr.shortcut:
            dtype = kwargs.get("dtype") or (
                x.dtype if x.dtype.is_floating_point or name != "mean" else torch.get_default_dtype()
            )
            if (
                name == "sum"
                and not x.dtype.is_floating_point
                and not x.dtype.is_complex
                and "dtype" not in kwargs
            ):
                dtype = torch.int64
            out = tr.empty(shape, dtype, x)
        else:
            out = func(*args, **kwargs)
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


def _pad(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x: Tensor = _arg(args, kwargs, 0, "input")
    pad = list(_arg(args, kwargs, 1, "pad"))
    shape = list(x.shape)
    for i in range(len(pad) // 2):
        shape[-1 - i] += pad[2 * i] + pad[2 * i + 1]
    out = tr.empty(shape, x.dtype, x) if tr.shortcut else func(*args, **kwargs)
    e = tr.rf_of(x)
    if e is not None:
        rf, dims = e
        if dims is not None:
            left = [pad[2 * (-1 - d)] if 2 * (-1 - d) < len(pad) else 0 for d in dims]
            tr.set_rf(out, rfm.pad_rf(rf, left), dims)
        else:
            tr.set_rf(out, rf, dims)
    tr.record([x], [out], new=True)
    return out


def _interpolate(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x: Tensor = _arg(args, kwargs, 0, "input")
    mode = _arg(args, kwargs, 3, "mode", "nearest")
    out = func(*args, **kwargs)
    e = tr.rf_of(x)
    if e is not None:
        rf, dims = e
        n = x.dim() - 2
        if dims is not None and tuple(dims) == tuple(range(-n, 0)):
            if mode == "area":
                tr.set_rf(out, rfm.adaptive_pool_rf(rf, x.shape[-n:], out.shape[-n:]), dims)
            else:
                taps = 1 if "nearest" in str(mode) else (4 if mode == "bicubic" else 2)
                tr.set_rf(out, rfm.resample_rf(rf, x.shape[-n:], out.shape[-n:], taps), dims)
        else:
            tr.set_rf(out, rf, dims)
    tr.record([x], [out], new=True)
    return out


def _view(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Shape and data-movement calls that run for real (views on meta tensors are cheap)."""
    out = func(*args, **kwargs)
    outs = _tensors(out)
    if not outs:
        return out
    ins = _arg_tensors(args, kwargs)
    for o in outs:
        tr.carry_rf(ins[:1] if ins else [], o)
    tr.record(ins, outs)
    return out


def _permute(kind: str) -> Handler:
    def handler(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = func(*args, **kwargs)
        x = args[0]
        e = tr.rf_of(x)
        if e is not None:
            rf, dims = e
            if dims is not None:
                nd = x.dim()
                if kind == "permute":
                    perm = (
                        args[1:]
                        if len(args) > 2 or (len(args) == 2 and isinstance(args[1], int))
                        else _arg(args, kwargs, 1, "dims")
                    )
                    perm = [int(p) % nd for p in perm]
                    mapping = {old: new for new, old in enumerate(perm)}
                elif kind == "transpose":
                    d0, d1 = int(_arg(args, kwargs, 1, "dim0")) % nd, int(_arg(args, kwargs, 2, "dim1")) % nd
                    mapping = {i: i for i in range(nd)}
                    mapping[d0], mapping[d1] = d1, d0
                else:  # t, T, mT: the last two axes swap
                    mapping = {i: i for i in range(nd)}
                    if nd >= 2:
                        mapping[nd - 1], mapping[nd - 2] = nd - 2, nd - 1
                tr.set_rf(out, rf, tuple(mapping[d % nd] - nd for d in dims))
            else:
                tr.set_rf(out, rf, None)
        tr.record([x], [out])
        return out

    return handler


def _factory(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    out = func(*args, **kwargs)
    outs = _tensors(out)
    if outs:
        tr.record(_arg_tensors(args, kwargs), outs, new=True)
    return out


def _unlisted(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A call without a rule: run it for real under the ATen recorder (counts its products,
    names any operation it cannot judge), carry receptive fields by the generic rule, and let
    autograd itself say what it would keep for backward (a composite such as
    ``F.multi_head_attention_forward`` keeps its projections and attention weights)."""
    from torch.utils._pytree import tree_map

    name = _name_of(func)
    if getattr(func, "__module__", None) == "torch.nn.functional" and hasattr(func, "__code__"):
        return _transparent(tr, func, args, kwargs)
    recorder = _AtenRecorder()
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
    outs = _tensors(out)
    if not outs and not recorder.ops:
        return out
    tr.unlisted[name] = tr.unlisted.get(name, 0) + 1
    ins = _arg_tensors(args, kwargs)
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
            internal[id(base)] = _nbytes(base)
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


def _transparent(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A ``torch.nn.functional`` composite without a rule (``multi_head_attention_forward``): run
    its body under the tracer, which then handles the linear layers and attention inside."""
    with _functional_checks_off(), tr:
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------- name -> handler

_METADATA = frozenset(
    [
        "size",
        "dim",
        "shape",
        "dtype",
        "device",
        "numel",
        "stride",
        "is_contiguous",
        "ndim",
        "ndimension",
        "element_size",
        "nelement",
        "requires_grad",
        "is_floating_point",
        "is_complex",
        "layout",
        "is_cuda",
        "is_meta",
        "is_cpu",
        "is_sparse",
        "is_quantized",
        "is_mkldnn",
        "data_ptr",
        "storage_offset",
        "__len__",
        "__hash__",
        "__format__",
        "__repr__",
        "__bool__",
        "item",
        "tolist",
        "grad_fn",
        "is_leaf",
        "names",
        "__index__",
        "__int__",
        "__float__",
        "untyped_storage",
        "_base",
        "_is_view",
        "get_device",
        "__reduce_ex__",
        "__deepcopy__",
        "grad",
        "output_nr",
        "_version",
        "is_inference",
        "is_nested",
        "__contains__",
        "has_names",
        "is_signed",
        "__array__",
        "_cdata",
        "itemsize",
        "nbytes",
        "__dir__",
        "__sizeof__",
        "__str__",
        "is_shared",
        "__iter__",
        "__reversed__",
    ]
)

_VIEWS = frozenset(
    [
        "view",
        "reshape",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "expand",
        "expand_as",
        "view_as",
        "reshape_as",
        "contiguous",
        "narrow",
        "select",
        "getitem",
        "__getitem__",
        "unbind",
        "chunk",
        "split",
        "tensor_split",
        "hsplit",
        "vsplit",
        "repeat",
        "tile",
        "clone",
        "detach",
        "to",
        "type",
        "type_as",
        "float",
        "half",
        "double",
        "bfloat16",
        "int",
        "long",
        "bool",
        "short",
        "byte",
        "char",
        "cpu",
        "cuda",
        "requires_grad_",
        "roll",
        "flip",
        "index_select",
        "gather",
        "nan_to_num",
        "fill",
        "zero",
        "copy",
        "setitem",
        "__setitem__",
        "channel_shuffle",
        "native_channel_shuffle",
        "pixel_shuffle",
        "pixel_unshuffle",
        "data",
        "movedim",
        "moveaxis",
        "swapaxes",
        "swapdims",
        "masked_select",
        "take",
        "diagonal",
        "tril",
        "triu",
        "new_tensor",
        "_assert",
        "retain_grad",
        "register_hook",
        "as_strided",
        "unfold",
        "broadcast_to",
        "broadcast_tensors",
        "atleast_2d",
        "atleast_3d",
        "ravel",
        "squeeze_",
        "unsqueeze_",
        "resize_",
        "scatter",
        "scatter_add",
        "index_put",
        "index_add",
        "where",
        "sort",
        "topk",
        "argmax",
        "argmin",
        "argsort",
        "cumsum",
        "cumprod",
        "embedding",
        "one_hot",
        "lerp",
        "addcmul",
        "addcdiv",
        "std",
        "var",
        "std_mean",
        "var_mean",
        "norm",
        "max",
        "min",
        "logsumexp",
        "prod",
        "all",
        "any",
        "count_nonzero",
        "isnan",
        "isinf",
        "isfinite",
        "linspace",
    ]
)

_FACTORIES = frozenset(
    [
        "new_zeros",
        "new_ones",
        "new_full",
        "new_empty",
        "zeros_like",
        "ones_like",
        "full_like",
        "empty_like",
        "rand_like",
        "randn_like",
        "randint_like",
        "zeros",
        "ones",
        "empty",
        "full",
        "arange",
        "tensor",
        "as_tensor",
        "eye",
        "rand",
        "randn",
        "randint",
        "meshgrid",
    ]
)

# name -> position of the ``inplace`` argument
_UNARY_INPLACE = {
    "relu": 1,
    "relu6": 1,
    "hardtanh": 3,
    "leaky_relu": 2,
    "elu": 2,
    "selu": 1,
    "celu": 2,
    "silu": 1,
    "hardswish": 1,
    "hardsigmoid": 1,
    "mish": 1,
    "threshold": 3,
    "rrelu": 4,
}
_UNARY = frozenset(
    [
        "sigmoid",
        "tanh",
        "gelu",
        "softplus",
        "softsign",
        "logsigmoid",
        "tanhshrink",
        "softshrink",
        "hardshrink",
        "exp",
        "log",
        "sqrt",
        "rsqrt",
        "abs",
        "neg",
        "reciprocal",
        "sin",
        "cos",
        "erf",
        "sign",
        "floor",
        "ceil",
        "round",
        "square",
        "clamp",
        "clip",
        "clamp_min",
        "clamp_max",
        "log_softmax",
        "softmax",
        "softmin",
        "exp2",
        "log2",
        "log1p",
        "expm1",
        "sgn",
        "prelu",
        "trunc",
        "frac",
        "sinc",
    ]
)
_NORMS = frozenset(
    ["batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm", "rms_norm"]
)

_BINARY = {
    "add": "add",
    "sub": "sub",
    "subtract": "sub",
    "rsub": "sub",
    "mul": "mul",
    "multiply": "mul",
    "div": "div",
    "divide": "div",
    "true_divide": "div",
    "truediv": "div",
    "floor_divide": "floordiv",
    "floordiv": "floordiv",
    "remainder": "mod",
    "mod": "mod",
    "fmod": "mod",
    "pow": "pow",
    "float_power": "pow",
    "maximum": "maximum",
    "minimum": "minimum",
    "fmax": "maximum",
    "fmin": "minimum",
    "atan2": "atan2",
    "hypot": "atan2",
    "bitwise_and": "and",
    "bitwise_or": "or",
    "bitwise_xor": "xor",
    "and": "and",
    "or": "or",
    "xor": "xor",
    "lshift": "shift",
    "rshift": "shift",
    "bitwise_left_shift": "shift",
    "bitwise_right_shift": "shift",
}
_COMPARE = frozenset(
    [
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "greater",
        "less",
        "greater_equal",
        "less_equal",
        "not_equal",
        "logical_and",
        "logical_or",
        "logical_xor",
    ]
)

# dunder -> (name, in-place, reversed)
_DUNDER: dict[str, tuple[str, bool, bool]] = {}
for _core in [
    "add",
    "sub",
    "mul",
    "truediv",
    "floordiv",
    "mod",
    "pow",
    "and",
    "or",
    "xor",
    "lshift",
    "rshift",
    "matmul",
]:
    _DUNDER[_core] = (_core, False, False)
    _DUNDER["i" + _core] = (_core, True, False)
    _DUNDER["r" + _core] = (_core, False, True)
for _core in ["eq", "ne", "lt", "le", "gt", "ge"]:
    _DUNDER[_core] = (_core, False, False)
_DUNDER.update(
    {
        "div": ("div", False, False),
        "idiv": ("div", True, False),
        "rdiv": ("div", False, True),
        "neg": ("neg", False, False),
        "pos": ("positive", False, False),
        "abs": ("abs", False, False),
        "invert": ("bitwise_not", False, False),
        "getitem": ("getitem", False, False),
        "setitem": ("setitem", False, False),
    }
)


def _name_of(func: Any) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "__get__":
        name = getattr(getattr(func, "__self__", None), "__name__", "__get__")
    return str(name)


def _handler_for(raw: str) -> Handler:
    if raw in _METADATA:
        return _metadata
    inplace = reverse = False
    name = raw
    if raw.startswith("__") and raw.endswith("__") and len(raw) > 4:
        core = raw[2:-2]
        if core in _DUNDER:
            name, inplace, reverse = _DUNDER[core]
    elif raw.endswith("_") and not raw.startswith("_"):
        name, inplace = raw[:-1], True
    elif raw.startswith("_") and raw.lstrip("_") in ("relu", "relu6"):
        name = raw.lstrip("_")

    for n in (1, 2, 3):
        if name == f"conv{n}d":
            return _conv(n, False)
        if name == f"conv_transpose{n}d":
            return _conv(n, True)
        if name in (f"max_pool{n}d", f"max_pool{n}d_with_indices"):
            return _pool(n, "max", with_indices=name.endswith("indices"))
        if name == f"avg_pool{n}d":
            return _pool(n, "avg")
        if name in (f"adaptive_avg_pool{n}d",):
            return _adaptive_pool(n, "avg")
        if name in (f"adaptive_max_pool{n}d", f"adaptive_max_pool{n}d_with_indices"):
            return _adaptive_pool(n, "max", with_indices=name.endswith("indices"))
    if name == "linear":
        return _linear
    if name in ("matmul", "mm", "bmm", "addmm", "baddbmm", "mv", "addmv"):
        return _matmul(name, reverse)
    if name == "einsum":
        return _einsum
    if name == "scaled_dot_product_attention":
        return _sdpa
    if name in (
        "dropout",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "alpha_dropout",
        "feature_alpha_dropout",
        "feature_dropout",
    ):
        return _dropout
    if name in _UNARY_INPLACE:
        return _unary(_UNARY_INPLACE[name], force_inplace=inplace)(name)
    if name in _NORMS:
        return _unary(None, force_inplace=inplace, norm=True)(name)
    if name in _UNARY or name == "normalize":
        return _unary(None, force_inplace=inplace)(name)
    if name in ("positive",):
        return _view
    if name in _BINARY:
        kind = _BINARY[name]
        return _binary(kind, inplace=inplace, divide=kind == "div")
    if name in _COMPARE:
        return _binary("compare", inplace=inplace, compare=True)
    if name == "masked_fill":
        return _masked_fill
    if name in ("cat", "concat", "concatenate"):
        return _cat(False)
    if name == "stack":
        return _cat(True)
    if name in ("mean", "sum", "amax", "amin", "nansum", "nanmean"):
        return _reduce(name)
    if name == "pad":
        return _pad
    if name in ("interpolate", "upsample", "upsample_nearest", "upsample_bilinear"):
        return _interpolate
    if name == "permute":
        return _permute("permute")
    if name in ("transpose", "swapaxes", "swapdims"):
        return _permute("transpose")
    if name in ("t", "T", "mT", "adjoint", "H", "mH"):
        return _permute("t")
    if name in _FACTORIES:
        return _factory
    if name in _VIEWS or raw in _VIEWS:
        return _view
    return _unlisted


_CACHE: dict[Any, Handler] = {}


def _resolve(func: Any) -> Handler:
    handler = _handler_for(_name_of(func))
    with contextlib.suppress(TypeError):  # an unhashable callable is not cached
        _CACHE[func] = handler
    return handler
