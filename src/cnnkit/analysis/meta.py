"""Models on the ``meta`` device: building one without allocating its weights, and stand-ins for one that exists.

:func:`build_on_meta` calls a model builder so that every parameter and buffer lives
on ``meta`` (weight initialisers are skipped: meta tensors have no values);
:func:`meta_stand_ins` makes ``meta`` tensors of the shapes of an existing model's
parameters and buffers, which :func:`cnnkit.analysis.summary.summarize` swaps in for
the one traced call; :func:`is_meta_failure` tells a forward that needs tensor
values, which meta lacks, from a real error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnkit.analysis.op_tables import METADATA_INPLACE

__all__ = ["build_on_meta", "is_meta_failure", "meta_stand_ins"]


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


class _SkipMetaInit(TorchFunctionMode):
    """Skips value-only in-place calls (``normal_``, ``kaiming_normal_``, ``fill_``) on meta tensors:
    PyTorch runs them through Python decompositions (~1 ms each) that produce nothing on meta."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.startswith("_") and name not in METADATA_INPLACE:
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


def is_meta_failure(e: BaseException) -> bool:
    """A forward that needs tensor values (``.item()``, ``.tolist()``, ``nonzero``), which meta lacks."""
    msg = str(e)
    return isinstance(e, NotImplementedError | RuntimeError) and (
        "cannot be called on meta" in msg or "no data" in msg or "data-independent" in msg
    )


def meta_stand_ins(
    params: Sequence[tuple[str, nn.Parameter]], buffers: Sequence[tuple[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Empty ``meta`` tensors of the shapes and dtypes of named parameters (still parameters, with
    their ``requires_grad``) and buffers, for :func:`torch.func.functional_call`."""
    stand_ins: dict[str, torch.Tensor] = {}
    for n, p in params:
        stand_ins[n] = nn.Parameter(
            torch.empty(p.shape, dtype=p.dtype, device="meta"), requires_grad=p.requires_grad
        )
    for n, buf in buffers:
        stand_ins[n] = torch.empty(buf.shape, dtype=buf.dtype, device="meta")
    return stand_ins
