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
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnkit.analysis.rf import ReceptiveField, input_rf
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

MB = 1e6  # tables print megabytes as 10^6 bytes

# bytes of optimiser state per byte of trainable parameters (torch.optim's defaults)
OPTIMIZER_STATE = {"sgd": 0, "sgd_momentum": 1, "momentum": 1, "rmsprop": 1, "adam": 2, "adamw": 2}


# ---------------------------------------------------------------------------- records


@dataclass
class LayerRow:
    """One row of a summary: a leaf module's call, or a container's own operations.

    Counts are per image. ``activation_elements`` are the elements of the new tensors
    the layer creates (its output; zero for in-place and view outputs such as
    ``ReLU(inplace=True)`` and ``Flatten``). ``params`` counts each parameter once, on
    the row of the first call of the module holding it; ``weight_params`` and
    ``bias_params`` split them as the lecture's VGG table does (it counts no biases).
    ``own_ops`` rows hold the operations a container does itself in ``forward``
    (the residual addition of a ResNet block, Inception's concatenation).
    """

    name: str
    type: str
    depth: int
    output_shape: tuple[int, ...] | None
    params: int
    trainable_params: int
    weight_params: int
    bias_params: int
    mult_adds: int
    activation_elements: int
    activation_bytes: int
    receptive_field: ReceptiveField | None
    unknown_ops: tuple[str, ...] = ()
    own_ops: bool = False
    call: int = 1

    @property
    def unknown(self) -> bool:
        """True when some operation of this layer has no counting rule (its mult-adds are not complete)."""
        return bool(self.unknown_ops)

    @property
    def frozen_params(self) -> int:
        return self.params - self.trainable_params

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "params": self.params,
            "trainable_params": self.trainable_params,
            "weight_params": self.weight_params,
            "bias_params": self.bias_params,
            "mult_adds": self.mult_adds,
            "activation_elements": self.activation_elements,
            "activation_bytes": self.activation_bytes,
            "receptive_field": None if self.receptive_field is None else self.receptive_field.to_dict(),
            "unknown": self.unknown,
            "unknown_ops": list(self.unknown_ops),
            "own_ops": self.own_ops,
            "depth": self.depth,
            "call": self.call,
        }


@dataclass(frozen=True)
class TrainingMemory:
    """Memory one training step needs, in bytes (an estimate: a lower bound without workspace).

    ``activation_bytes`` is what autograd keeps for backward (inputs of convolutions,
    linear layers and norms, outputs of ReLU, max-pool indices, dropout masks) for the
    whole batch; tensors shared by several layers count once.
    """

    batch_size: int
    optimizer: str
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.grad_bytes + self.optimizer_bytes + self.activation_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "param_bytes": self.param_bytes,
            "grad_bytes": self.grad_bytes,
            "optimizer_state_bytes": self.optimizer_bytes,
            "saved_activation_bytes": self.activation_bytes,
            "total_bytes": self.total_bytes,
        }


def _fmt_int(v: int) -> str:
    return f"{v:,}"


def _fmt_mb(v: float) -> str:
    return f"{v / MB:,.2f}"


def _fmt_shape(s: Sequence[int] | None) -> str:
    return "-" if s is None else "[" + ", ".join(str(v) for v in s) + "]"


def _fmt_rf(rf: ReceptiveField | None, part: str) -> str:
    if rf is None:
        return "-"
    vals = getattr(rf, part)
    if vals is None:
        return "-"
    nums = [int(v) if float(v).is_integer() else round(float(v), 2) for v in vals]
    uniq = list(dict.fromkeys(nums))
    text = str(uniq[0]) if len(uniq) == 1 else "x".join(str(v) for v in nums)
    return text + ("*" if part == "size" and rf.global_context else "")


