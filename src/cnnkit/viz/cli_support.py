"""The ``cnnkit viz`` commands: figures of a trained run (or of a zoo model) as PNG files.

``filters``, ``features`` and ``saliency`` read a run folder written by ``cnnkit train``
(its ``model.safetensors`` and ``config.yaml``); ``histograms`` takes a run or a fresh zoo
model with an ``--init`` scheme; ``lr`` draws the schedule a run was trained with; ``rf``
the receptive-field growth of a zoo model. :func:`add_viz_commands` registers them; torch,
the zoo and matplotlib load only when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_viz_commands"]


def _images(args: argparse.Namespace, meta: dict[str, Any], folder: Path | None, count: int) -> Any:
    """Standardised images (N, C, H, W) and labels (or None): ``--image`` files, else test images from ``--index``."""
    import torch

    from cnnkit.data.sources import load_dataset, normalize

    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    chans, size = int(meta["in_chans"]), int(meta.get("image_size", 28))
    if getattr(args, "image", None):
        from cnnkit.data.imagefolder import read_image

        imgs = [read_image(path, channels=chans, size=size) for path in args.image]
        return normalize(torch.stack(imgs), mean, std), None
    cfg = _run_config(folder) if folder is not None and not (args.dataset and args.data_dir) else {}
    dataset = args.dataset or cfg.get("dataset", "fashion-mnist")
    data = load_dataset(dataset, data_dir=args.data_dir or cfg.get("data_dir"))
    n = len(data.test_y)
    if not 0 <= args.index < n:
        raise ValueError(f"--index must be in 0..{n - 1} for {dataset}; got {args.index}")
    sel = slice(args.index, min(args.index + count, n))
    return normalize(data.test_x[sel], mean, std), data.test_y[sel]


def _run_config(folder: Path) -> dict[str, Any]:
    from cnnkit.run import read_config

    try:
        return read_config(folder)
    except ValueError as e:
        raise ValueError(f"{e}; pass --image to choose the input") from e


def _load(run: str) -> tuple[Any, dict[str, Any], Path]:
    from cnnkit.run import load_run, run_folder

    folder = run_folder(run)
    model, meta = load_run(folder)
    return model, meta, folder


def _done(path: str) -> int:
    print(f"wrote {path}")
    return 0


def _cmd_filters(args: argparse.Namespace) -> int:
    from cnnkit.viz.maps import plot_filters

    model, _, folder = _load(args.run)
    plot_filters(model, output=args.output, title=f"first-layer filters of {folder.name}")
    return _done(args.output)


def _cmd_features(args: argparse.Namespace) -> int:
    from cnnkit.viz.maps import feature_maps, plot_feature_maps

    model, meta, folder = _load(args.run)
    x, _ = _images(args, meta, folder, 1)
    name, maps = feature_maps(model, x[0], args.layer)
    plot_feature_maps(x[0], maps, layer=name, output=args.output)
    return _done(args.output)


def _cmd_saliency(args: argparse.Namespace) -> int:
    from cnnkit.viz.maps import plot_saliency, saliency

    model, meta, folder = _load(args.run)
    x, y = _images(args, meta, folder, args.count)
    classes = meta.get("classes") or [str(i) for i in range(int(meta["num_classes"]))]
    maps, titles = [], []
    for i in range(len(x)):
        sal, k = saliency(model, x[i])
        maps.append(sal)
        titles.append(f"pred {classes[k]}" + ("" if y is None else f"\ntrue {classes[int(y[i])]}"))
    plot_saliency(list(x), maps, titles=titles, output=args.output)
    return _done(args.output)


def _cmd_histograms(args: argparse.Namespace) -> int:
    import torch

    from cnnkit.viz.stats import layer_stats, plot_activation_histograms, plot_layer_scales

    if (args.run is None) == (args.model is None):
        raise ValueError("viz histograms takes a run folder or --model NAME (one of them)")
    if args.run is not None:
        model, meta, folder = _load(args.run)
        label = folder.name
    else:
        from cnnkit.data.sources import load_dataset
        from cnnkit.layers.init import init_weights
        from cnnkit.models.registry import create_model

        data = load_dataset(args.dataset or "fashion-mnist", data_dir=args.data_dir)
        c, h, _ = data.image_shape
        torch.manual_seed(0)
        model = create_model(args.model, num_classes=data.num_classes, in_chans=c, small_input=h < 64)
        init_weights(model, args.init)
        m, s = data.mean_std()
        meta = {"mean": m.tolist(), "std": s.tolist(), "in_chans": c, "image_size": h}
        folder, label = None, f"{args.model}, init {args.init}"
    x, y = _images(args, meta, folder, args.count)
    stats = {label: layer_stats(model, x, y)}
    plot_activation_histograms(stats, output=args.output)
    print(f"wrote {args.output}")
    if args.scales:
        plot_layer_scales(stats, output=args.scales)
        print(f"wrote {args.scales}")
    return 0


def _cmd_lr(args: argparse.Namespace) -> int:
    """The schedule a run was trained with, or named schedules from the flags (``cnnkit plot-lr``)."""
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.schedule import Schedule
    from cnnkit.viz.plots import plot_schedules

    if args.run is None:
        spe = args.steps_per_epoch
        given = {k: getattr(args, k) for k in ("epochs", "lr", "min_lr", "warmup_epochs", "decay_epochs")}

        def rate(name: str) -> float:  # unset: the step's 10x every --decay-epochs, per epoch for exponential
            if args.decay_rate is not None:
                return float(args.decay_rate)
            return 0.1 ** (1 / args.decay_epochs) if name == "exponential" else 0.1

        scheds = {
            name: Schedule.from_config(TrainConfig(sched=name, decay_rate=rate(name), **given), spe)
            for name in args.sched
        }
        plot_schedules(scheds, lr=args.lr, output=args.output)
        return _done(args.output)
    from cnnkit.run import read_config

    folder = Path(args.run)
    cfg = read_config(folder)
    n = cfg.get("train_subset")
    if n is None:
        from cnnkit.data.sources import load_dataset

        n = len(load_dataset(cfg["dataset"], data_dir=cfg.get("data_dir")).train_y)
    sched = Schedule.from_config(cfg, max(int(n) // int(cfg["batch_size"]), 1))
    plot_schedules({f"{cfg['sched']} ({folder.name})": sched}, lr=float(cfg["lr"]), output=args.output)
    return _done(args.output)


def _lr_args(p: argparse.ArgumentParser) -> None:
    """``cnnkit viz lr`` and its alias ``cnnkit plot-lr``: a run's schedule, or named ones."""
    p.add_argument("run", nargs="?", default=None, help="run folder of `cnnkit train` (else: --sched)")
    p.add_argument(
        "--sched",
        nargs="+",
        default=["step", "exponential", "cosine"],
        help="schedules to draw without a run",
    )
    p.add_argument("--epochs", type=int, default=90, help="epochs drawn (default: 90, the ResNet schedule's)")
    p.add_argument(
        "--steps-per-epoch", type=int, default=100, help="optimizer steps per epoch (default: 100)"
    )
    p.add_argument("--lr", type=float, default=0.1, help="peak rate eta_0 (default: 0.1)")
    p.add_argument("--min-lr", type=float, default=0.0, help="cosine floor eta_T (default: 0)")
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up from 0 (default: 0)")
    p.add_argument(
        "--decay-epochs", type=float, default=30.0, help="step: epochs between decays (default: 30)"
    )
    p.add_argument(
        "--decay-rate",
        type=float,
        default=None,
        help="step: the factor at each decay (default 0.1); exponential: the factor per epoch "
        "(default: the step's 10x per --decay-epochs, 0.1^(1/30) = 0.926)",
    )
    p.add_argument("-o", "--output", default="lr.png", help="PNG to write (default: lr.png)")
    p.set_defaults(func=_cmd_lr)


