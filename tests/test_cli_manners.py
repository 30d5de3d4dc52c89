"""Shell manners of the ``cnnkit`` command (issue "Fits the hand of a timm, torchvision and
torchinfo user"): --version, a short error, a quiet end on a closed pipe, --format json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnkit import __version__, cli


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"cnnkit {__version__}\n"


def test_an_argument_mistake_gets_two_lines_not_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--epochs", "four"])
    err = capsys.readouterr().err.splitlines()
    assert info.value.code == 2
    assert err == [
        "cnnkit train: error: argument --epochs: invalid int value: 'four'",
        "(see `cnnkit train --help`)",
    ]


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    # the reader goes away before cnnkit writes (as `cnnkit models | head -1` once its line is read)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "models", "alexnet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


def test_models_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "alexnet", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    # Krizhevsky et al. 2012 as torchvision builds it: 61.1 M parameters, 714 M mult-adds at 224x224
    assert row["model"] == "alexnet" and row["torchvision"] == "alexnet"
    assert row["params"] == 61_100_840 and round(row["mult_adds"] / 1e6) == 714


@pytest.mark.parametrize(
    ("flags", "amp"),
    [
        (["--amp"], "bf16"),  # timm's switch: on, in bfloat16 unless --amp-dtype says otherwise
        (["--amp", "--amp-dtype", "float16"], "fp16"),
        (["--amp-dtype", "bfloat16"], "bf16"),  # the type implies the switch
        (["--amp", "none"], "none"),  # cnnkit's values still work
        (["--amp", "auto"], "auto"),
        ([], "auto"),  # the default recipe's
    ],
)
def test_amp_as_timm_spells_it(flags: list[str], amp: str) -> None:
    from cnnkit.train.config import resolve_config

    args = cli.build_parser().parse_args(["train", *flags])
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "debug", "print_config")}
    cfg, sources = resolve_config(given)
    assert cfg.amp == amp and sources["amp"] == ("flag" if flags else "recipe")


def test_a_bad_amp_dtype_is_named() -> None:
    from cnnkit.train.config import config_from_args, validate_config

    with pytest.raises(ValueError, match="--amp-dtype must be bfloat16 or float16; got 'half'"):
        validate_config(config_from_args({"amp_dtype": "half", "amp": "bf16"}))


def test_every_command_and_option_has_help() -> None:
    import argparse

    missing = []

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for name, sub in action.choices.items():
                    if not helps.get(name):
                        missing.append(f"{prefix} {name}")
                    walk(sub, f"{prefix} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{prefix} {'/'.join(action.option_strings) or action.dest}")

    walk(cli.build_parser(), "cnnkit")
    assert missing == []


def test_plot_lr_exponential_decays_as_the_step_schedule_by_default(
    tmp_path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    # the lecture's step schedule: 10x down every 30 epochs; exponential, per epoch, the same 10x
    # over 30 epochs (0.1^(1/30)), not 10x per epoch (which reaches 0 within two epochs)
    drawn = {}
    monkeypatch.setattr("cnnkit.viz.plots.plot_schedules", lambda scheds, **kw: drawn.update(scheds))
    assert cli.main(["plot-lr", "-o", str(tmp_path / "lr.png")]) == 0
    step, exp = drawn["step"], drawn["exponential"]
    # fractions of the peak rate
    assert step(31 * 100) == pytest.approx(0.1) and exp(31 * 100) == pytest.approx(0.1 ** (31 / 30))
    assert exp(2 * 100) > 0.8


def test_every_reporting_command_speaks_json(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    def sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices[name]  # type: ignore[no-any-return]

    root = cli.build_parser()
    commands = {
        "models": sub(root, "models"), "doctor": sub(root, "doctor"), "predict": sub(root, "predict"),
        "summary": sub(root, "summary"), "compare": sub(root, "compare"), "eval": sub(root, "eval"),
        "ensemble": sub(root, "ensemble"), "decompose": sub(root, "decompose"),
        "lab list": sub(sub(root, "lab"), "list"),
    }  # fmt: skip
    for name, parser in commands.items():
        fmt = next((a for a in parser._actions if "--format" in a.option_strings), None)
        assert fmt is not None and "json" in (fmt.choices or ()), name
    assert cli.main(["lab", "list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"separable", "shuffle"} <= {e["name"] for e in listed}


def test_the_parser_loads_no_torch() -> None:
    # `cnnkit --help` and a mistaken argument answer at once: the parsers import no torch
    code = "import sys, cnnkit.cli; cnnkit.cli.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
