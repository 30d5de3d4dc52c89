"""The ``cnnkit lab`` and ``cnnkit viz`` commands (issue "The lecture's claims, reproduced").

``cnnkit lab list`` prints the experiments; ``cnnkit lab run NAME|all`` trains (or reads
back) their arms, judges each claim and renders ``OUTPUT/report.html`` and ``report.md``;
``cnnkit lab report`` re-renders the report from the saved results without training.
:func:`add_lab_commands` registers ``lab`` and ``viz`` on the ``cnnkit`` parser, so
``cli.py`` stays thin; nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

from cnnkit.lab.spec import BUDGETS

__all__ = ["add_lab_commands", "list_text"]


def list_text() -> str:
    """The catalogue as text: name, arms and the claim's title."""
    from cnnkit.lab.experiments import EXPERIMENTS

    width = max(len(n) for n in EXPERIMENTS)
    lines = []
    for name, e in EXPERIMENTS.items():
        arms = f"{len(e.arms)} arms" if e.arms else "no training"
        lines.append(f"{name.ljust(width)}  {arms:>11}  {e.title}")
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    if args.format == "json":
        import json

        from cnnkit.lab.experiments import EXPERIMENTS

        print(
            json.dumps([{"name": n, "arms": len(e.arms), "claim": e.title} for n, e in EXPERIMENTS.items()])
        )
        return 0
    print(list_text())
    return 0


def _output(args: argparse.Namespace) -> str:
    return str(args.output or f"runs/lab-{args.budget}")


def _cmd_run(args: argparse.Namespace) -> int:
    from cnnkit.lab.report import render_report
    from cnnkit.lab.runner import run_experiments

    output = _output(args)

    def show(r: dict[str, Any]) -> None:
        print(f"{r['name']}: {r['verdict']['verdict']} -- {r['verdict']['summary']}", flush=True)

    run_experiments(
        args.names,
        args.budget,
        output=output,
        dataset=args.dataset,
        data_dir=args.data_dir,
        device=args.device,
        threads=args.threads,
        retrain=args.retrain,
        on_done=show,
    )
    print(f"report: {render_report(output)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from cnnkit.lab.report import render_report

    print(f"report: {render_report(_output(args))}")
    return 0


def add_lab_commands(sub: Any) -> None:
    """Register ``cnnkit lab ...`` and ``cnnkit viz ...`` on the ``cnnkit`` subcommand parser ``sub``."""
    from cnnkit.viz.cli_support import add_viz_commands

    lab = sub.add_parser(
        "lab",
        help="reproduce the lecture's claims: train, judge, and render an HTML report",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    lsub = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    p = lsub.add_parser("list", help="the experiments and their claims")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=_cmd_list)

    p = lsub.add_parser(
        "run",
        help="run experiments (cached runs are not retrained) and render the report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(
            """\
            budgets: smoke (seconds, synthetic data; for tests), quick (a first look: a few minutes
            an experiment on 2 CPU cores), standard (each verdict decided by the data: 3 seeds or
            more an arm, the whole lab in about 100 minutes on 2 cores), full (a GPU or patience)"""
        ),
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="experiment names, or all")
    p.add_argument(
        "--budget",
        choices=BUDGETS,
        default="standard",
        help="smoke (seconds, a check), quick (a first look), standard (default: verdicts decided by the data), full",
    )
    p.add_argument(
        "--output", default=None, help="folder for runs, figures and the report (default runs/lab-BUDGET)"
    )
    p.add_argument("--dataset", default=None, help="dataset (default: fashion-mnist; smoke: synthetic)")
    p.add_argument(
        "--data-dir", default=None, help="folder with the dataset files (default: the usual places)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the free cores)")
    p.add_argument("--retrain", action="store_true", help="train the arms again even when cached")
    p.set_defaults(func=_cmd_run)

    p = lsub.add_parser("report", help="render report.html and report.md again from saved results")
    p.add_argument(
        "--budget",
        choices=BUDGETS,
        default="standard",
        help="smoke (seconds, a check), quick (a first look), standard (default: verdicts decided by the data), full",
    )
    p.add_argument("--output", default=None, help="the folder of `lab run` (default runs/lab-BUDGET)")
    p.set_defaults(func=_cmd_report)

    def _no_action(_: argparse.Namespace) -> int:
        lab.print_help(sys.stderr)
        return 2

    lab.set_defaults(func=_no_action)
    add_viz_commands(sub)
