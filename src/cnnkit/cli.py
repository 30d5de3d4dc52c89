"""The ``cnnkit`` command: parse, call the library, print.

Heavy imports (torch, the zoo, matplotlib) happen inside each command so that
``cnnkit --help`` and argument errors are instant. Shell manners: ``--version``; a
mistaken argument gets two lines (the error and where help is), not the whole usage; a
reader that closes the pipe early (``cnnkit models | head -3``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]


def _cmd_models(args: argparse.Namespace) -> int:
    from cnnkit.analysis.cli_support import model_stats
    from cnnkit.models.registry import get_model_info, list_models

    names = list_models(args.pattern)
    if not names:
        print(
            f"no model matches {args.pattern!r}" if args.pattern else "no models registered", file=sys.stderr
        )
        return 1
    rows = []
    for name in names:
        params, mult_adds = model_stats(name)  # traced on the meta device: no weight is allocated
        info = get_model_info(name)
        rows.append(
            (name, info.family, f"{params / 1e6:.2f}", f"{mult_adds / 1e6:,.0f}", info.torchvision or "-")
        )
    if args.format == "json":
        keys = ("model", "family", "params", "mult_adds", "torchvision")
        print(json.dumps([
            dict(zip(keys, (n, get_model_info(n).family, *model_stats(n), get_model_info(n).torchvision), strict=True))
            for n in names
        ]))  # fmt: skip
        return 0
    header = ("model", "family", "params (M)", "mult-adds (M)", "torchvision")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("1000 classes, 3x224x224 input; mult-adds per image (FLOPs = 2 x mult-adds)")
    for r in [header, *rows]:
        print(
            "  ".join(
                c.rjust(w) if i in (2, 3) else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from cnnkit.train.config import resolve_config
    from cnnkit.train.loop import train

    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "debug", "print_config")}
    cfg, sources = resolve_config(given)
    if args.print_config:
        from cnnkit.train.loop import resolved_config_text

        print(resolved_config_text(cfg, sources), end="")
        return 0
    final = train(cfg, sources)
    if final.get("test_top1") is not None and int(os.environ.get("RANK", "0")) == 0:
        print(
            f"{final['model']} on {final['dataset']}: test top-1 {100 * final['test_top1']:.2f}%, "
            f"top-5 {100 * final['test_top5']:.2f}% after {final['epochs']} epochs, "
            f"{final['train_seconds']:.1f}s training; run folder {final['run_dir']}"
        )
    return 0


def _check_data(run: str, meta: dict[str, Any], data: Any, dataset: str) -> None:
    """Refuse test data a run cannot take, before any forward pass, naming both sides."""
    chans, classes = int(meta["in_chans"]), int(meta["num_classes"])
    if data.image_shape[0] != chans:
        raise ValueError(
            f"{run} was trained on {chans}-channel images; {dataset} has {data.image_shape[0]}-channel "
            f"images (evaluate it on {chans}-channel data like its training set)"
        )
    if int(data.test_y.max()) >= classes:
        raise ValueError(
            f"{run} predicts {classes} classes; {dataset} has labels up to {int(data.test_y.max())} "
            "(evaluate it on the dataset it was trained on)"
        )


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from cnnkit.data.sources import load_dataset
    from cnnkit.run import load_run
    from cnnkit.train.loop import evaluate

    model, meta = load_run(args.checkpoint)
    data = load_dataset(args.dataset, data_dir=args.data_dir, image_size=meta.get("image_size"))
    _check_data(args.checkpoint, meta, data, args.dataset)
    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    res = evaluate(model, data.test_x, data.test_y, mean, std, batch_size=args.batch_size)
    out = {
        "checkpoint": args.checkpoint,
        "dataset": args.dataset,
        "test_top1": res["top1"],
        "test_top5": res["top5"],
        "test_loss": res["loss"],
    }
    if args.format == "json":
        print(json.dumps(out))
    else:
        print(
            f"{args.checkpoint} on {args.dataset}: top-1 {100 * res['top1']:.2f}%  top-5 {100 * res['top5']:.2f}%  (error {100 * (1 - res['top1']):.2f}% / {100 * (1 - res['top5']):.2f}%)"
        )
    return 0


def _cmd_ensemble(args: argparse.Namespace) -> int:
    """Fusion by averaged softmax, beside each member (the lecture's ILSVRC 2016 ensemble)."""
    import torch

    from cnnkit.data.sources import load_dataset
    from cnnkit.run import load_run
    from cnnkit.train.ensemble import ensemble_eval

    members = [load_run(d) for d in args.runs]
    data = load_dataset(args.dataset, data_dir=args.data_dir, image_size=members[0][1].get("image_size"))
    for run, (_, meta) in zip(args.runs, members, strict=True):
        _check_data(run, meta, data, args.dataset)
    rows = ensemble_eval(
        [(m, torch.tensor(meta["mean"]), torch.tensor(meta["std"])) for m, meta in members],
        data.test_x,
        data.test_y,
    )
    names = [*args.runs, "fusion (mean softmax)"]
    if args.format == "json":
        print(json.dumps([{"member": n, **r} for n, r in zip(names, rows, strict=True)]))
        return 0
    width = max(len(n) for n in names)
    print(f"{'member'.ljust(width)}  top-1 err (%)  top-5 err (%)")
    for n, r in zip(names, rows, strict=True):
        print(f"{n.ljust(width)}  {100 * (1 - r['top1']):13.2f}  {100 * (1 - r['top5']):13.2f}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from cnnkit.data.imagefolder import read_image
    from cnnkit.data.sources import normalize
    from cnnkit.run import load_run

    model, meta = load_run(args.checkpoint)
    size, chans = int(meta.get("image_size", 28)), int(meta["in_chans"])
    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    classes = meta.get("classes") or [str(i) for i in range(meta["num_classes"])]
    # every file is read before the first prediction: a bad one stops the command before any output
    images = torch.stack([read_image(path, channels=chans, size=size) for path in args.images])
    with torch.no_grad():
        probs = model(normalize(images, mean, std)).softmax(1)
    if args.format == "json":
        top = [p.topk(min(5, len(p))) for p in probs]
        print(json.dumps([
            {"image": path, "top5": [{"label": classes[i], "probability": v}
                                     for v, i in zip(t.values.tolist(), t.indices.tolist(), strict=True)]}
            for path, t in zip(args.images, top, strict=True)
        ]))  # fmt: skip
        return 0
    for path, p in zip(args.images, probs, strict=True):
        top = p.topk(min(5, len(p)))
        print(
            path
            + ": "
            + ", ".join(
                f"{classes[i]} {100 * v:.1f}%"
                for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            )
        )
    return 0


DESCRIPTION = (
    "cnnkit: the convolution variants, the ILSVRC architectures and the training ingredients of the "
    'lecture "Convolutional Neural Networks 2", as layers, models, an analysis tool, a trainer and a lab.'
)


class _Parser(argparse.ArgumentParser):
    """argparse with a short error: the problem and where help is, not the full usage (every
    sub-command's parser is one of these: ``add_subparsers`` makes its parsers of the parent's class)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cnnkit")
    except PackageNotFoundError:  # run from a source tree without an install
        from cnnkit import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnkit", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cnnkit {_version()}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the model zoo with parameter counts")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'resnet*'")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=_cmd_models)

    from cnnkit.analysis.cli_support import add_analysis_commands  # argparse only; no torch
    from cnnkit.train.config import add_train_args

    add_analysis_commands(sub)

    from cnnkit.deploy.cli_support import add_deploy_commands
    from cnnkit.doctor import add_doctor_command
    from cnnkit.lab.cli import add_lab_commands

    add_deploy_commands(sub)
    add_doctor_command(sub)
    add_lab_commands(sub)  # also registers `cnnkit viz`

    p = sub.add_parser("train", help="train a zoo model (default: fmnet on Fashion-MNIST)")
    add_train_args(p)
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config.yaml, each value with where it came from, and exit",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="top-1/top-5 of a trained run on a dataset's test split")
    p.add_argument("--checkpoint", required=True, help="run folder (or its model.safetensors)")
    p.add_argument(
        "--dataset", default="fashion-mnist", help="dataset whose test split to use (default: fashion-mnist)"
    )
    p.add_argument(
        "--data-dir", default=None, help="folder with the dataset files (default: the usual places)"
    )
    p.add_argument("--batch-size", type=int, default=1000, help="images per forward pass (default: 1000)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("ensemble", help="evaluate the averaged-softmax fusion of runs beside each member")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument(
        "--dataset", default="fashion-mnist", help="dataset whose test split to use (default: fashion-mnist)"
    )
    p.add_argument(
        "--data-dir", default=None, help="folder with the dataset files (default: the usual places)"
    )
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=_cmd_ensemble)

    p = sub.add_parser("predict", help="top-5 labels of image files")
    p.add_argument("--checkpoint", required=True, help="run folder (or its model.safetensors)")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG...), resized to the run's input size")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=_cmd_predict)

    return parser


# OpenMP's wait policy is left to the user and to libgomp (torch's OpenMP on Linux), whose
# default spins idle threads 300,000 times before they sleep. Measured on 2 AMX cores, 1 epoch
# of 15,360 Fashion-MNIST images with the default recipe: alone 2.6-2.7 s by default, 2.8-2.9 s
# with GOMP_SPINCOUNT=10000 (8-13% slower over a whole run), 3.5-3.7 s with
# OMP_WAIT_POLICY=PASSIVE; with a busy process on one of the two cores every choice is 4-10x
# slower (default 11.8 and 26.2 s, 10,000 13.6 and 14.0 s, PASSIVE 15.4 and 14.9 s): the cure
# there is fewer threads (--threads 1), not a wait policy. cnnkit used to set PASSIVE.


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return code
    except BrokenPipeError:
        # the reader has what it wanted (`| head`): no error, and nothing more to write
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError, OSError) as e:
        if args.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"cnnkit: error: {msg}", file=sys.stderr)
        return 2
