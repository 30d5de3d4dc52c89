"""``summarize``: the lecture's per-layer arithmetic for any network, without allocating its weights.

The lecture's "VGGNet" slide tabulates, for each layer of VGG-16 at 224x224, the
output's size ("memory") and the layer's weights ("params", biases not counted);
its "MobileNets" slide (Howard et al. 2017, table 4) compares parameters and
mult-adds of MobileNet with and without depthwise separable convolutions; the
"Receptive Fields" slide grows the field of a dilated stack 3, 7, 15.
:func:`summarize` computes all of these, per layer, for any ``nn.Module``:

* a model *name* is built from the registry on the ``meta`` device (``with
  torch.device("meta")``), so no weight is ever allocated;
* a user's module is analysed without being touched: its parameters and buffers are
  swapped for ``meta`` stand-ins of the same shape for the one traced call
  (:func:`torch.func.functional_call`, which puts the originals back), its
  train/eval flags are restored, and no hook stays behind, so its ``state_dict`` is
  identical, keys and values, before and after;
* the forward runs on ``meta`` tensors under :class:`~cnnkit.analysis.tracer.Tracer`,
  which returns empty tensors of the right shapes instead of computing: VGG-16,
  ResNet-152 and SENet-154 summarise in milliseconds to tens of milliseconds.

If a model's forward needs tensor *values* (``.item()``, data-dependent control
flow) it cannot run on ``meta``; a user's module is then run once for real on its
own device with a zero input (its weights exist already; activations are
allocated), and ``summary.method`` says so.

Activation counts follow the lecture's "memory" column (values per image, each
layer's output), with two refinements: in-place and view outputs
(``ReLU(inplace=True)``, ``Flatten``, eval-mode dropout) allocate nothing and count
zero, and the total includes the input. The lecture's own VGG-16 total, "24M * 4
bytes ~= 96MB / image", does not match its rows: they sum to 15,237,608 values,
60.95 MB at 4 bytes (``tests/analysis/test_analysis_lecture_tables.py``).

This module owns the tracing of one forward (:func:`summarize`, :func:`compare`); the
records it returns are in :mod:`cnnkit.analysis.records`, their renderings in
:mod:`cnnkit.analysis.render`, and building on ``meta`` in :mod:`cnnkit.analysis.meta`
(all of whose public names are importable from here too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnkit.analysis.meta import build_on_meta, is_meta_failure, meta_stand_ins
from cnnkit.analysis.records import Comparison, LayerRow, ModelSummary, TrainingMemory
from cnnkit.analysis.rf import input_rf
from cnnkit.analysis.tracer import ParamInfo, TracedRow, Tracer

__all__ = [
    "Comparison",
    "LayerRow",
    "ModelSummary",
    "TrainingMemory",
    "build_on_meta",
    "compare",
    "summarize",
]


@contextlib.contextmanager
def _eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Eval mode for the traced call (dropout off, BN on running statistics); flags restored after."""
    flags = [(m, m.training) for m in modules]
    for m, t in flags:
        if t:
            object.__setattr__(m, "training", False)
    try:
        yield
    finally:
        for m, t in flags:
            if t:
                object.__setattr__(m, "training", True)


