"""Export a model for inference outside cnnkit, and check the file gives the same outputs.

Three formats:

- ``torchscript`` (``.pt``): ``torch.jit.trace`` then ``torch.jit.save``; loads with
  ``torch.jit.load`` in any PyTorch (and LibTorch in C++) without cnnkit. In torch 2.14
  ``torch.jit`` still works but is deprecated in favour of ``torch.export`` (it warns
  with a FutureWarning, which is silenced here); ``torch.jit.script`` fails on the zoo's
  ``getattr(self, f"layer{i}")`` loops, so tracing is used: the zoo's forward passes
  have no data-dependent control flow, so the trace is the whole model.
- ``exported_program`` (``.pt2``): ``torch.export.export`` then ``torch.export.save``,
  TorchScript's successor; loads with ``torch.export.load(path).module()``.
- ``onnx`` (``.onnx``): ``torch.onnx.export`` (torch's dynamo-based exporter), which needs
  the ``onnx`` and ``onnxscript`` packages; the check needs ``onnxruntime``.

Each export keeps the batch dimension free (``torch.export``'s dynamic ``Dim``; a trace
has no fixed batch size in these convolutional nets) and, unless ``check=False``,
reloads the file and compares its outputs with the model's on ``example_input`` and on a
batch of a different size. The model is exported in eval mode.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["EXPORT_FORMATS", "ExportResult", "export", "load_exported", "missing_onnx_packages"]

EXPORT_FORMATS = ("torchscript", "exported_program", "onnx")
SUFFIX = {"torchscript": ".pt", "exported_program": ".pt2", "onnx": ".onnx"}


@dataclass
class ExportResult:
    """Where the file went, and how far its outputs are from the model's (None: not checked)."""

    path: Path
    format: str
    max_abs_diff: float | None
    checked_batch_sizes: tuple[int, ...]


def missing_onnx_packages(check: bool = True) -> list[str]:
    """The packages ONNX export (and, with ``check``, its verification) needs that are not installed."""
    wanted = ["onnx", "onnxscript"] + (["onnxruntime"] if check else [])
    return [p for p in wanted if importlib.util.find_spec(p) is None]


def _check_format(format: str) -> None:
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose from {', '.join(EXPORT_FORMATS)}")


def _batch_dims(example: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The example and a batch of another size (so a baked-in batch size would show)."""
    other = torch.cat([example, example[:1]]) if len(example) > 1 else example.repeat(3, 1, 1, 1)
    return example, other


def load_exported(path: str | Path, format: str) -> nn.Module:
    """Load a file written by :func:`export` as a callable module (ONNX: an onnxruntime session wrapper)."""
    _check_format(format)
    path = Path(path)
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; see the module doc
            return torch.jit.load(str(path), map_location="cpu")
    if format == "exported_program":
        return torch.export.load(str(path)).module()
    missing = missing_onnx_packages(check=True)
    if "onnxruntime" in missing:
        raise RuntimeError("running an ONNX file needs the onnxruntime package: pip install onnxruntime")
    return _OnnxRuntimeModule(path)


class _OnnxRuntimeModule(nn.Module):
    """An onnxruntime CPU session behind a module's call: tensor in, tensor out."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out)


def export(
    model: nn.Module,
    path: str | Path,
    format: str,
    example_input: torch.Tensor,
    *,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> ExportResult:
    """Write ``model`` (in eval mode; ``model`` itself is not changed) to ``path`` in ``format``.

    ``format``: one of :data:`EXPORT_FORMATS` (see the module doc). ``example_input``: a
    batch (N, C, H, W) the model accepts. With ``check`` the file is loaded back and its
    outputs compared with the model's (``torch.allclose(atol, rtol)``); a mismatch raises
    RuntimeError. ONNX export raises RuntimeError naming the packages to install when
    ``onnx``/``onnxscript`` (or, to check, ``onnxruntime``) are missing.
    """
    _check_format(format)
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        raise ValueError(
            "example_input must be a batch of images (N, C, H, W); got "
            + (
                str(tuple(example_input.shape))
                if isinstance(example_input, torch.Tensor)
                else repr(example_input)
            )
        )
    if format == "onnx":
        missing = missing_onnx_packages(check)
        if missing:
            raise RuntimeError(
                f"ONNX export needs {', '.join(missing)}: pip install {' '.join(missing)} "
                "(or export with format torchscript / exported_program)"
            )
    path = Path(path)
    if format == "exported_program" and path.suffix != ".pt2":
        raise ValueError(f"torch.export.save writes .pt2 archives; name the file *.pt2, not {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).eval().cpu()
    example = example_input.detach().cpu().float()
    inputs = _batch_dims(example)
    if format == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            # the input-check pre-hook reads shapes; its checks become trace-time constants, which is
            # right for them (they raise or pass before any op), so their TracerWarnings are noise
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # check_trace=False: the file itself is reloaded and checked below, on the same inputs
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, str(path))
    elif format == "exported_program":
        batch = torch.export.Dim("batch", min=1)
        # torch.export specialises a dimension of size 1, so trace with at least 2 samples
        ex = example if len(example) > 1 else example.repeat(2, 1, 1, 1)
        program = torch.export.export(model, (ex,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    else:
        ex = example if len(example) > 1 else example.repeat(2, 1, 1, 1)
        torch.onnx.export(
            model,
            (ex,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            dynamo=True,
        )
    if not check:
        return ExportResult(path, format, None, ())
    loaded = load_exported(path, format)
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            want, got = model(x), loaded(x)
            if got.shape != want.shape or not torch.allclose(got, want, atol=atol, rtol=rtol):
                diff = (got - want).abs().max().item() if got.shape == want.shape else float("inf")
                raise RuntimeError(
                    f"{path}: the exported model's outputs differ from the model's on a batch of {len(x)} "
                    f"(max abs diff {diff:.3g}, shapes {tuple(got.shape)} vs {tuple(want.shape)})"
                )
            worst = max(worst, (got - want).abs().max().item())
    return ExportResult(path, format, worst, tuple(len(x) for x in inputs))
