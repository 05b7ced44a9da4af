"""One self-contained HTML report per run (``report.html``): readable offline, shown inline by MLflow.

The summary in words, the per-partition table (sortable, with intervals, row counts, positive rates
and verdicts), the figures as embedded PNGs (the forest plot first), and the audit when it ran. No
script or style is fetched from anywhere: everything is in the file.
"""

from __future__ import annotations

import base64
import html
import math
import re
from typing import Any

import polars as pl

from tasks.metrics.late_labels import ESTIMATE_COLUMNS, has_estimates
from tasks.review.report_sections import ReportSection
from tasks.tracking.content import png_bytes

# the table's columns in the order a reviewer reads them (those present are shown)
_COLUMNS = (
    "partition",
    "n_rows",
    "bce",
    "bce_low",
    "bce_high",
    "positive_rate",
    "accuracy",
    "roc_auc",
    "brier",
    "verdict",
    "note",
)
_HEADERS = {
    "n_rows": "rows",
    "bce": "BCE",
    "bce_low": "95% low",
    "bce_high": "95% high",
    "positive_rate": "positive rate",
    "roc_auc": "ROC AUC",
    "brier": "Brier",
    "n_unlabelled": "rows without label",
    "estimated_bce": "estimated BCE",
    "estimated_bce_low": "estimate 95% low",
    "estimated_bce_high": "estimate 95% high",
}
# the figures in the order the report shows them, with what each is for
_FIGURES = (
    (
        "plots/bce_by_partition.png",
        "Forest plot: each partition's BCE with its 95% interval; the legend names its colours (the gate's verdicts) "
        "and lines.",
    ),
    (
        "plots/comparison_by_partition.png",
        "Challenger − champion BCE per partition with paired 95% intervals; left of 0: the challenger is better.",
    ),
    (
        "plots/bce_series.png",
        "The nightly series: overall and per-partition BCE over earlier runs; shaded, this run's band; circled, a "
        "value that left it.",
    ),
    (
        "plots/true_class_probability.png",
        "The seed article's walk-through: the probability the model gives each row's true class.",
    ),
    ("plots/log_loss_curve.png", "Each row's loss −log(p) on the curve, one panel per class."),
    ("plots/reliability.png", "Reliability diagram: predicted probability against the observed positive rate."),
    ("plots/fitted_sigmoid.png", "The fitted sigmoid; each line is the probability of the point's true class."),
    (
        "plots/cost_curve.png",
        "Decisions: the expected cost a row at each threshold (--costs), every row; dotted, the declared threshold.",
    ),
)
# the figures drawn from sampled rows (the others, like the table, use every row)
_ROW_LEVEL = frozenset(
    {
        "plots/true_class_probability.png",
        "plots/log_loss_curve.png",
        "plots/reliability.png",
        "plots/fitted_sigmoid.png",
    }
)