@dataclass
class ModelSummary:
    """Per-layer and total figures of one model at one input size; see :func:`summarize`.

    All counts are per image (``batch_size`` only sets the batch of the traced call
    and of :meth:`training_memory`). ``total_flops`` is ``2 x total_mult_adds``
    (a multiply and an add) over convolutions, linear layers, matrix products and
    attention; normalisation, activations, pooling and elementwise arithmetic count
    zero (batch norm folds into the preceding convolution at inference).
    """

    model: str
    input_size: tuple[int, ...]
    batch_size: int
    dtype: str
    layers: list[LayerRow]
    total_params: int
    trainable_params: int
    param_bytes: int
    trainable_param_bytes: int
    buffer_bytes: int
    total_mult_adds: int
    activation_elements: int
    activation_bytes: int
    saved_activation_bytes: int
    output_shape: tuple[int, ...] | None
    method: str
    depth: int | None = None
    unused: list[tuple[str, int]] = field(default_factory=list)
    module_types: dict[str, str] = field(default_factory=dict)
    input_elements: int = 0

    # ------------------------------------------------------------------ totals

    @property
    def total_flops(self) -> int:
        """FLOPs = 2 x mult-adds (a multiply and an add per multiply-accumulate)."""
        return 2 * self.total_mult_adds

    @property
    def frozen_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def unknown_layers(self) -> list[LayerRow]:
        """Rows with an operation that has no counting rule; their mult-adds are incomplete."""
        return [r for r in self.layers if r.unknown]

    @property
    def final_receptive_field(self) -> ReceptiveField | None:
        """The field of the last layer whose output is still a map (more than one position),
        i.e. the last one before global pooling or flattening (VGG-16: pool5, 212 px)."""
        last = None
        for r in reversed(self.layers):
            f = r.receptive_field
            if f is None or not f.spatial or r.output_shape is None:
                continue
            if last is None:
                last = f
            if any(v > 1 for v in r.output_shape[len(r.output_shape) - len(f.size) :]):
                return f
        return last

    def training_memory(self, optimizer: str = "adam", batch_size: int | None = None) -> TrainingMemory:
        """Parameters + gradients + optimiser state + saved activations for one training step.

        ``optimizer``: ``sgd`` (no state), ``sgd_momentum`` (one buffer per parameter),
        ``rmsprop`` (one), ``adam``/``adamw`` (two). Gradients and state exist for
        trainable parameters only.
        """
        key = optimizer.lower()
        if key not in OPTIMIZER_STATE:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZER_STATE)}")
        b = self.batch_size if batch_size is None else batch_size
        if b < 1:
            raise ValueError(f"batch_size must be >= 1; got {b}")
        return TrainingMemory(
            batch_size=b,
            optimizer=key,
            param_bytes=self.param_bytes + self.buffer_bytes,
            grad_bytes=self.trainable_param_bytes,
            optimizer_bytes=OPTIMIZER_STATE[key] * self.trainable_param_bytes,
            activation_bytes=self.saved_activation_bytes * b,
        )

    # ------------------------------------------------------------------ rows

    def rows(self, depth: int | None = None) -> list[LayerRow]:
        """The rows, or, with ``depth``, consecutive rows merged by the first ``depth`` parts of their
        names (``depth=1`` gives VGG's ``features``, ``avgpool``, ``classifier``)."""
        depth = self.depth if depth is None else depth
        if depth is None:
            return list(self.layers)
        if depth < 1:
            raise ValueError(f"depth must be >= 1; got {depth}")
        groups: list[tuple[str, list[LayerRow]]] = []
        for r in self.layers:
            key = r.name if r.name.startswith(("(", "<")) else ".".join(r.name.split(".")[:depth])
            if groups and groups[-1][0] == key:
                groups[-1][1].append(r)
            else:
                groups.append((key, [r]))
        out: list[LayerRow] = []
        for key, members in groups:
            if len(members) == 1 and members[0].name == key:
                out.append(LayerRow(**members[0].__dict__))
                continue
            fields = [m.receptive_field for m in members if m.receptive_field is not None]
            out.append(
                LayerRow(
                    name=key,
                    type=self.module_types.get(key, members[0].type),
                    depth=min(depth, members[0].depth),
                    output_shape=next(
                        (m.output_shape for m in reversed(members) if m.output_shape is not None), None
                    ),
                    params=sum(m.params for m in members),
                    trainable_params=sum(m.trainable_params for m in members),
                    weight_params=sum(m.weight_params for m in members),
                    bias_params=sum(m.bias_params for m in members),
                    mult_adds=sum(m.mult_adds for m in members),
                    activation_elements=sum(m.activation_elements for m in members),
                    activation_bytes=sum(m.activation_bytes for m in members),
                    receptive_field=fields[-1] if fields else None,
                    unknown_ops=tuple(dict.fromkeys(u for m in members for u in m.unknown_ops)),
                )
            )
        return out

    # ------------------------------------------------------------------ renderings

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        """Plain data: ``model``, ``input_size``, ``total_params``, ``total_mult_adds``,
        ``activation_elements``, ``layers`` (each with ``name``, ``type``, ``output_shape``,
        ``params``, ``mult_adds``, ``activation_elements``, ``receptive_field``), and more."""
        rf = self.final_receptive_field
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "method": self.method,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "param_bytes": self.param_bytes,
            "buffer_bytes": self.buffer_bytes,
            "total_mult_adds": self.total_mult_adds,
            "total_flops": self.total_flops,
            "flops_note": "FLOPs = 2 x mult-adds; mult-adds count conv, linear, matmul and attention",
            "activation_elements": self.activation_elements,
            "activation_bytes": self.activation_bytes,
            "saved_activation_bytes": self.saved_activation_bytes,
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "final_receptive_field": None if rf is None else rf.to_dict(),
            "training_memory": {
                opt: self.training_memory(opt).to_dict() for opt in ("sgd", "sgd_momentum", "adam")
            },
            "unknown_layers": [r.name for r in self.unknown_layers],
            "unused_modules": [{"name": n, "params": p} for n, p in self.unused],
            "per": "image",
            "layers": [r.to_dict() for r in self.rows(depth)],
        }

    def to_json(self, depth: int | None = None, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(depth), indent=indent)

    _HEADERS = (
        "Layer (type)",
        "Output shape",
        "Params (#)",
        "Weights (#)",
        "Biases (#)",
        "Mult-adds (#/image)",
        "Activations (#/image)",
        "Act. memory (MB/image)",
        "RF (px)",
        "Jump (px)",
    )

    def _cells(self, r: LayerRow) -> list[str]:
        type_ = r.type + (", own ops" if r.own_ops else "") + (", UNKNOWN" if r.unknown else "")
        return [
            f"{r.name} ({type_})",
            _fmt_shape(r.output_shape),
            _fmt_int(r.params),
            _fmt_int(r.weight_params),
            _fmt_int(r.bias_params),
            _fmt_int(r.mult_adds) + ("?" if r.unknown else ""),
            _fmt_int(r.activation_elements),
            _fmt_mb(r.activation_bytes),
            _fmt_rf(r.receptive_field, "size"),
            _fmt_rf(r.receptive_field, "jump"),
        ]

    def _total_cells(self, rows: Sequence[LayerRow]) -> list[str]:
        return [
            "Total (input included in activations)",
            _fmt_shape(self.output_shape),
            _fmt_int(self.total_params),
            _fmt_int(sum(r.weight_params for r in rows)),
            _fmt_int(sum(r.bias_params for r in rows)),
            _fmt_int(self.total_mult_adds),
            _fmt_int(self.activation_elements),
            _fmt_mb(self.activation_bytes),
            "",
            "",
        ]

    def footer(self) -> list[str]:
        """The totals, one line each, with their units."""
        shape = " x ".join(str(v) for v in (self.batch_size, *self.input_size))
        mem = {o: self.training_memory(o) for o in ("sgd", "sgd_momentum", "adam")}
        m = mem["adam"]
        lines = [
            f"Model: {self.model}; input {shape} ({self.dtype}); analysed on {self.method}",
            f"Parameters: {_fmt_int(self.total_params)} ({_fmt_mb(self.param_bytes)} MB; "
            f"trainable {_fmt_int(self.trainable_params)}, frozen {_fmt_int(self.frozen_params)}); "
            f"buffers {_fmt_mb(self.buffer_bytes)} MB",
            f"Mult-adds: {_fmt_int(self.total_mult_adds)} per image ({self.total_mult_adds / 1e9:,.3f} G); "
            f"FLOPs = 2 x mult-adds = {self.total_flops / 1e9:,.3f} GFLOP "
            "(conv, linear, matmul, attention; norms, activations, pooling, additions count 0)",
            f"Forward activations: {_fmt_int(self.activation_elements)} elements per image "
            f"({_fmt_mb(self.activation_bytes)} MB, input included; in-place and view outputs not counted again)",
            f"Training memory, batch {m.batch_size} (estimate): parameters {_fmt_mb(m.param_bytes)} MB + gradients "
            f"{_fmt_mb(m.grad_bytes)} MB + saved activations {_fmt_mb(m.activation_bytes)} MB + optimizer state: "
            + "; ".join(
                f"{name} {_fmt_mb(t.optimizer_bytes)} MB -> total {_fmt_mb(t.total_bytes)} MB"
                for name, t in mem.items()
            ),
        ]
        rf = self.final_receptive_field
        if rf is not None:
            lines.append(
                f"Receptive field of the last spatial layer: {_fmt_rf(rf, 'size')} px (jump {_fmt_rf(rf, 'jump')} px)"
            )
        if self.unknown_layers:
            ops = sorted({u for r in self.unknown_layers for u in r.unknown_ops})
            lines.append(
                f"UNKNOWN: {len(self.unknown_layers)} layer(s) with operations that have no counting rule "
                f"(their mult-adds are marked '?' and not complete): {', '.join(ops)}"
            )
        if self.unused:
            lines.append(
                "Not called in this forward (parameters counted in the total only): "
                + ", ".join(f"{n} ({_fmt_int(p)})" for n, p in self.unused)
            )
        if any(r.receptive_field is not None and r.receptive_field.global_context for r in self.layers):
            lines.append(
                "RF size*: a branch without spatial layout (an SE gate, attention) also reaches these units, so they "
                "depend on the whole input; the size given is that of the spatial path"
            )
        lines.append(
            "MB = 10^6 bytes; RF = receptive field in input pixels (size / jump between units / centre of the first unit)"
        )
        return lines

    def to_table(self, depth: int | None = None) -> str:
        """A plain-text table with units in every header, then the totals."""
        rows = self.rows(depth)
        body = [list(self._HEADERS)] + [self._cells(r) for r in rows] + [self._total_cells(rows)]
        widths = [max(len(row[i]) for row in body) for i in range(len(self._HEADERS))]
        numeric = set(range(2, len(self._HEADERS)))

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                c.rjust(w) if i in numeric else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        rule = "-" * len(line(body[0]))
        text = [line(body[0]), rule, *(line(r) for r in body[1:-1]), rule, line(body[-1]), ""]
        return "\n".join(text + self.footer())

    def to_markdown(self, depth: int | None = None) -> str:
        rows = self.rows(depth)
        head = "| " + " | ".join(self._HEADERS) + " |"
        align = "|" + "|".join(["---"] * 2 + ["---:"] * (len(self._HEADERS) - 2)) + "|"
        body = ["| " + " | ".join(c.replace("|", "\\|") for c in self._cells(r)) + " |" for r in rows]
        total = "| " + " | ".join(f"**{c}**" if c else "" for c in self._total_cells(rows)) + " |"
        return "\n".join([head, align, *body, total, "", *(f"- {ln}" for ln in self.footer())])

    def to_csv(self, depth: int | None = None) -> str:
        """One line per row; the headers carry the units. Numbers are plain (no separators)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            [
                "name",
                "type",
                "output_shape",
                "params (#)",
                "trainable_params (#)",
                "weight_params (#)",
                "bias_params (#)",
                "mult_adds (#/image)",
                "activation_elements (elements/image)",
                "activation_bytes (bytes/image)",
                "rf_size (px)",
                "rf_jump (px)",
                "rf_start (px)",
                "unknown_ops",
            ]
        )
        for r in self.rows(depth):
            f = r.receptive_field
            w.writerow(
                [
                    r.name,
                    r.type + (" (own ops)" if r.own_ops else ""),
                    "x".join(str(v) for v in r.output_shape) if r.output_shape else "",
                    r.params,
                    r.trainable_params,
                    r.weight_params,
                    r.bias_params,
                    r.mult_adds,
                    r.activation_elements,
                    r.activation_bytes,
                    "" if f is None else _fmt_rf(f, "size"),
                    "" if f is None else _fmt_rf(f, "jump"),
                    "" if f is None else _fmt_rf(f, "start"),
                    ";".join(r.unknown_ops),
                ]
            )
        return buf.getvalue()

    def render(self, fmt: str = "table", depth: int | None = None) -> str:
        """``fmt``: ``table``, ``markdown``, ``csv`` or ``json``."""
        renderers: dict[str, Callable[[int | None], str]] = {
            "table": self.to_table,
            "markdown": self.to_markdown,
            "csv": self.to_csv,
            "json": self.to_json,
        }
        if fmt not in renderers:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(renderers)}")
        return renderers[fmt](depth)

    def __str__(self) -> str:
        return self.to_table()


# ---------------------------------------------------------------------------- building on meta


@contextlib.contextmanager
def _parameters_to_meta() -> Iterator[None]:
    """Move each parameter and buffer to ``meta`` as it is registered (for builders that compute
    with tensors while constructing, which ``torch.device("meta")`` breaks): only one tensor is
    ever allocated at a time."""
    reg_param = nn.Module.register_parameter
    reg_buffer = nn.Module.register_buffer

    def register_parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        reg_param(self, name, param)
        if param is not None and not param.is_meta:
            p = self._parameters[name]
            assert p is not None
            self._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    def register_buffer(
        self: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True
    ) -> None:
        reg_buffer(self, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = reg_param  # type: ignore[method-assign]
        nn.Module.register_buffer = reg_buffer  # type: ignore[method-assign]


# In-place calls that change a tensor's metadata, not its values; everything else in place is a
# no-op on a meta tensor (which has no values), so initialisers are skipped while building.
_METADATA_INPLACE = frozenset(
    [
        "requires_grad_",
        "resize_",
        "resize_as_",
        "squeeze_",
        "unsqueeze_",
        "t_",
        "transpose_",
        "swapdims_",
        "swapaxes_",
        "as_strided_",
        "set_",
        "detach_",
        "share_memory_",
        "rename_",
        "retain_grad",
    ]
)


class _SkipMetaInit(TorchFunctionMode):
    """Skips value-only in-place calls (``normal_``, ``kaiming_normal_``, ``fill_``) on meta tensors:
    PyTorch runs them through Python decompositions (~1 ms each) that produce nothing on meta."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.startswith("_") and name not in _METADATA_INPLACE:
            # nn.init passes its tensor by keyword
            target = args[0] if args else (kwargs or {}).get("tensor", (kwargs or {}).get("input"))
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **(kwargs or {}))