def _kind(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if leaf.endswith("bias"):
        return "bias"
    if leaf.endswith("weight"):
        return "weight"
    return "other"


@dataclass
class _State:
    """A model's modules, parameters and buffers as the tracer sees them (each tensor once)."""

    named_modules: list[tuple[str, nn.Module]]
    names: dict[int, str]
    leaves: set[int]
    named_params: list[tuple[str, nn.Parameter, int]]  # (name, parameter, id of the owning module)
    named_buffers: list[tuple[str, torch.Tensor]]


def _state(model: nn.Module) -> _State:
    named_modules = list(model.named_modules())
    names = {id(m): (n or "(root)") for n, m in named_modules}
    leaves = {id(m) for _, m in named_modules if not m._modules}
    named_params: list[tuple[str, nn.Parameter, int]] = []
    named_buffers: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    for prefix, m in named_modules:
        for pn, p in m._parameters.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                named_params.append((f"{prefix}.{pn}" if prefix else pn, p, id(m)))
        for bn, buf in m._buffers.items():
            if buf is not None and id(buf) not in seen:
                seen.add(id(buf))
                named_buffers.append((f"{prefix}.{bn}" if prefix else bn, buf))
    return _State(named_modules, names, leaves, named_params, named_buffers)


def _trace(
    model: nn.Module, input_size: tuple[int, ...], batch_size: int, dtype: torch.dtype, *, meta: bool
) -> tuple[Tracer, Any, dict[int, tuple[ParamInfo, int]], int, list[tuple[str, nn.Module]]]:
    st = _state(model)
    named_params, named_buffers = st.named_params, st.named_buffers
    on_meta = all(t.is_meta for _, t, _ in named_params) and all(t.is_meta for _, t in named_buffers)
    swap = meta and not on_meta
    stand_ins = meta_stand_ins([(n, p) for n, p, _ in named_params], named_buffers) if swap else {}
    params: dict[int, ParamInfo] = {}
    owners: dict[int, tuple[ParamInfo, int]] = {}
    for n, p, owner_id in named_params:
        numel = p.numel()
        info = ParamInfo(n, st.names[owner_id], numel, numel * p.element_size(), p.requires_grad, _kind(n))
        seen_as = stand_ins.get(n, p)
        params[id(seen_as)] = info
        owners[id(seen_as)] = (info, owner_id)
    state_ids = set(params) | {id(stand_ins.get(n, buf)) for n, buf in named_buffers}
    buffer_bytes = sum(buf.numel() * buf.element_size() for _, buf in named_buffers)

    tracer = Tracer(names=st.names, leaves=st.leaves, params=params, state_ids=state_ids, shortcut=meta)
    device: torch.device | str = "meta"
    if not meta:
        tensors = [t for _, t, _ in named_params] + [t for _, t in named_buffers]
        device = tensors[0].device if tensors else "cpu"
    make = torch.empty if meta else torch.zeros
    x = make((batch_size, *input_size), dtype=dtype, device=device)
    n_spatial = len(input_size) - 1
    if n_spatial >= 1:
        tracer.set_rf(x, input_rf(n_spatial), tuple(range(-n_spatial, 0)))

    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    handles = [
        register_module_forward_pre_hook(tracer.pre_hook),
        register_module_forward_hook(tracer.post_hook),
    ]
    try:
        with torch.no_grad(), _eval_mode([m for _, m in st.named_modules]), tracer:
            if swap:
                out = torch.func.functional_call(model, stand_ins, (x,), tie_weights=True, strict=False)
            else:
                out = model(x)
    finally:
        for h in handles:
            h.remove()
    tracer.stack.clear()
    return tracer, out, owners, buffer_bytes, st.named_modules


def _per_image(v: int, batch_size: int) -> int:
    return v // batch_size if v % batch_size == 0 else round(v / batch_size)


def _layer_row(r: TracedRow, batch_size: int) -> LayerRow:
    """A traced row as a summary's row, with its counts per image."""
    return LayerRow(
        name=r.name,
        type=r.type,
        depth=0 if r.name.startswith(("(", "<")) else r.name.count(".") + 1,
        output_shape=r.output_shape,
        params=sum(p.numel for p in r.params),
        trainable_params=sum(p.numel for p in r.params if p.trainable),
        weight_params=sum(p.numel for p in r.params if p.kind == "weight"),
        bias_params=sum(p.numel for p in r.params if p.kind == "bias"),
        mult_adds=_per_image(r.mult_adds, batch_size),
        activation_elements=_per_image(r.activation_elements, batch_size),
        activation_bytes=_per_image(r.activation_bytes, batch_size),
        receptive_field=r.receptive_field,
        unknown_ops=tuple(r.unknown_ops),
        own_ops=not r.leaf,
        call=r.call,
    )


def _analyse(
    model: nn.Module,
    label: str,
    input_size: tuple[int, ...],
    batch_size: int,
    dtype: torch.dtype,
    depth: int | None,
    *,
    meta: bool = True,
    method: str = "meta",
) -> ModelSummary:
    tracer, out, owners, buffer_bytes, named_modules = _trace(model, input_size, batch_size, dtype, meta=meta)
    traced: list[TracedRow] = tracer.rows
    # parameters: on the first row of the module that holds them, else the first row that used them
    unused: dict[str, int] = {}
    for pid, (info, owner_id) in owners.items():
        row = tracer.first_row.get(owner_id) or tracer.param_use.get(pid)
        if row is None:
            unused[info.owner] = unused.get(info.owner, 0) + info.numel
        else:
            row.params.append(info)
    # containers that hold parameters and were called but did nothing themselves get a row
    b = batch_size
    layers = [_layer_row(r, b) for r in traced]
    infos = [i for i, _ in owners.values()]
    total_params = sum(i.numel for i in infos)
    param_bytes = sum(i.nbytes for i in infos)
    itemsize = torch.empty((), dtype=dtype, device="meta").element_size()
    input_elements = 1
    for v in input_size:
        input_elements *= v
    out_t = out if isinstance(out, torch.Tensor) else next(iter(_flat_tensors(out)), None)
    return ModelSummary(
        model=label,
        input_size=tuple(input_size),
        batch_size=batch_size,
        dtype=str(dtype).removeprefix("torch."),
        layers=layers,
        total_params=total_params,
        trainable_params=sum(i.numel for i in infos if i.trainable),
        param_bytes=param_bytes,
        trainable_param_bytes=sum(i.nbytes for i in infos if i.trainable),
        buffer_bytes=buffer_bytes,
        total_mult_adds=sum(r.mult_adds for r in layers),
        activation_elements=input_elements + sum(r.activation_elements for r in layers),
        activation_bytes=input_elements * itemsize + sum(r.activation_bytes for r in layers),
        saved_activation_bytes=_per_image(sum(v for _, v in tracer.saved.values()), b),
        output_shape=None if out_t is None else tuple(out_t.shape),
        method=method,
        depth=depth,
        unused=sorted(unused.items()),
        module_types={(n or "(root)"): type(m).__name__ for n, m in named_modules},
        input_elements=input_elements,
    )


def _flat_tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, list | tuple):
        return [t for o in obj for t in _flat_tensors(o)]
    return []