_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th{cursor:pointer;background:#f6f6f6;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
tr.failed td{background:#fde8e8}.badge{display:inline-block;padding:2px 8px;border-radius:4px;color:#fff}
.pass{background:#2e7d32}.fail{background:#c62828}.none{background:#777}figure{margin:16px 0}
figcaption{color:#555;font-size:13px}.wide{overflow-x:auto}img{max-width:100%}code{background:#f3f3f3;padding:0 3px}"""

# click a header to sort by it (numbers as numbers), click again to reverse
_SORT = """document.querySelectorAll('table.sortable th').forEach((th,i)=>th.addEventListener('click',()=>{
const t=th.closest('table'),b=t.tBodies[0],rows=[...b.rows],d=th.dataset.d=th.dataset.d==='a'?'d':'a';
const v=r=>{const s=r.cells[i].dataset.v??r.cells[i].textContent;const n=parseFloat(s);return isNaN(n)?s:n};
rows.sort((x,y)=>{const a=v(x),c=v(y);return (a<c?-1:a>c?1:0)*(d==='a'?1:-1)});rows.forEach(r=>b.appendChild(r))}));"""


def figure_png(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG (what an ``<img>`` embeds), the bytes the run logs too."""
    return base64.b64encode(png_bytes(fig)).decode("ascii")


def _markdown_inline(text: str) -> str:
    """The run description's markdown (bold, code) as HTML, everything else escaped."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


_MISSING = '<td data-v="">–</td>'


def _cells(col: str, values: pl.Series) -> list[str]:
    """The ``<td>`` of each value of one column: numbers formatted, their exact value in ``data-v`` for sorting.

    One formatter per column, chosen by its type: a report of 10,000 partitions has 100,000s of cells.
    """
    dtype = values.dtype
    if dtype == pl.Boolean:
        return [_MISSING if v is None else f'<td data-v="{int(v)}">{"yes" if v else ""}</td>' for v in values.to_list()]
    if dtype.is_float():
        shown = "{:.1%}" if col == "positive_rate" else "{:.4f}"
        return [
            f'<td data-v="{v!r}">{shown.format(v)}</td>' if v is not None and math.isfinite(v) else _MISSING
            for v in values.to_list()
        ]
    if dtype.is_integer():
        return [_MISSING if v is None else f'<td data-v="{v}">{v:,}</td>' for v in values.to_list()]
    return [_MISSING if v is None else f"<td>{html.escape(str(v))}</td>" for v in values.to_list()]


def table_html(table: pl.DataFrame, columns: tuple[str, ...] = _COLUMNS) -> str:
    """A sortable HTML table of the columns of ``table`` that ``columns`` names (failed rows marked), and the
    estimate's columns where rows have no label yet."""
    if has_estimates(table):
        columns = (*(c for c in columns if c != "note"), *ESTIMATE_COLUMNS, "note")
    cols = [c for c in columns if c in table.columns] or list(table.columns)
    head = "".join(f"<th>{html.escape(_HEADERS.get(c, c.replace('_', ' ')))}</th>" for c in cols)
    failed = (
        table.get_column("verdict").cast(pl.String).eq("failed").fill_null(False).to_list()
        if "verdict" in cols
        else [False] * table.height
    )
    rows = [
        ('<tr class="failed">' if bad else "<tr>") + "".join(cells) + "</tr>"
        for bad, *cells in zip(failed, *(_cells(c, table.get_column(c)) for c in cols))
    ]
    # scrolls sideways in a narrow pane (MLflow's artifact viewer) instead of hiding the last columns
    return (
        '<div class="wide"><table '
        f'class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    )


def _verdict_badge(gate: str | None) -> str:
    if gate == "failed":
        return '<span class="badge fail">quality gate failed</span>'
    if gate == "passed":
        return '<span class="badge pass">quality gate passed</span>'
    return '<span class="badge none">no quality gate</span>'


def _table_note(table: pl.DataFrame, columns: tuple[str, ...]) -> str:
    """How to read the table: only what this table has (shaded rows, which intervals)."""
    shown = {c for c in columns if c in table.columns}
    out = ["Click a column to sort."]
    if "verdict" in shown and table.get_column("verdict").cast(pl.String).eq("failed").any():
        out.append("Failed partitions are shaded.")
    if "bce_low" in shown:
        out.append("Intervals are 95% normal intervals of the mean per-row loss.")
    if "bce_diff_low" in shown:
        out.append("Intervals are paired 95% normal intervals of the mean per-row loss difference.")
    return " ".join(out)


def _figures_note(figures: dict[str, Any], shown: str) -> str:
    """Which rows the figures use: the row-level ones say their sample, when there are any."""
    if shown and _ROW_LEVEL & set(figures):
        return f"Row-level figures show {shown}; the table and the other figures use every row."
    return "The table and the figures use every row."


def _figure_html(name: str, figures: dict[str, Any]) -> str:
    caption = dict(_FIGURES)[name]
    return (
        f'<figure id="{html.escape(name)}"><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{figure_png(figures[name])}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def render_report(
    *,
    title: str,
    summary: str,
    table: pl.DataFrame,
    figures: dict[str, Any],
    shown: str = "",
    gate: str | None = None,
    gate_message: str = "",
    extra_tables: dict[str, pl.DataFrame] | None = None,
    columns: tuple[str, ...] = _COLUMNS,
    sections: tuple[ReportSection, ...] = (),
) -> str:
    """The whole report as one HTML document (``shown``: which rows the row-level figures show, in words;
    ``sections``: parts after the figures, each with its own figures and tables)."""
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{_verdict_badge(gate)}</p>",
        *(f"<p>{_markdown_inline(p)}</p>" for p in summary.split("\n\n") if p.strip()),
    ]
    if gate_message:
        parts.append(f"<p><b>Gate:</b> {html.escape(gate_message)}</p>")
    parts += ["<h2>By partition</h2>", f"<p>{html.escape(_table_note(table, columns))}</p>", table_html(table, columns)]
    if figures:
        parts += ["<h2>Figures</h2>", f"<p>{html.escape(_figures_note(figures, shown))}</p>"]
    in_sections = {name for s in sections for name in s.figures}
    parts += [_figure_html(name, figures) for name, _ in _FIGURES if name in figures and name not in in_sections]
    for name in (n for n in figures if n.startswith("plots/slices/")):  # one forest plot per declared slicing
        parts.append(
            f'<figure id="{html.escape(name)}"><img alt="{html.escape(name)}" src="data:image/png;base64,'
            f'{figure_png(figures[name])}"><figcaption>BCE by slice of '
            f"{html.escape(name.removeprefix('plots/slices/bce_by_').removesuffix('.png'))}, 95% intervals"
            "</figcaption></figure>"
        )
    for section in sections:
        parts += [f"<h2>{html.escape(section.heading)}</h2>", *(f"<p>{html.escape(p)}</p>" for p in section.paragraphs)]
        parts += [_figure_html(name, figures) for name in section.figures if name in figures]
        for caption, t in section.tables.items():
            parts += [f"<h3>{html.escape(caption)}</h3>", table_html(t, tuple(t.columns))]
    for heading, extra in (extra_tables or {}).items():
        parts += [f"<h2>{html.escape(heading)}</h2>", table_html(extra, tuple(extra.columns))]
    body = "\n".join(parts)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n{body}\n<script>{_SORT}</script></body></html>\n"
    )
