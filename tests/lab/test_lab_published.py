"""The published standard-budget report (docs/lab/, issue "The lab's verdicts at a budget that
can decide them") is whole and is what the README says: every experiment of `cnnkit lab
list` has its standard result, every figure the report shows is there, and the README's
summary gives each experiment the verdict its result.json holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cnnkit.lab.experiments import EXPERIMENTS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "lab"


def _results() -> dict[str, dict]:  # type: ignore[type-arg]
    return {n: json.loads((DOCS / n / "result.json").read_text()) for n in EXPERIMENTS}


def test_every_experiment_has_its_standard_result() -> None:
    results = _results()
    assert {r["budget"] for r in results.values()} == {"standard"}
    trained = [r for r in results.values() if r["runs"]]
    # at least 3 seeds of every trained arm, all finished
    for r in trained:
        for arm in r["arms"]:
            runs = [x for x in r["runs"] if x["arm"] == arm["name"]]
            assert len(runs) == arm["seeds"] and all(x["error"] is None for x in runs), (r["name"], arm)
        assert r["budget_settings"]["seeds"] >= 3, r["name"]


def test_every_figure_of_the_report_is_published() -> None:
    html = (DOCS / "report.html").read_text()
    md = (DOCS / "report.md").read_text()
    shown = set(re.findall(r'<img src="([^"]+)"', html)) | set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md))
    assert shown and all((DOCS / f).is_file() for f in shown), sorted(
        f for f in shown if not (DOCS / f).is_file()
    )
    expected = {f["file"] for r in _results().values() for f in r["figures"]}
    assert expected <= shown
    assert (DOCS / "screenshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_readme_gives_each_experiment_its_published_verdict() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/lab/report.md" in readme and "docs/lab/screenshot.png" in readme
    for name, r in _results().items():
        row = re.search(rf"^\| {name} \| [^|]+ \| ([^|]+) \|", readme, re.M)
        assert row is not None, f"{name} missing from the README's lab summary"
        assert row.group(1).strip() == r["verdict"]["verdict"], name