def _check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    try:
        size = tuple(int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_size must be a sequence of ints like (3, 224, 224); got {input_size!r}"
        ) from None
    if (
        not size
        or any(v < 1 for v in size)
        or any(float(a) != float(b) for a, b in zip(size, input_size, strict=True))
    ):
        raise ValueError(
            f"input_size must be positive ints (channels, height, width); got {tuple(input_size)}"
        )
    return size


def _torchinfo_input(
    input_size: Sequence[int] | None,
    input_data: torch.Tensor | None,
    batch_size: int | None,
    dtype: torch.dtype | None,
) -> tuple[tuple[int, ...], int, torch.dtype]:
    """``(channels, height, width)``, the batch and the dtype from torchinfo's or cnnkit's spelling:
    an ``input_size`` of 4 numbers, or ``input_data``, carries the batch first (torchinfo);
    of 3 numbers it is one image (cnnkit's)."""
    if input_data is not None:
        if input_size is not None:
            raise ValueError("give input_size or input_data, not both")
        if not isinstance(input_data, torch.Tensor) or input_data.dim() < 2:
            raise ValueError(
                f"input_data must be a batch tensor (N, C, H, W); got {type(input_data).__name__}"
            )
        input_size, dtype = tuple(input_data.shape), dtype or input_data.dtype
    size = _check_input_size((3, 224, 224) if input_size is None else input_size)
    if len(size) == 4:  # torchinfo's (N, C, H, W)
        if batch_size is not None and batch_size != size[0]:
            raise ValueError(f"input_size {size} has batch {size[0]}, batch_size says {batch_size}; give one")
        size, batch_size = size[1:], size[0]
    return size, 1 if batch_size is None else batch_size, dtype or torch.float32


