"""How each declared slicing reads: its MLflow table and metrics, its forest plot, its report section, its terminal
lines.

Every slicing (``--slice``) gets a table of its slices (the figures of the metric schema, the
verdict and, where a per-slice gate tested it, the p-value) and a table of the gaps between its
slices (worst slice, Fairlearn's difference and ratio). MLflow keys read ``slice.<slicing>.<slice>.<figure>``
and ``gap.<slicing>.<figure>.<gap>``, each part made a valid, collision-free key.
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from tasks.data.naming import metric_key_suffix
from tasks.judge.slice_gates import SliceJudgement
from tasks.metrics import schema as metric_schema
from tasks.metrics.decisions import further_columns
from tasks.review.plots import plot_partition_bce
from tasks.review.results import clean_value

#: the figures each slice's MLflow metrics hold (all of them stay in its table)
SLICE_METRICS = (
    "bce",
    "normalized_entropy",
    "d2_log_loss",
    "accuracy",
    "roc_auc",
    "n_rows",
    # calibration and the decision at the threshold, to chart a slice's over a series of runs
    "calibration_gap",
    "ece",
    "ece_equal_mass",
    "precision",
    "recall",
)
#: the gaps each slicing's MLflow metrics hold
GAP_METRICS = ("difference", "ratio", "difference_to_overall")


def slice_columns(table: pl.DataFrame) -> list[str]:
    """A slicing table's key columns: those between its ``slice`` label and its first sum."""
    cols = table.columns
    return cols[1 : cols.index("n_rows")]


def shown_columns(table: pl.DataFrame) -> list[str]:
    wanted = ["slice", *slice_columns(table), *metric_schema.table_value_columns(), *further_columns(table.columns)]
    wanted += ["sum_w", "verdict", "p_value"]
    return [c for c in dict.fromkeys(wanted) if c in table.columns]


def _as_columns(table: pl.DataFrame) -> dict[str, list[Any]]:
    return {c: [clean_value(v) for v in table.get_column(c).to_list()] for c in table.columns}


def slice_tables(judgement: SliceJudgement) -> dict[str, dict[str, list[Any]]]:
    """Each slicing's table and gaps as MLflow table artifacts."""
    out = {}
    for key, table in judgement.tables.items():
        out[f"slices/bce_by_{key}.json"] = _as_columns(table.select(shown_columns(table)))
        out[f"slices/gaps_{key}.json"] = _as_columns(judgement.gaps[key])
    for key, audit in judgement.audits.items():
        out[f"slices/audit_by_{key}.json"] = _as_columns(audit)
    return out


_BIN = re.compile(r"^(?:< (?P<lt>\S+)|\[(?P<lo>\S+), (?P<hi>\S+)\)|>= (?P<ge>\S+))$")


def readable_slice(values: dict[str, Any]) -> dict[str, Any]:
    """A slice's key columns as its metric key reads them: a binned column (``age[18,30]``) by its own name,
    its bin as ``lt_18``, ``18_to_30`` or ``ge_30`` (no bracket or sign to sanitise and hash); others as they are.
    A column whose own name another key column holds already keeps its bracketed name (no two read the same)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        m = _BIN.match(value) if isinstance(value, str) and "[" in name else None
        if m is None:
            out[name] = value
            continue
        column = name.split("[", 1)[0]
        column = name if column in values or column in out else column
        out[column] = f"lt_{m['lt']}" if m["lt"] else f"ge_{m['ge']}" if m["ge"] else f"{m['lo']}_to_{m['hi']}"
    return out


def slice_metrics(judgement: SliceJudgement, limit: int) -> dict[str, float]:
    """``slice.<slicing>.<slice>.<figure>`` for slicings of at most ``limit`` slices, and every slicing's gaps."""
    out: dict[str, float] = {}
    for key, table in judgement.tables.items():
        keys = slice_columns(table)
        if table.height <= limit:
            for row in table.iter_rows(named=True):
                where = metric_key_suffix(readable_slice({k: row[k] for k in keys}))
                out.update({f"slice.{key}.{where}.{f}": float(row[f]) for f in SLICE_METRICS if row.get(f) is not None})
        for row in judgement.gaps[key].iter_rows(named=True):
            out.update(
                {
                    f"gap.{key}.{row['figure']}.{g}": float(row[g])
                    for g in GAP_METRICS
                    if row.get(g) is not None and abs(row[g]) != float("inf")
                }
            )
    return out


def slice_figures(judgement: SliceJudgement, overall_bce: float) -> dict[str, Any]:
    """A forest plot of each slicing's BCE with 95% intervals, coloured by verdict."""
    return {
        f"plots/slices/bce_by_{key}.png": plot_partition_bce(table, "slice", overall_bce, what=key)
        for key, table in judgement.tables.items()
    }


def slice_report_tables(judgement: SliceJudgement) -> dict[str, pl.DataFrame]:
    """The report's sections: per slicing, its slices, then its gaps."""
    out = {}
    for key, table in judgement.tables.items():
        out[f"Slicing {key}: {table.height} slice(s)"] = table.select(shown_columns(table))
        out[f"Slicing {key}: gaps between slices (Fairlearn's difference and ratio)"] = judgement.gaps[key]
        if key in judgement.audits:
            out[f"Slicing {key}: audit (BCE three ways, calibration split)"] = judgement.audits[key]
    if judgement.method:
        out[judgement.method] = pl.DataFrame({"failures": judgement.failures or ["none"]})
    return out


def format_slices(judgement: SliceJudgement, top: int) -> list[str]:
    """Terminal lines: per slicing its worst slices by BCE and its largest BCE gap."""
    lines = []
    for key, table in judgement.tables.items():
        worst = table.sort("bce", descending=True, nulls_last=True).head(top)
        lines.append(f"  slicing {key}: {table.height} slice(s); worst by BCE:")
        for r in worst.iter_rows(named=True):
            ci = f"[{r['bce_low']:.3f}, {r['bce_high']:.3f}]" if r.get("bce_low") is not None else ""
            ne = "" if r.get("normalized_entropy") is None else f"NE {r['normalized_entropy']:.3f}"
            verdict = "" if r.get("verdict") in (None, "not judged") else r["verdict"]
            lines.append(
                f"    {r['slice'][:48]:<48}  {r['n_rows']:>10,}  BCE {r['bce']:.4f} {ci}  {ne}  {verdict}".rstrip()
            )
        gap = judgement.gaps[key].filter(pl.col("figure") == "bce")
        if gap.height and gap.item(0, "difference") is not None:
            g = gap.row(0, named=True)
            lines.append(
                f"    BCE gap: {g['difference']:.4f} between {g['best_slice']} and {g['worst_slice']} "
                f"(ratio {g['ratio']:.3f})"
            )
    if judgement.method:
        lines.append(f"  {judgement.method}")
    return lines


def artifact_key(key: str) -> str:
    """A Prefect artifact key for a slicing (lowercase letters, digits and dashes)."""
    return "bce-by-" + re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")
