"""The analysis commands of ``cnnkit``: ``summary``, ``compare`` and ``rf`` (lecture slides
"VGGNet", "MobileNets" table 4, "Receptive Fields").

Pure functions return the text to print; :func:`add_analysis_commands` registers the
three subcommands on the ``cnnkit`` parser (``cli.py`` stays thin). Torch and the
zoo load only when a command runs, matplotlib only for ``rf``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnkit.analysis.render import FORMATS

__all__ = [
    "FORMATS",
    "add_analysis_commands",
    "compare_command",
    "model_stats",
    "rf_command",
    "summary_command",
]


def _model_kwargs(num_classes: int | None, small_input: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if small_input:
        kwargs["small_input"] = True
    return kwargs


def summary_command(
    name: str,
    input_size: Sequence[int] = (3, 224, 224),
    *,
    fmt: str = "table",
    depth: int | None = None,
    batch_size: int = 1,
    num_classes: int | None = None,
    small_input: bool = False,
) -> str:
    """``cnnkit summary NAME``: the per-layer table of a registered model, built on ``meta``."""
    from cnnkit.analysis.summary import summarize

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    s = summarize(
        name,
        input_size,
        batch_size=batch_size,
        depth=depth,
        model_kwargs=_model_kwargs(num_classes, small_input),
    )
    return s.render(fmt)


def compare_command(
    names: Sequence[str],
    input_size: Sequence[int] = (3, 224, 224),
    *,
    fmt: str = "table",
    num_classes: int | None = None,
    small_input: bool = False,
) -> str:
    """``cnnkit compare NAME NAME ...``: parameters, mult-adds, activations side by side."""
    from cnnkit.analysis.summary import Comparison, summarize

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not names:
        raise ValueError("compare needs at least one model name")
    kwargs = _model_kwargs(num_classes, small_input)
    return Comparison([summarize(n, input_size, model_kwargs=kwargs) for n in names]).render(fmt)


def rf_command(
    name: str,
    output: str | Path = "rf.png",
    input_size: Sequence[int] = (3, 224, 224),
    *,
    small_input: bool = False,
) -> str:
    """``cnnkit rf NAME --output rf.png``: draw the receptive field's growth; returns a one-line report."""
    from cnnkit.analysis.plot import plot_receptive_field
    from cnnkit.analysis.summary import summarize

    s = summarize(name, input_size, model_kwargs=_model_kwargs(None, small_input))
    plot_receptive_field(s, output=output)
    f = s.final_receptive_field
    final = (
        "" if f is None else f"; last spatial layer sees {max(f.size):g} px (jump {max(f.jump or (0,)):g} px)"
    )
    return f"wrote {output}{final}"


def model_stats(name: str, input_size: Sequence[int] = (3, 224, 224)) -> tuple[int, int]:
    """(parameters, mult-adds per image) of a registered model, for ``cnnkit models``' columns."""
    from cnnkit.analysis.summary import summarize

    s = summarize(name, input_size)
    return s.total_params, s.total_mult_adds


# ---------------------------------------------------------------------------- argparse wiring


def _shared(args: argparse.Namespace) -> dict[str, Any]:
    """The options ``summary`` and ``compare`` share, as their commands' keywords."""
    return {"fmt": args.format, "num_classes": args.num_classes, "small_input": args.small_input}


def _cmd_summary(args: argparse.Namespace) -> int:
    print(
        summary_command(
            args.name, args.input_size, depth=args.depth, batch_size=args.batch_size, **_shared(args)
        )
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    print(compare_command(args.names, args.input_size, **_shared(args)))
    return 0


def _cmd_rf(args: argparse.Namespace) -> int:
    print(rf_command(args.name, args.output, args.input_size, small_input=args.small_input))
    return 0


def _add_input_size(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input-size",
        type=int,
        nargs=3,
        default=[3, 224, 224],
        metavar=("C", "H", "W"),
        help="input channels, height, width (default 3 224 224)",
    )
    p.add_argument("--small-input", action="store_true", help="build the small-input (28-32 px) variant")


def add_analysis_commands(sub: Any) -> None:
    """Register ``summary``, ``compare`` and ``rf`` on ``cnnkit``'s subparsers (``add_subparsers()``)."""
    p = sub.add_parser("summary", help="per-layer parameters, mult-adds, activations, receptive fields")
    p.add_argument("name", help="registered model name (`cnnkit models` lists them)")
    _add_input_size(p)
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--depth", type=int, default=None, help="group rows by the first N parts of module names")
    p.add_argument("--batch-size", type=int, default=1, help="batch for the training-memory estimate")
    p.add_argument(
        "--num-classes", type=int, default=None, help="classifier outputs (default: the model's 1000)"
    )
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("compare", help="models side by side (params, mult-adds, activations)")
    p.add_argument("names", nargs="+", help="registered model names")
    _add_input_size(p)
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument(
        "--num-classes", type=int, default=None, help="classifier outputs (default: the model's 1000)"
    )
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("rf", help="plot the receptive field's growth layer by layer")
    p.add_argument("name", help="registered model name")
    _add_input_size(p)
    p.add_argument("--output", default="rf.png", help="image file to write (format from the suffix)")
    p.set_defaults(func=_cmd_rf)