def _cmd_rf(args: argparse.Namespace) -> int:
    from cnnkit.analysis.plot import plot_receptive_field
    from cnnkit.analysis.summary import build_on_meta
    from cnnkit.models.registry import create_model

    size = tuple(args.input_size)
    model = build_on_meta(
        create_model, args.model, in_chans=size[0], num_classes=10, small_input=args.small_input
    )
    plot_receptive_field(model, size, output=args.output, title=f"receptive field of {args.model}")
    return _done(args.output)


def add_viz_commands(sub: Any) -> None:
    """Register ``cnnkit viz ...`` on the ``cnnkit`` subcommand parser ``sub``."""
    viz = sub.add_parser(
        "viz", help="figures of a trained run: filters, feature maps, saliency, histograms, lr, rf"
    )
    vsub = viz.add_subparsers(dest="viz_command", required=True, metavar="FIGURE")

    def image_args(p: argparse.ArgumentParser, count: int | None) -> None:
        p.add_argument("--image", nargs="+", help="image files (default: test images of the run's dataset)")
        p.add_argument("--index", type=int, default=0, help="first test image to use (default: 0)")
        if count is not None:
            p.add_argument(
                "--count", type=int, default=count, help=f"how many test images (default: {count})"
            )
        p.add_argument("--dataset", default=None, help="dataset of the test images (default: the run's)")
        p.add_argument(
            "--data-dir", default=None, help="folder with the dataset files (default: the usual places)"
        )

    p = vsub.add_parser("filters", help="the first layer's filters (Zeiler & Fergus)")
    p.add_argument("run", help="run folder of `cnnkit train`")
    p.add_argument("-o", "--output", default="filters.png", help="PNG to write (default: filters.png)")
    p.set_defaults(func=_cmd_filters)

    p = vsub.add_parser("features", help="the feature maps of one image after a layer")
    p.add_argument("run", help="run folder of `cnnkit train`")
    p.add_argument("--layer", default=None, help="module name (default: the first convolution)")
    image_args(p, None)
    p.add_argument("-o", "--output", default="features.png", help="PNG to write (default: features.png)")
    p.set_defaults(func=_cmd_features)

    p = vsub.add_parser("saliency", help="saliency maps: |d class score / d pixel| (Simonyan et al.)")
    p.add_argument("run", help="run folder of `cnnkit train`")
    image_args(p, 6)
    p.add_argument("-o", "--output", default="saliency.png", help="PNG to write (default: saliency.png)")
    p.set_defaults(func=_cmd_saliency)

    p = vsub.add_parser("histograms", help="per-layer activation histograms (a run, or --model with --init)")
    p.add_argument("run", nargs="?", default=None, help="run folder of `cnnkit train`")
    p.add_argument("--model", default=None, help="a fresh zoo model instead of a run")
    p.add_argument("--init", default="default", help="init scheme for --model (cnnkit.layers.init)")
    image_args(p, 256)
    p.add_argument("--scales", default=None, help="also write the per-layer std plot to this file")
    p.add_argument("-o", "--output", default="histograms.png", help="PNG to write (default: histograms.png)")
    p.set_defaults(func=_cmd_histograms)

    _lr_args(vsub.add_parser("lr", help="the learning-rate schedule a run was trained with, or named ones"))
    _lr_args(sub.add_parser("plot-lr", help="draw learning-rate schedules (the same as `cnnkit viz lr`)"))

    p = vsub.add_parser("rf", help="receptive-field growth of a zoo model")
    p.add_argument("model", help="zoo model name")
    p.add_argument(
        "--input-size",
        type=int,
        nargs=3,
        default=[1, 28, 28],
        metavar=("C", "H", "W"),
        help="input (default: 1 28 28)",
    )
    p.add_argument(
        "--small-input",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the small-input (28-32 px) variant of the model (default: on)",
    )
    p.add_argument("-o", "--output", default="rf.png", help="PNG to write (default: rf.png)")
    p.set_defaults(func=_cmd_rf)

    def _no_figure(_: argparse.Namespace) -> int:
        viz.print_help(sys.stderr)
        return 2

    viz.set_defaults(func=_no_figure)
