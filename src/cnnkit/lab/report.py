"""The report of ``cnnkit lab``: every experiment's claim, setup, numbers, figures and
verdict, as a static HTML page and as Markdown, both readable offline.

Rendered from the ``result.json`` files the runner wrote, so rendering never trains:
``OUTPUT/report.html`` and ``OUTPUT/report.md`` link the figures by relative path
(``<experiment>/<figure>.png``); the page has no script, no web font and no remote
resource.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cnnkit.lab.spec import PAPER_CAPTION

__all__ = ["collect_results", "render_report"]

_MARK = {True: "yes", False: "no", None: "unknown"}
_COLOURS = {
    "reproduced": "#1a7f37",
    "partly": "#9a6700",
    "not reproduced": "#cf222e",
    "inconclusive": "#57606a",
}


def collect_results(output: str | Path) -> list[dict[str, Any]]:
    """The ``result.json`` of every experiment under ``output``, in the catalogue's order."""
    from cnnkit.lab.experiments import EXPERIMENTS

    out = Path(output)
    found = {p.parent.name: p for p in out.glob("*/result.json")}
    order = [n for n in EXPERIMENTS if n in found] + sorted(n for n in found if n not in EXPERIMENTS)
    return [json.loads(found[n].read_text()) for n in order]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = [
        "| " + " | ".join(_md_escape(str(c)) for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_md_escape(_cell(c)) for c in r) + " |" for r in rows]
    return lines


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{e(_cell(c))}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _setup_rows(r: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for a in r["arms"]:
        opts = ", ".join(f"{k}={json.dumps(v)}" for k, v in a["overrides"].items()) or "-"
        rows.append([a["label"], a["model"], opts, a["seeds"]])
    return rows


def _budget_text(r: dict[str, Any]) -> str:
    b = r["budget_settings"]
    parts = [
        f"budget {r['budget']}",
        f"dataset {r['dataset']}",
        f"train subset {b['train_subset'] or 'all'}",
        f"test subset {b['test_subset'] or 'all'}",
        f"{b['epochs']} epoch(s)",
        f"batch {b['batch_size']}",
        f"up to {b['seeds']} seed(s)",
        f"device {r['device']}",
    ]
    return ", ".join(parts)


def _minutes(r: dict[str, Any]) -> str:
    """The experiment's compute time from scratch (its runs' training and evaluation)."""
    secs = r.get("compute_seconds")
    return "-" if secs is None else f"{secs / 60:.1f}"


def _run_text(results: list[dict[str, Any]]) -> str:
    """How this report was made: the command, the machine(s) and the total time."""
    budgets = sorted({r["budget"] for r in results})
    machines = sorted({r["machine"] for r in results if r.get("machine")})
    total = sum(float(r.get("compute_seconds") or 0) for r in results)
    return (
        f"Made by `cnnkit lab run all --budget {'/'.join(budgets)}` on "
        f"{'; '.join(machines) or 'an unrecorded machine'}: {total / 60:.0f} minutes of training and "
        "evaluation in all (each experiment's share in the summary's last column)."
    )


def _paper_tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The experiment's paper-beside-measurement tables: shown first, under the verdict."""
    return [t for t in r["tables"] if t["caption"].startswith(PAPER_CAPTION)]


def _other_tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in r["tables"] if not t["caption"].startswith(PAPER_CAPTION)]


def _markdown(results: list[dict[str, Any]], title: str) -> str:
    lines = [f"# {title}", "", f"Generated {datetime.now():%Y-%m-%d %H:%M}. {_run_text(results)}", ""]
    lines += ["## Summary", ""]
    lines += _md_table(
        ["experiment", "claim", "verdict", "measured", "minutes"],
        [
            [r["name"], r["title"], r["verdict"]["verdict"], r["verdict"]["summary"], _minutes(r)]
            for r in results
        ],
    )
    for r in results:
        v = r["verdict"]
        lines += ["", f"## {r['name']}: {r['title']}", ""]
        lines += [f"**Claim** ({r['slide']}): {r['claim']}", ""]
        lines += [f"**Verdict: {v['verdict']}** -- {v['summary']}", ""]
        lines += [f"Rule: {r['rule']}", ""]
        for c in v["checks"]:
            lines.append(f"- [{_MARK[c['holds']]}] {c['check']}")
        for t in _paper_tables(r):
            lines += ["", f"**{t['caption']}**", "", *_md_table(t["columns"], t["rows"])]
        lines += ["", f"Setup: {_budget_text(r)}.", ""]
        if r["arms"]:
            lines += [*_md_table(["arm", "model", "options", "seeds"], _setup_rows(r)), ""]
        for t in _other_tables(r):
            lines += [f"*{t['caption']}*", "", *_md_table(t["columns"], t["rows"]), ""]
        for f in r["figures"]:
            lines += [f"![{_md_escape(f['caption'])}]({f['file']})", "", f"*{f['caption']}*", ""]
        if r.get("notes"):
            lines += [f"Notes: {r['notes']}", ""]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1f2328;line-height:1.45}
