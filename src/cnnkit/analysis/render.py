"""Renderings of a table as plain text, Markdown and CSV, and the number formats of the analysis tables.

Written once for both tables of the analysis: :class:`~cnnkit.analysis.records.ModelSummary`
(one row per layer, a total row and footer lines) and
:class:`~cnnkit.analysis.records.Comparison` (one row per model). A :class:`Table` is
its headers, rows of cells, an optional total row and footer lines, rendered as
plain text or Markdown; :func:`csv_text` writes rows of plain values;
:func:`choose` picks a rendering by name. Imports neither torch nor anything heavy.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnkit.analysis.rf import ReceptiveField

__all__ = [
    "FORMATS",
    "MB",
    "Table",
    "choose",
    "csv_text",
    "fmt_int",
    "fmt_mb",
    "fmt_rf",
    "fmt_shape",
]

FORMATS = ("table", "markdown", "csv", "json")

MB = 1e6  # tables print megabytes as 10^6 bytes


# ---------------------------------------------------------------------------- cells


def fmt_int(v: int) -> str:
    return f"{v:,}"


def fmt_mb(v: float) -> str:
    return f"{v / MB:,.2f}"


def fmt_shape(s: Sequence[int] | None) -> str:
    return "-" if s is None else "[" + ", ".join(str(v) for v in s) + "]"


def fmt_rf(rf: ReceptiveField | None, part: str) -> str:
    """One part (``size``, ``jump`` or ``start``) of a receptive field: one number if the axes agree,
    else ``HxW``; a size reached by a branch without spatial layout is starred."""
    if rf is None:
        return "-"
    vals = getattr(rf, part)
    if vals is None:
        return "-"
    nums = [int(v) if float(v).is_integer() else round(float(v), 2) for v in vals]
    uniq = list(dict.fromkeys(nums))
    text = str(uniq[0]) if len(uniq) == 1 else "x".join(str(v) for v in nums)
    return text + ("*" if part == "size" and rf.global_context else "")


# ---------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    """Headers, rows of cells, an optional total row and footer lines; the first ``left`` columns
    are text (left-aligned), the rest numbers (right-aligned)."""

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    left: int = 1
    total: Sequence[str] | None = None
    footer: Sequence[str] = ()

    def text(self) -> str:
        """Columns padded to their widest cell, a rule under the headers and above the total, then
        a blank line and the footer lines."""
        body = [self.headers, *self.rows, *([self.total] if self.total is not None else [])]
        widths = [max(len(row[i]) for row in body) for i in range(len(self.headers))]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                c.ljust(w) if i < self.left else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        rule = "-" * len(line(self.headers))
        text = [line(self.headers), rule, *(line(r) for r in self.rows)]
        if self.total is not None:
            text += [rule, line(self.total)]
        if self.footer:
            text += ["", *self.footer]
        return "\n".join(text)

    def html(self) -> str:
        """An HTML table (a notebook's rich display): headers, rows, the total in bold, the footer."""
        from html import escape

        def row(cells: Sequence[str], tag: str = "td", bold: bool = False) -> str:
            cell = (lambda c: f"<b>{escape(c)}</b>") if bold else escape
            return (
                "<tr>"
                + "".join(
                    f'<{tag} style="text-align:{"left" if i < self.left else "right"}">{cell(c)}</{tag}>'
                    for i, c in enumerate(cells)
                )
                + "</tr>"
            )

        body = [row(self.headers, "th"), *(row(r) for r in self.rows)]
        if self.total is not None:
            body.append(row(self.total, bold=True))
        foot = "".join(f"<p>{escape(line)}</p>" for line in self.footer)
        return "<table>" + "".join(body) + "</table>" + foot

    def markdown(self, *, escape_pipes: bool = True) -> str:
        """A Markdown table (numbers right-aligned, the total's cells bold), then the footer as a
        list. ``escape_pipes`` escapes ``|`` in the body's cells."""

        def cells(r: Iterable[str]) -> str:
            return "| " + " | ".join(r) + " |"

        n = len(self.headers)
        align = "|" + "|".join(["---"] * self.left + ["---:"] * (n - self.left)) + "|"
        body = [cells(c.replace("|", "\\|") for c in r) if escape_pipes else cells(r) for r in self.rows]
        text = [cells(self.headers), align, *body]
        if self.total is not None:
            text.append(cells(f"**{c}**" if c else "" for c in self.total))
        if self.footer:
            text += ["", *(f"- {ln}" for ln in self.footer)]
        return "\n".join(text)


def csv_text(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """One line per row (``\\n`` line ends); the headers carry the units."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(headers)
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def choose(fmt: str, renderers: Mapping[str, Callable[[], str]]) -> str:
    """The rendering named ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(renderers)}")
    return renderers[fmt]()
