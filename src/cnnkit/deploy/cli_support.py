"""The deploy commands of ``cnnkit``: ``decompose`` and ``export`` (issue "Accelerate and deploy").

:func:`add_deploy_commands` registers both on the ``cnnkit`` parser's subparsers; torch
and the zoo load only when a command runs, so ``cnnkit --help`` stays instant.

``cnnkit decompose RUN_DIR --method M (--rank R | --energy E | --mult-adds F) [--finetune-epochs N] [--output DIR]``
writes a new run folder (loadable like any run) with a table of accuracy, mult-adds and
CPU latency before and after; ``cnnkit export RUN_DIR --format F [--output FILE]`` writes
the model as TorchScript, a ``torch.export`` archive or ONNX and checks its outputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_deploy_commands", "decompose_command", "export_command"]

METHODS = ("spatial_separable", "depthwise_separable", "flattened")  # cnnkit.deploy.decomposition.METHODS
FORMATS = ("torchscript", "exported_program", "onnx")  # cnnkit.deploy.exporters.EXPORT_FORMATS


def decompose_command(args: argparse.Namespace) -> int:
    """``cnnkit decompose``: print the report's markdown table (or its JSON)."""
    import torch

    from cnnkit.deploy.runs import decompose_run, render_markdown

    if args.threads:
        torch.set_num_threads(args.threads)
    passed: tuple[str, ...] = ("rank", "energy", "mult_adds", "finetune_epochs", "output", "dataset")
    passed += ("data_dir", "train_subset", "test_subset", "lr", "batch_size", "recalibrate", "seed")
    report = decompose_run(
        args.run_dir, args.method, latency=not args.no_latency, **{k: getattr(args, k) for k in passed}
    )
    print(json.dumps(report, indent=2) if args.format == "json" else render_markdown(report), end="")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """``cnnkit export``: write the run's model in a deployable format and check its outputs."""
    import torch

    from cnnkit.deploy.exporters import SUFFIX, export
    from cnnkit.run import load_run

    model, meta = load_run(args.run_dir)
    size = int(args.image_size or meta.get("image_size", 224))
    example = torch.randn(args.batch_size, int(meta["in_chans"]), size, size)
    run = Path(args.run_dir)
    default = (run if run.is_dir() else run.parent) / f"model{SUFFIX[args.format]}"
    model = _maybe_fuse(model, args.fuse_bn)
    res = export(model, args.output or default, args.format, example)
    print(
        f"wrote {res.path} ({args.format}); outputs match the model's on batches of "
        f"{', '.join(map(str, res.checked_batch_sizes))} (max abs diff {res.max_abs_diff:.2g})"
    )
    return 0


def _maybe_fuse(model: Any, fuse: bool) -> Any:
    if not fuse:
        return model
    from cnnkit.deploy.fuse import fuse_bn

    return fuse_bn(model)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1]; got {value}")
    return value


def add_deploy_commands(sub: Any) -> None:
    """Register ``decompose`` and ``export`` on ``cnnkit``'s subparsers (``add_subparsers()``)."""
    p = sub.add_parser(
        "decompose",
        help="replace a trained run's k x k convs by low-rank separable ones; report accuracy, cost, latency",
    )
    p.add_argument("run_dir", help="run folder written by `cnnkit train`")
    p.add_argument(
        "--method",
        required=True,
        choices=METHODS,
        help="spatial_separable (k x 1 then 1 x k), depthwise_separable (depthwise then 1 x 1), flattened",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--rank", type=_positive_int, help="rank of every layer (capped at its maximum)")
    target.add_argument(
        "--energy", type=_fraction, help="per layer, the smallest rank keeping this fraction of ||W||^2"
    )
    target.add_argument(
        "--mult-adds",
        type=_fraction,
        help="keep at most this fraction of the mult-adds (one energy target for all layers, by bisection)",
    )
    p.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning after (default 0)")
    p.add_argument("--output", default=None, help="new run folder (default RUN_DIR-METHOD)")
    p.add_argument("--dataset", default=None, help="default: the run's dataset (its config.yaml)")
    p.add_argument(
        "--data-dir", default=None, help="folder with the dataset files (default: the usual places)"
    )
    p.add_argument("--train-subset", type=_positive_int, default=None, help="fine-tune on N images")
    p.add_argument("--test-subset", type=_positive_int, default=None, help="evaluate on N test images")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning peak learning rate (cosine decay)")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="fine-tuning batch size")
    p.add_argument(
        "--recalibrate",
        type=int,
        default=2000,
        metavar="N",
        help="re-estimate batch-norm statistics on N training images after decomposing (0: off)",
    )
    p.add_argument("--threads", type=_positive_int, default=None, help="intra-op threads (also for latency)")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurements")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="fine-tuning seed (default: the run's; it also draws --train-subset)",
    )
    p.add_argument(
        "--format", choices=("markdown", "json"), default="markdown", help="report format (default: markdown)"
    )
    p.set_defaults(func=decompose_command)

    p = sub.add_parser(
        "export", help="write a run's model as TorchScript, torch.export or ONNX, and check it"
    )
    p.add_argument("run_dir", help="run folder (plain or decomposed)")
    p.add_argument(
        "--format", required=True, choices=FORMATS, help="torchscript (.pt), exported_program (.pt2) or onnx"
    )
    p.add_argument("--output", default=None, help="file to write (default RUN_DIR/model.{pt,pt2,onnx})")
    p.add_argument(
        "--image-size", type=_positive_int, default=None, help="example input size (default: the run's)"
    )
    p.add_argument("--batch-size", type=_positive_int, default=2, help="example batch size")
    p.add_argument("--fuse-bn", action="store_true", help="fold batch norm into the convs first")
    p.set_defaults(func=export_command)