def build_on_meta(builder: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> nn.Module:
    """Call a model builder so that its weights live on ``meta`` (nothing allocated).

    First under ``torch.device("meta")``; a builder that computes with tensors while
    constructing (torchvision's RegNet rounds widths with ``.tolist()``) fails there,
    and is built again with each parameter moved to ``meta`` as it is registered.
    Weight initialisers are skipped (meta tensors have no values to initialise).
    """
    try:
        with torch.device("meta"), _SkipMetaInit():
            return builder(*args, **kwargs)
    except (NotImplementedError, RuntimeError) as e:
        if "meta" not in str(e):
            raise
    with _parameters_to_meta(), _SkipMetaInit():
        return builder(*args, **kwargs)


# ---------------------------------------------------------------------------- summarize


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


def _is_meta_failure(e: BaseException) -> bool:
    """A forward that needs tensor values (``.item()``, ``.tolist()``, ``nonzero``), which meta lacks."""
    msg = str(e)
    return isinstance(e, NotImplementedError | RuntimeError) and (
        "cannot be called on meta" in msg or "no data" in msg or "data-independent" in msg
    )


def _kind(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if leaf.endswith("bias"):
        return "bias"
    if leaf.endswith("weight"):
        return "weight"
    return "other"


def _trace(
    model: nn.Module, input_size: tuple[int, ...], batch_size: int, dtype: torch.dtype, *, meta: bool
) -> tuple[Tracer, Any, dict[int, tuple[ParamInfo, int]], int, list[tuple[str, nn.Module]]]:
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
    on_meta = all(t.is_meta for _, t, _ in named_params) and all(t.is_meta for _, t in named_buffers)
    swap = meta and not on_meta
    stand_ins: dict[str, torch.Tensor] = {}
    if swap:
        for n, p, _ in named_params:
            stand_ins[n] = nn.Parameter(
                torch.empty(p.shape, dtype=p.dtype, device="meta"), requires_grad=p.requires_grad
            )
        for n, buf in named_buffers:
            stand_ins[n] = torch.empty(buf.shape, dtype=buf.dtype, device="meta")
    params: dict[int, ParamInfo] = {}
    owners: dict[int, tuple[ParamInfo, int]] = {}
    for n, p, owner_id in named_params:
        numel = p.numel()
        info = ParamInfo(n, names[owner_id], numel, numel * p.element_size(), p.requires_grad, _kind(n))
        seen_as = stand_ins.get(n, p)
        params[id(seen_as)] = info
        owners[id(seen_as)] = (info, owner_id)
    state_ids = set(params) | {id(stand_ins.get(n, buf)) for n, buf in named_buffers}
    buffer_bytes = sum(buf.numel() * buf.element_size() for _, buf in named_buffers)

    tracer = Tracer(names=names, leaves=leaves, params=params, state_ids=state_ids, shortcut=meta)
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
        with torch.no_grad(), _eval_mode([m for _, m in named_modules]), tracer:
            if swap:
                out = torch.func.functional_call(model, stand_ins, (x,), tie_weights=True, strict=False)
            else:
                out = model(x)
    finally:
        for h in handles:
            h.remove()
    tracer.stack.clear()
    return tracer, out, owners, buffer_bytes, named_modules


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
    ids = {id(m): m for _, m in named_modules}
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

    def per_image(v: int) -> int:
        return v // b if v % b == 0 else round(v / b)

    layers: list[LayerRow] = []
    for r in traced:
        numel = sum(p.numel for p in r.params)
        layers.append(
            LayerRow(
                name=r.name,
                type=r.type,
                depth=0 if r.name.startswith(("(", "<")) else r.name.count(".") + 1,
                output_shape=r.output_shape,
                params=numel,
                trainable_params=sum(p.numel for p in r.params if p.trainable),
                weight_params=sum(p.numel for p in r.params if p.kind == "weight"),
                bias_params=sum(p.numel for p in r.params if p.kind == "bias"),
                mult_adds=per_image(r.mult_adds),
                activation_elements=per_image(r.activation_elements),
                activation_bytes=per_image(r.activation_bytes),
                receptive_field=r.receptive_field,
                unknown_ops=tuple(r.unknown_ops),
                own_ops=not r.leaf,
                call=r.call,
            )
        )
    infos = [i for i, _ in owners.values()]
    total_params = sum(i.numel for i in infos)
    param_bytes = sum(i.nbytes for i in infos)
    itemsize = torch.empty((), dtype=dtype, device="meta").element_size()
    input_elements = 1
    for v in input_size:
        input_elements *= v
    out_t = out if isinstance(out, torch.Tensor) else next(iter(_flat_tensors(out)), None)
    del ids
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
        saved_activation_bytes=per_image(sum(v for _, v in tracer.saved.values())),
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


def summarize(
    model_or_name: nn.Module | str,
    input_size: Sequence[int] = (3, 224, 224),
    *,
    batch_size: int = 1,
    dtype: torch.dtype = torch.float32,
    depth: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> ModelSummary:
    """Per-layer parameters, mult-adds, activations and receptive fields of a model; see the module doc.

    ``model_or_name``: a registered model name (built on ``meta`` with ``in_chans`` taken
    from ``input_size`` and ``model_kwargs`` passed on; ``dtype`` casts its weights) or
    any ``nn.Module`` (left untouched). ``input_size`` excludes the batch dimension.
    ``depth`` groups the rendered rows by module-name prefix (``ModelSummary.rows``).
    """
    size = _check_input_size(input_size)
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
            if not _is_meta_failure(e):
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
        if not _is_meta_failure(e) or all(t.is_meta for t in model.state_dict().values()):
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


# ---------------------------------------------------------------------------- compare


@dataclass
class Comparison:
    """Models side by side (the lecture's MobileNet table 4 as one call)."""

    summaries: list[ModelSummary]

    _HEADERS = (
        "Model",
        "Params (M)",
        "Mult-adds (M/image)",
        "FLOPs (G/image)",
        "Activations (M elements/image)",
        "Params (MB)",
        "Final RF (px)",
    )

    def rows(self) -> list[list[str]]:
        out = []
        for s in self.summaries:
            out.append(
                [
                    s.model,
                    f"{s.total_params / 1e6:,.2f}",
                    f"{s.total_mult_adds / 1e6:,.1f}" + ("?" if s.unknown_layers else ""),
                    f"{s.total_flops / 1e9:,.3f}",
                    f"{s.activation_elements / 1e6:,.2f}",
                    f"{s.param_bytes / MB:,.2f}",
                    _fmt_rf(s.final_receptive_field, "size"),
                ]
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "model": s.model,
                    "input_size": list(s.input_size),
                    "total_params": s.total_params,
                    "total_mult_adds": s.total_mult_adds,
                    "total_flops": s.total_flops,
                    "activation_elements": s.activation_elements,
                    "param_bytes": s.param_bytes,
                    "final_receptive_field": None
                    if s.final_receptive_field is None
                    else s.final_receptive_field.to_dict(),
                    "unknown_layers": [r.name for r in s.unknown_layers],
                }
                for s in self.summaries
            ]
        }

    def to_table(self) -> str:
        body = [list(self._HEADERS), *self.rows()]
        widths = [max(len(r[i]) for r in body) for i in range(len(self._HEADERS))]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )

        return "\n".join(
            [
                line(body[0]),
                "-" * len(line(body[0])),
                *(line(r) for r in body[1:]),
                "",
                "FLOPs = 2 x mult-adds; M = 10^6, G = 10^9, MB = 10^6 bytes",
            ]
        )

    def to_markdown(self) -> str:
        head = "| " + " | ".join(self._HEADERS) + " |"
        align = "|---|" + "|".join(["---:"] * (len(self._HEADERS) - 1)) + "|"
        return "\n".join([head, align, *("| " + " | ".join(r) + " |" for r in self.rows())])

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            [
                "model",
                "params (#)",
                "mult_adds (#/image)",
                "flops (#/image)",
                "activation_elements (#/image)",
                "param_bytes (bytes)",
                "final_rf (px)",
            ]
        )
        for s in self.summaries:
            w.writerow(
                [
                    s.model,
                    s.total_params,
                    s.total_mult_adds,
                    s.total_flops,
                    s.activation_elements,
                    s.param_bytes,
                    _fmt_rf(s.final_receptive_field, "size"),
                ]
            )
        return buf.getvalue()

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def render(self, fmt: str = "table") -> str:
        renderers: dict[str, Callable[[], str]] = {
            "table": self.to_table,
            "markdown": self.to_markdown,
            "csv": self.to_csv,
            "json": self.to_json,
        }
        if fmt not in renderers:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(renderers)}")
        return renderers[fmt]()

    def __str__(self) -> str:
        return self.to_table()


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
