"""Speed and memory of ``cnnkit.analysis.summarize`` beside torchinfo, fvcore and torchscan.

The lecture's arithmetic (slides "VGGNet", "MobileNets") should cost milliseconds, not
a forward pass: cnnkit traces on the ``meta`` device and never allocates weights. This
script times, on the same models (vgg16, resnet152, senet154 at 3x224x224):

* cnnkit: ``summarize(model)`` on a model already built on ``meta`` (the like-for-like
  call), and ``summarize(name)``, which also builds the model;
* torchinfo ``summary`` (default: allocated weights, a real forward; and ``device="meta"``),
  fvcore ``FlopCountAnalysis`` and torchscan ``crawl_module``, each only if importable
  (none is a dependency: missing tools are recorded as skipped, with the reason);

the peak resident memory of a process that summarises each model, against one that
only imports torch; the wall time of ``cnnkit summary vgg16`` against
``python -c "import torch"``; and every tool's mult-adds for a stride-2 transposed
convolution beside the brute-force count (tools that count it from the output size
report stride^2 = 4 times too many).

Run: ``OMP_NUM_THREADS=1 python benchmarks/analysis_speed.py`` (writes
``benchmarks/results/analysis_speed.json``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "analysis_speed.json"
MODELS = ("vgg16", "resnet152", "senet154")
INPUT = (3, 224, 224)


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[dict[str, float], Any]:
    result = fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "runs": repeat}, result


def _available(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def _real_model(name: str) -> Any:
    from cnnkit.models.registry import create_model

    return create_model(name).eval()


# ---------------------------------------------------------------------------- tools


def bench_cnnkit(name: str, repeat: int) -> dict[str, Any]:
    from cnnkit.analysis import build_on_meta, summarize
    from cnnkit.models.registry import create_model

    meta_model = build_on_meta(create_model, name)
    call, s = _timed(lambda: summarize(meta_model, INPUT), repeat)
    by_name, _ = _timed(lambda: summarize(name, INPUT), repeat)
    return {
        "summarize(meta model)": call,
        "summarize(name), building on meta": by_name,
        "mult_adds": s.total_mult_adds,
        "params": s.total_params,
        "unknown_layers": [r.name for r in s.unknown_layers],
        "final_receptive_field": None
        if s.final_receptive_field is None
        else s.final_receptive_field.to_dict(),
    }


def bench_torchinfo(name: str, repeat: int, real: Any) -> dict[str, Any]:
    import torchinfo

    out: dict[str, Any] = {"version": getattr(torchinfo, "__version__", "?")}

    def run(model: Any, device: str | None) -> Any:
        kwargs: dict[str, Any] = {"input_size": (1, *INPUT), "verbose": 0}
        if device is not None:
            kwargs["device"] = device
        return torchinfo.summary(model, **kwargs)

    t, stats = _timed(lambda: run(real, "cpu"), repeat)
    out["default (weights allocated, real forward)"] = {
        **t,
        "mult_adds": int(stats.total_mult_adds),
        "params": int(stats.total_params),
    }
    try:
        from cnnkit.analysis import build_on_meta
        from cnnkit.models.registry import create_model

        meta_model = build_on_meta(create_model, name)
        t, stats = _timed(lambda: run(meta_model, "meta"), repeat)
        out["device=meta"] = {**t, "mult_adds": int(stats.total_mult_adds), "params": int(stats.total_params)}
    except Exception as e:  # a tool's failure on meta is a result too
        out["device=meta"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    return out


def bench_fvcore(name: str, repeat: int, real: Any) -> dict[str, Any]:
    import torch
    from fvcore.nn import FlopCountAnalysis, parameter_count

    x = torch.zeros(1, *INPUT)

    def run() -> tuple[int, int]:
        flops = FlopCountAnalysis(real, x)
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        return int(flops.total()), int(parameter_count(real)[""])

    t, (macs, params) = _timed(run, repeat)
    return {**t, "mult_adds (fvcore calls them flops)": macs, "params": params}


def bench_torchscan(name: str, repeat: int, real: Any) -> dict[str, Any]:
    import torchscan

    t, info = _timed(lambda: torchscan.crawl_module(real, INPUT), repeat)
    layers = info.get("layers", []) if isinstance(info, dict) else []
    overall = info.get("overall", {}) if isinstance(info, dict) else {}
    # leaves only, so containers do not count their children again
    macs = sum(int(layer.get("macs", 0)) for layer in layers if layer.get("is_leaf", True))
    return {
        **t,
        "mult_adds (sum of leaf layers' macs)": macs,
        "params": int(overall.get("grad_params", 0)) + int(overall.get("nograd_params", 0)),
    }


def transposed_conv_check() -> dict[str, Any]:
    """Mult-adds of ConvTranspose2d(64, 32, 4, stride=2, padding=1) on 64x32x32, by each tool."""
    import torch
    from torch import nn

    from cnnkit.analysis import summarize

    layer = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)
    brute = 32 * 32 * 64 * 32 * 4 * 4  # each input pixel meets each kernel tap once
    res: dict[str, Any] = {"layer": "ConvTranspose2d(64, 32, 4, stride=2, padding=1) on 1x64x32x32"}
    res["brute_force"] = brute
    res["cnnkit"] = summarize(layer, (64, 32, 32)).total_mult_adds
    if _available("torchinfo") is None:
        import torchinfo

        res["torchinfo"] = int(
            torchinfo.summary(layer, input_size=(1, 64, 32, 32), verbose=0).total_mult_adds
        )
    if _available("fvcore") is None:
        from fvcore.nn import FlopCountAnalysis

        res["fvcore"] = int(FlopCountAnalysis(layer, torch.zeros(1, 64, 32, 32)).total())
    if _available("torchscan") is None:
        import torchscan

        info = torchscan.crawl_module(layer, (64, 32, 32))
        res["torchscan"] = int(
            sum(li.get("macs", 0) for li in info.get("layers", []) if li.get("is_leaf", True))
        )
    return res


# ---------------------------------------------------------------------------- memory and CLI


def _peak_rss_mb(code: str) -> float:
    """Peak resident memory of a fresh process running ``code``: VmHWM (ru_maxrss would carry
    over this process's own peak through fork)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    snippet = (
        f"{code}\nprint(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    )
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # kB -> MiB


def memory(models: tuple[str, ...]) -> dict[str, Any]:
    base = _peak_rss_mb("import torch")
    res: dict[str, Any] = {"import torch only (MiB peak RSS)": round(base, 1)}
    for name in models:
        peak = _peak_rss_mb(f"import torch\nfrom cnnkit.analysis import summarize\nsummarize({name!r})")
        res[f"summarize({name!r}) (MiB peak RSS)"] = round(peak, 1)
        res[f"summarize({name!r}) minus import torch (MiB)"] = round(peak - base, 1)
    return res


def cli_time(repeat: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def wall(cmd: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, env=env)
        return time.perf_counter() - t0

    helped = subprocess.run(
        [sys.executable, "-m", "cnnkit", "--help"], capture_output=True, text=True, env=env
    )
    if helped.returncode == 0 and "summary" in helped.stdout:
        cmd, how = [sys.executable, "-m", "cnnkit", "summary", "vgg16"], "python -m cnnkit summary vgg16"
    else:
        code = "from cnnkit.analysis.cli_support import summary_command; print(summary_command('vgg16'))"
        cmd, how = (
            [sys.executable, "-c", code],
            "summary_command('vgg16') (the `summary` subcommand is not wired yet)",
        )
    torch_only = statistics.median(wall([sys.executable, "-c", "import torch"]) for _ in range(repeat))
    command = statistics.median(wall(cmd) for _ in range(repeat))
    return {
        "command": how,
        "python -c 'import torch' (s, median)": round(torch_only, 3),
        "command (s, median)": round(command, 3),
        "difference (s)": round(command - torch_only, 3),
    }


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed runs per measurement (after one warm-up)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tools = {
        "torchinfo": (bench_torchinfo, _available("torchinfo")),
        "fvcore": (bench_fvcore, _available("fvcore")),
        "torchscan": (bench_torchscan, _available("torchscan")),
    }
    result: dict[str, Any] = {
        "input_size": list(INPUT),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "tools_run": ["cnnkit", *[t for t, (_, err) in tools.items() if err is None]],
        "tools_skipped": {t: err for t, (_, err) in tools.items() if err is not None},
        "models": {},
    }
    for name in args.models:
        print(f"{name}: cnnkit ...", flush=True)
        entry: dict[str, Any] = {"cnnkit": bench_cnnkit(name, args.repeat)}
        runnable = {t: fn for t, (fn, err) in tools.items() if err is None}
        if runnable:
            real = _real_model(name)
            for tool, fn in runnable.items():
                print(f"{name}: {tool} ...", flush=True)
                try:
                    entry[tool] = fn(name, args.repeat, real)
                except Exception as e:
                    entry[tool] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            del real
        result["models"][name] = entry
    result["transposed_conv_check"] = transposed_conv_check()
    if not args.skip_memory:
        print("peak memory ...", flush=True)
        result["peak_memory"] = memory(tuple(args.models))
    if not args.skip_cli:
        print("command time ...", flush=True)
        result["cli"] = cli_time(max(3, args.repeat // 2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