h1{border-bottom:2px solid #d0d7de}h2{border-bottom:1px solid #d0d7de;margin-top:2.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.86em}caption{text-align:left;font-style:italic;
padding:.3em 0}th,td{border:1px solid #d0d7de;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f6f8fa}.badge{display:inline-block;padding:.1em .6em;border-radius:1em;color:#fff;
font-weight:600;font-size:.9em}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eaeef2}
figcaption{font-size:.88em;color:#57606a}.claim{background:#f6f8fa;border-left:4px solid #8c959f;
padding:.5em .9em}.paper{margin-bottom:0}.checks li{margin:.2em 0}.muted{color:#57606a;font-size:.9em}
"""


def _badge(verdict: str) -> str:
    colour = _COLOURS.get(verdict, "#57606a")
    return f'<span class="badge" style="background:{colour}">{html.escape(verdict)}</span>'


def _html(results: list[dict[str, Any]], title: str) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="muted">Generated {datetime.now():%Y-%m-%d %H:%M} by <code>cnnkit lab</code>. '
        "Each verdict is computed from the measured numbers by the rule printed beside it. "
        + re.sub(r"`([^`]*)`", r"<code>\1</code>", e(_run_text(results)))
        + "</p>",
        "<h2>Summary</h2>",
        "<table><thead><tr><th>experiment</th><th>claim</th><th>verdict</th><th>measured</th>"
        "<th>minutes</th></tr></thead><tbody>",
    ]
    for r in results:
        parts.append(
            f'<tr><td><a href="#{e(r["name"])}">{e(r["name"])}</a></td><td>{e(r["title"])}</td>'
            f"<td>{_badge(r['verdict']['verdict'])}</td><td>{e(r['verdict']['summary'])}</td>"
            f"<td>{_minutes(r)}</td></tr>"
        )
    parts.append("</tbody></table>")
    for r in results:
        v = r["verdict"]
        parts += [
            f'<h2 id="{e(r["name"])}">{e(r["name"])}: {e(r["title"])}</h2>',
            f'<p class="claim"><b>Claim</b> ({e(r["slide"])}): {e(r["claim"])}</p>',
            f"<p><b>Verdict:</b> {_badge(v['verdict'])} {e(v['summary'])}</p>",
            f"<p><b>Rule:</b> {e(r['rule'])}</p>",
            '<ul class="checks">'
            + "".join(f"<li><b>{_MARK[c['holds']]}</b>: {e(c['check'])}</li>" for c in v["checks"])
            + "</ul>",
        ]
        for t in _paper_tables(r):
            parts.append(f'<p class="paper"><b>{e(t["caption"])}</b></p>')
            parts.append(_html_table(t["columns"], t["rows"]))
        parts.append(f'<p class="muted">Setup: {e(_budget_text(r))}.</p>')
        if r["arms"]:
            parts.append(_html_table(["arm", "model", "options", "seeds"], _setup_rows(r), "Arms"))
        for t in _other_tables(r):
            parts.append(_html_table(t["columns"], t["rows"], t["caption"]))
        for f in r["figures"]:
            parts.append(
                f'<figure><img src="{e(f["file"])}" alt="{e(f["caption"])}">'
                f"<figcaption>{e(f['caption'])}</figcaption></figure>"
            )
        if r.get("notes"):
            parts.append(f'<p class="muted"><b>Notes:</b> {e(r["notes"])}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_report(output: str | Path, *, title: str = "cnnkit lab: the lecture's claims, reproduced") -> Path:
    """Write ``report.html`` and ``report.md`` in ``output`` from its results; returns the HTML path."""
    out = Path(output)
    results = collect_results(out)
    if not results:
        raise ValueError(f"{out} holds no experiment results; run `cnnkit lab run NAME --output {out}` first")
    missing = [f["file"] for r in results for f in r["figures"] if not (out / f["file"]).is_file()]
    if missing:
        raise ValueError(f"figures missing under {out}: {', '.join(missing[:3])}; rerun `cnnkit lab run`")
    (out / "report.md").write_text(_markdown(results, title))
    page = out / "report.html"
    page.write_text(_html(results, title))
    return page
