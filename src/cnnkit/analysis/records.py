"""The records of an analysis: :class:`LayerRow`, :class:`TrainingMemory`, :class:`ModelSummary`, :class:`Comparison`.

What a summary holds (per-layer rows and per-image totals), what it derives from
them (grouped rows, the final receptive field, training memory) and what its
tables show (headers, cells, totals, footer lines); :mod:`cnnkit.analysis.render`
lays the tables out. :func:`cnnkit.analysis.summary.summarize` and
:func:`~cnnkit.analysis.summary.compare` make these records. Imports no torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cnnkit.analysis.render import MB, Table, choose, csv_text, fmt_int, fmt_mb, fmt_rf, fmt_shape
from cnnkit.analysis.rf import ReceptiveField

__all__ = ["OPTIMIZER_STATE", "Comparison", "LayerRow", "ModelSummary", "TrainingMemory"]

# bytes of optimiser state per byte of trainable parameters (torch.optim's defaults)
OPTIMIZER_STATE = {"sgd": 0, "sgd_momentum": 1, "momentum": 1, "rmsprop": 1, "adam": 2, "adamw": 2}


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
            fmt_shape(r.output_shape),
            fmt_int(r.params),
            fmt_int(r.weight_params),
            fmt_int(r.bias_params),
            fmt_int(r.mult_adds) + ("?" if r.unknown else ""),
            fmt_int(r.activation_elements),
            fmt_mb(r.activation_bytes),
            fmt_rf(r.receptive_field, "size"),
            fmt_rf(r.receptive_field, "jump"),
        ]

    def _total_cells(self, rows: Sequence[LayerRow]) -> list[str]:
        return [
            "Total (input included in activations)",
            fmt_shape(self.output_shape),
            fmt_int(self.total_params),
            fmt_int(sum(r.weight_params for r in rows)),
            fmt_int(sum(r.bias_params for r in rows)),
            fmt_int(self.total_mult_adds),
            fmt_int(self.activation_elements),
            fmt_mb(self.activation_bytes),
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
            f"Parameters: {fmt_int(self.total_params)} ({fmt_mb(self.param_bytes)} MB; "
            f"trainable {fmt_int(self.trainable_params)}, frozen {fmt_int(self.frozen_params)}); "
            f"buffers {fmt_mb(self.buffer_bytes)} MB",
            f"Mult-adds: {fmt_int(self.total_mult_adds)} per image ({self.total_mult_adds / 1e9:,.3f} G); "
            f"FLOPs = 2 x mult-adds = {self.total_flops / 1e9:,.3f} GFLOP "
            "(conv, linear, matmul, attention; norms, activations, pooling, additions count 0)",
            f"Forward activations: {fmt_int(self.activation_elements)} elements per image "
            f"({fmt_mb(self.activation_bytes)} MB, input included; in-place and view outputs not counted again)",
            f"Training memory, batch {m.batch_size} (estimate): parameters {fmt_mb(m.param_bytes)} MB + gradients "
            f"{fmt_mb(m.grad_bytes)} MB + saved activations {fmt_mb(m.activation_bytes)} MB + optimizer state: "
            + "; ".join(
                f"{name} {fmt_mb(t.optimizer_bytes)} MB -> total {fmt_mb(t.total_bytes)} MB"
                for name, t in mem.items()
            ),
        ]
        rf = self.final_receptive_field
        if rf is not None:
            lines.append(
                f"Receptive field of the last spatial layer: {fmt_rf(rf, 'size')} px (jump {fmt_rf(rf, 'jump')} px)"
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
                + ", ".join(f"{n} ({fmt_int(p)})" for n, p in self.unused)
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

    def _table(self, depth: int | None) -> Table:
        rows = self.rows(depth)
        return Table(
            self._HEADERS,
            [self._cells(r) for r in rows],
            left=2,
            total=self._total_cells(rows),
            footer=self.footer(),
        )

    def to_table(self, depth: int | None = None) -> str:
        """A plain-text table with units in every header, then the totals."""
        return self._table(depth).text()

    def to_markdown(self, depth: int | None = None) -> str:
        return self._table(depth).markdown()

    _CSV_HEADERS = (
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
    )

    @staticmethod
    def _csv_cells(r: LayerRow) -> list[Any]:
        f = r.receptive_field
        return [
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
            "" if f is None else fmt_rf(f, "size"),
            "" if f is None else fmt_rf(f, "jump"),
            "" if f is None else fmt_rf(f, "start"),
            ";".join(r.unknown_ops),
        ]

    def to_csv(self, depth: int | None = None) -> str:
        """One line per row; the headers carry the units. Numbers are plain (no separators)."""
        return csv_text(self._CSV_HEADERS, [self._csv_cells(r) for r in self.rows(depth)])

    def render(self, fmt: str = "table", depth: int | None = None) -> str:
        """``fmt``: ``table``, ``markdown``, ``csv`` or ``json``."""
        return choose(
            fmt,
            {
                "table": lambda: self.to_table(depth),
                "markdown": lambda: self.to_markdown(depth),
                "csv": lambda: self.to_csv(depth),
                "json": lambda: self.to_json(depth),
            },
        )

    def __str__(self) -> str:
        return self.to_table()

    def __repr__(self) -> str:  # a summary shown at a prompt is the table, as torchinfo's
        return self.to_table()

    def _repr_html_(self) -> str:  # a notebook's display
        return self._table(None).html()


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
                    fmt_rf(s.final_receptive_field, "size"),
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
        footer = ["FLOPs = 2 x mult-adds; M = 10^6, G = 10^9, MB = 10^6 bytes"]
        return Table(self._HEADERS, self.rows(), footer=footer).text()

    def to_markdown(self) -> str:
        # model names go in as they are ('|' unescaped), as this table always did
        return Table(self._HEADERS, self.rows()).markdown(escape_pipes=False)

    _CSV_HEADERS = (
        "model",
        "params (#)",
        "mult_adds (#/image)",
        "flops (#/image)",
        "activation_elements (#/image)",
        "param_bytes (bytes)",
        "final_rf (px)",
    )

    def to_csv(self) -> str:
        return csv_text(
            self._CSV_HEADERS,
            [
                [
                    s.model,
                    s.total_params,
                    s.total_mult_adds,
                    s.total_flops,
                    s.activation_elements,
                    s.param_bytes,
                    fmt_rf(s.final_receptive_field, "size"),
                ]
                for s in self.summaries
            ],
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def render(self, fmt: str = "table") -> str:
        return choose(
            fmt,
            {"table": self.to_table, "markdown": self.to_markdown, "csv": self.to_csv, "json": self.to_json},
        )

    def __str__(self) -> str:
        return self.to_table()