def summarize(
    model_or_name: nn.Module | str,
    input_size: Sequence[int] | None = None,
    *,
    input_data: torch.Tensor | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    depth: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> ModelSummary:
    """Per-layer parameters, mult-adds, activations and receptive fields of a model; see the module doc.

    ``model_or_name``: a registered model name (built on ``meta`` with ``in_chans`` taken
    from ``input_size`` and ``model_kwargs`` passed on; ``dtype`` casts its weights) or
    any ``nn.Module`` (left untouched). ``input_size``: one image, ``(C, H, W)`` (default
    ``(3, 224, 224)``), or as torchinfo's ``summary`` takes it, with the batch first,
    ``(N, C, H, W)``; or ``input_data``, a batch whose shape and dtype are used (torchinfo's
    ``input_data``; the counts depend on shapes only). ``batch_size`` (default 1) sets the
    batch of a 3-number ``input_size``. ``depth`` groups the rendered rows by module-name
    prefix (``ModelSummary.rows``), as torchinfo's ``depth``.
    """
    size, batch_size, dtype = _torchinfo_input(input_size, input_data, batch_size, dtype)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth must be None (every leaf layer) or an int >= 1; got {depth!r}")
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype such as torch.float32; got {dtype!r}")
    if isinstance(model_or_name, str):
        from cnnkit.models.registry import create_model

        kwargs = dict(model_kwargs or {})
        if size[0] != 3:
            kwargs.setdefault("in_chans", size[0])
        name = model_or_name
        model = build_on_meta(create_model, name, **kwargs)
        if dtype.is_floating_point and dtype != torch.float32:
            model = model.to(dtype)
        try:
            return _analyse(model, name, size, batch_size, dtype, depth)
        except (NotImplementedError, RuntimeError) as e:
            if not is_meta_failure(e):
                raise
            real = create_model(name, **kwargs)
            if dtype.is_floating_point and dtype != torch.float32:
                real = real.to(dtype)
            return _analyse(
                real, name, size, batch_size, dtype, depth, meta=False, method="cpu (weights allocated)"
            )
    if not isinstance(model_or_name, nn.Module):
        raise ValueError(
            f"summarize needs an nn.Module or a registered model name; got {type(model_or_name).__name__}"
        )
    if model_kwargs:
        raise ValueError("model_kwargs only applies to a model name; build the module with them instead")
    model = model_or_name
    label = str(getattr(model, "model_name", type(model).__name__))
    try:
        return _analyse(model, label, size, batch_size, dtype, depth)
    except (NotImplementedError, RuntimeError) as e:
        if not is_meta_failure(e) or all(t.is_meta for t in model.state_dict().values()):
            raise
        dev = next((t.device for t in model.state_dict().values()), torch.device("cpu"))
        return _analyse(
            model,
            label,
            size,
            batch_size,
            dtype,
            depth,
            meta=False,
            method=f"{dev} (real forward, zero input)",
        )


def compare(
    models: Sequence[nn.Module | str | ModelSummary],
    input_size: Sequence[int] = (3, 224, 224),
    *,
    dtype: torch.dtype = torch.float32,
) -> Comparison:
    """Summarise several models (names, modules or finished summaries) at one input size, side by side."""
    if not models:
        raise ValueError("compare needs at least one model")
    return Comparison(
        [m if isinstance(m, ModelSummary) else summarize(m, input_size, dtype=dtype) for m in models]
    )
