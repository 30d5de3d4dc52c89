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
written out (in :mod:`cnnkit.analysis.op_math`) because importing that module loads
triton (~80 MB, ~0.3 s); the tests check them against flop_counter's own functions
and against brute-force counts of reference implementations. A transposed
convolution is counted from its *input*: each input element meets every weight of its group once,
``N * H_in * W_in * C_in * C_out / groups * k_h * k_w``, which is what its
scatter-and-add reference does (tools that count it like a convolution from the
output size report ``stride^2`` times too many). Bias additions are not counted.
Normalisation, activation, pooling, elementwise arithmetic, resampling and data
movement count zero mult-adds by rule: batch norm folds into the neighbouring
convolution at inference, and the papers (VGG, MobileNet, ResNet) and torchvision's
``_ops`` metadata count only the products above. Calls with no rule here run for
real (on ``meta`` tensors) under a :class:`~torch.utils._python_dispatch.TorchDispatchMode`
that counts their ATen operations (with the same formulas, then
``torch.utils.flop_counter``'s registry); an ATen operation neither counted nor
known to be free marks the layer as *unknown*, never as zero.

This module owns the records (:class:`ParamInfo`, :class:`TracedRow`), the
:class:`Tracer` (module hooks, bookkeeping, receptive-field rules shared by the
handlers) and the dispatch from a call's name to its handler. The names are
tabulated in :mod:`cnnkit.analysis.op_tables`, the handlers live in
:mod:`cnnkit.analysis.products` (calls that count mult-adds) and
:mod:`cnnkit.analysis.handlers` (calls that count none), the formulas in
:mod:`cnnkit.analysis.op_math`, and the fallback for calls without a rule in
:mod:`cnnkit.analysis.aten`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnkit.analysis import handlers as h
from cnnkit.analysis import op_tables as ops
from cnnkit.analysis import products as p
from cnnkit.analysis import rf as rfm
from cnnkit.analysis.aten import unlisted
from cnnkit.analysis.op_math import einsum_mult_adds as einsum_mult_adds  # importable here, as it was
from cnnkit.analysis.op_math import name_of, nbytes, tensors
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
            outs = tensors(output)
            row = frame.row
            assert row is not None
            if outs:
                row.output_shape = tuple(outs[0].shape)
                entry = self.info.get(id(outs[0]))
                if entry is not None and entry[0] is outs[0]:
                    row.receptive_field = entry[1]
            ins = tensors(args)
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
                row.activation_bytes += nbytes(t)
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
                    row.activation_bytes += nbytes(o)
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
                self.saved[bid] = (base, nbytes(base))
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

    def pass_rf(self, x: Any, out: Tensor) -> None:
        """An output that sees what its input sees (elementwise ops, dropout)."""
        e = self.rf_of(x)
        if e is not None:
            self.set_rf(out, e[0], e[1])

    def merge_rf(self, inputs: Sequence[Any], out: Tensor) -> None:
        """Branches that meet (addition, concatenation): the largest field, spatial if any input is."""
        entries = [e for t in inputs if (e := self.rf_of(t)) is not None]
        if entries:
            spatial = [e[1] for e in entries if e[1] is not None]
            self.set_rf(
                out,
                rfm.merge([e[0] for e in entries], spatial=bool(spatial)),
                spatial[0] if spatial else None,
            )

    def window_rf(
        self, x: Any, out: Tensor, n: int, rule: Callable[[ReceptiveField], ReceptiveField]
    ) -> None:
        """A window over the last ``n`` axes (convolution, pooling, resampling): ``rule`` grows the
        field when those axes are the input's spatial ones; otherwise the field passes unchanged."""
        e = self.rf_of(x)
        if e is None:
            return
        field_in, dims = e
        if dims is not None and tuple(dims) == tuple(range(-n, 0)):
            self.set_rf(out, rule(field_in), dims)
        else:
            self.set_rf(out, field_in, dims)

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


# ---------------------------------------------------------------------------- name -> handler


def _canonical(raw: str) -> tuple[str, bool, bool]:
    """The name a call is handled as, whether it works in place, and whether its operands swap
    (``__radd__``); ``relu_`` and ``__iadd__`` are in place, ``_relu`` is ``relu``."""
    if raw.startswith("__") and raw.endswith("__") and len(raw) > 4:
        core = raw[2:-2]
        if core in ops.DUNDER:
            return ops.DUNDER[core]
    elif raw.endswith("_") and not raw.startswith("_"):
        return raw[:-1], True, False
    elif raw.startswith("_") and raw.lstrip("_") in ("relu", "relu6"):
        return raw.lstrip("_"), False, False
    return raw, False, False


def _windowed(name: str) -> Handler | None:
    """Convolutions and pooling over 1-3 spatial axes (``conv2d``, ``max_pool3d_with_indices``)."""
    for n in (1, 2, 3):
        if name == f"conv{n}d":
            return p.conv(n, False)
        if name == f"conv_transpose{n}d":
            return p.conv(n, True)
        if name in (f"max_pool{n}d", f"max_pool{n}d_with_indices"):
            return h.pool(n, "max", with_indices=name.endswith("indices"))
        if name == f"avg_pool{n}d":
            return h.pool(n, "avg")
        if name in (f"adaptive_avg_pool{n}d",):
            return h.adaptive_pool(n, "avg")
        if name in (f"adaptive_max_pool{n}d", f"adaptive_max_pool{n}d_with_indices"):
            return h.adaptive_pool(n, "max", with_indices=name.endswith("indices"))
    return None


def _elementwise(name: str, inplace: bool) -> Handler | None:
    """Activations, norms and the other unary ops; binary arithmetic and comparisons."""
    if name in ops.UNARY_INPLACE:
        return h.unary(ops.UNARY_INPLACE[name], force_inplace=inplace)(name)
    if name in ops.NORMS:
        return h.unary(None, force_inplace=inplace, norm=True)(name)
    if name in ops.UNARY or name == "normalize":
        return h.unary(None, force_inplace=inplace)(name)
    if name in ("positive",):
        return h.view
    if name in ops.BINARY:
        kind = ops.BINARY[name]
        return h.binary(kind, inplace=inplace, divide=kind == "div")
    if name in ops.COMPARE:
        return h.binary("compare", inplace=inplace, compare=True)
    return None


def _movement(name: str, raw: str) -> Handler:
    """Concatenation, reductions, padding, resampling, axis swaps, factories and views; else the
    ATen fallback."""
    if name == "masked_fill":
        return h.masked_fill
    if name in ops.CONCATS:
        return h.cat(False)
    if name == "stack":
        return h.cat(True)
    if name in ops.REDUCTIONS:
        return h.reduce(name)
    if name == "pad":
        return h.pad
    if name in ops.RESAMPLES:
        return h.interpolate
    if name == "permute":
        return h.permute("permute")
    if name in ops.TRANSPOSES:
        return h.permute("transpose")
    if name in ops.LAST_TWO_SWAPS:
        return h.permute("t")
    if name in ops.FACTORIES:
        return h.factory
    if name in ops.VIEWS or raw in ops.VIEWS:
        return h.view
    return unlisted


def handler_for(raw: str) -> Handler:
    """The handler of a call named ``raw`` (as :func:`~cnnkit.analysis.op_math.name_of` gives it)."""
    if raw in ops.METADATA:
        return h.metadata
    name, inplace, reverse = _canonical(raw)
    windowed = _windowed(name)
    if windowed is not None:
        return windowed
    if name == "linear":
        return p.linear
    if name in ops.MATMULS:
        return p.matmul(name, reverse)
    if name == "einsum":
        return p.einsum
    if name == "scaled_dot_product_attention":
        return p.sdpa
    if name in ops.DROPOUTS:
        return h.dropout
    return _elementwise(name, inplace) or _movement(name, raw)


_CACHE: dict[Any, Handler] = {}


def _resolve(func: Any) -> Handler:
    handler = handler_for(name_of(func))
    with contextlib.suppress(TypeError):  # an unhashable callable is not cached
        _CACHE[func] = handler
    return handler
