"""What an evaluation's MLflow run holds: params, metrics, tables, figures, the model, the summary in words.

(A comparison's run: :mod:`tasks.review.comparison_content`; the circles run's: :mod:`tasks.seed.circles_run`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tasks.data.dataset import Dataset
from tasks.data.naming import metric_key_suffix
from tasks.data.storage import data_location
from tasks.judge.drift import ESTIMATE_ERROR, ESTIMATED, SERIES_FIGURES, Series
from tasks.judge.slice_gates import SliceJudgement
from tasks.metrics import schema as metric_schema
from tasks.metrics.decisions import further_columns
from tasks.metrics.late_labels import estimated_line
from tasks.metrics.schema import Z95
from tasks.redact import redact_uri
from tasks.review.plots import plot_series
from tasks.review.report import render_report
from tasks.review.report_sections import calibration_section, decisions_section
from tasks.review.results import ModelInfo, clean_value, table_columns
from tasks.review.sample import describe_sample
from tasks.review.slices import slice_figures, slice_metrics, slice_report_tables, slice_tables
from tasks.review.summary import calibration_line, decisions_line
from tasks.tracking.content import DatasetRef, RunContent, encode_figures


def table_for_mlflow(table: pl.DataFrame, keys: tuple[str, ...]) -> dict[str, list[Any]]:
    """The per-partition table as a dict of columns (``log_table`` rejects Polars frames)."""
    cols = [*keys] if keys else ["partition"]
    out = table.select([*cols, *[c for c in table_columns() if c in table.columns], *further_columns(table.columns)])
    return {c: [clean_value(v) for v in out.get_column(c).to_list()] for c in out.columns}


def partition_metrics(table: pl.DataFrame, keys: tuple[str, ...], limit: int) -> dict[str, float]:
    """``<figure>_by_partition/<partition>`` metrics of each series figure (BCE, NE), up to ``limit`` partitions: MLflow
    charts, and the nightly series read back (tasks.judge.drift.history_frame)."""
    if not keys or table.height > limit:
        return {}
    out: dict[str, float] = {}
    # the estimate of a partition whose labels have not arrived is a key of its own, never a realized one's
    figures = [*SERIES_FIGURES, ESTIMATED]
    for row in table.select([*keys, *figures]).iter_rows(named=True):
        where = metric_key_suffix({k: row[k] for k in keys})
        out.update({f"{f}_by_partition/{where}": float(row[f]) for f in figures if row[f] is not None})
    return out


def _capital(line: str) -> str:
    return line[:1].upper() + line[1:]


def estimate_metrics(checked: pl.DataFrame) -> dict[str, float]:
    """The estimates checked this run (:func:`tasks.judge.drift.estimate_errors`) as metrics: each partition's
    realized − estimated BCE, their mean and their count (a series of its own: how far estimates can be trusted)."""
    out = {f"{ESTIMATE_ERROR}_by_partition/{k}": float(e) for k, e in checked.select("key", ESTIMATE_ERROR).iter_rows()}
    e = checked.get_column(ESTIMATE_ERROR)
    return out | {ESTIMATE_ERROR: float(e.mean()), "n_estimates_checked": float(e.len())}


def describe(
    overall: dict[str, Any],
    table: pl.DataFrame,
    keys: tuple[str, ...],
    dataset_name: str,
    model: ModelInfo,
    drift: str = "",
    estimates: str = "",
) -> str:
    """A few sentences for the MLflow run description (the series' drift notice second, when there is one)."""
    lines = [
        f"**BCE {overall['bce']:.4f}** (± {Z95 * overall['bce_se']:.4f}, 95% normal interval) over "
        f"{overall['n_rows']:,} rows of `{dataset_name}`, {overall['n_partitions']} partition(s); "
        f"accuracy {overall['accuracy']:.3f}"
        + (f", ROC AUC {overall['roc_auc']:.3f}" if overall.get("roc_auc") is not None else "")
        + "."
        if overall.get("bce") is not None
        else f"**No label has arrived yet** in `{dataset_name}`: no BCE is realized.",
        *([f"**{_capital(estimated_line(overall, table))}.**"] if estimated_line(overall, table) else []),
        *([f"**Drift:** {drift}."] if drift else []),
        *([f"{estimates[:1].upper()}{estimates[1:]}."] if estimates else []),
        *(f"{line[:1].upper()}{line[1:]}." for line in (calibration_line(overall), decisions_line(overall)) if line),
        f"Model: {model.description}.",
    ]
    realized = table.filter(pl.col("bce").is_not_null())
    if keys and realized.height > 1:
        worst = realized.sort("bce", descending=True).row(0, named=True)
        best = realized.sort("bce").row(0, named=True)
        lines.append(
            f"Worst partition `{worst['partition']}` (BCE {worst['bce']:.4f}, {worst['n_rows']:,} rows); "
            f"best `{best['partition']}` (BCE {best['bce']:.4f})."
        )
    singles = table.filter(pl.col("note").str.starts_with("single class"))
    if singles.height:
        names = ", ".join(f"`{p}`" for p in singles.get_column("partition").head(5).to_list()) if keys else "the data"
        lines.append(
            f"{singles.height} partition(s) hold a single class ({names}): BCE is defined there, ROC AUC is not."
        )
    return "\n\n".join(lines)


def build_params(dataset: Dataset, model: ModelInfo, overall: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Run parameters: data, columns, model settings, sizes."""
    return {
        "data_path": data_location(dataset.root),
        "label": dataset.label,
        "features": ",".join(dataset.features),
        "partition_by": ",".join(dataset.partition_by) or "(none)",
        "n_rows": overall["n_rows"],
        "n_partitions": overall["n_partitions"],
        "n_files": len(dataset.files),
        "data_fingerprint": dataset.fingerprint,
        "model": model.description,
        **({"model_uri": redact_uri(model.uri)} if model.uri else {}),
        **{f"model.{k}": v for k, v in model.params.items()},
        **extra,
    }


def predictions_table(sample: pl.DataFrame, features: tuple[str, ...]) -> dict[str, list[Any]]:
    """Per-row predictions (for small data: the seed's p(y) listing) as a table artifact."""
    cols = [*features, "y", "p", "loss"]
    # a Decimal feature would reach json.dumps as decimal.Decimal objects: log its values as floats
    out = sample.select(
        pl.col(c).cast(pl.Float64) if isinstance(sample.schema[c], pl.Decimal) else pl.col(c)
        for c in cols
        if c in sample.columns
    )
    return {
        c: [clean_value(float(v)) if isinstance(v, (float, np.floating)) else v for v in out.get_column(c).to_list()]
        for c in out.columns
    }


def build_evaluation_log(
    *,
    dataset: Dataset,
    table: pl.DataFrame,
    overall: dict[str, Any],
    model: ModelInfo,
    experiment: str,
    run_name: str,
    figures: dict[str, Any],
    sample: pl.DataFrame,
    fitted_model: Any,
    max_partition_metrics: int,
    tags: dict[str, str],
    register: tuple[str, str | None] | None = None,
    audit: tuple[pl.DataFrame, pl.DataFrame] | None = None,
    results_path: str | None = None,
    series: "Series | None" = None,
    slices: SliceJudgement | None = None,
) -> RunContent:
    """Everything one evaluation logs, assembled from its results (the audit and the series' bands, when there are)."""
    keys = dataset.partition_by
    name = Path(dataset.root).name
    metrics, tables, figures = _evaluation_values(dataset, table, overall, figures, sample, audit, series)
    metrics, tables, figures = _with_slices(slices, max_partition_metrics, overall, metrics, tables, figures)
    run_name = _with_gate(run_name, metrics, tags)
    X_example, y_example = _model_examples(fitted_model, sample, dataset.features)
    schema_df = sample.select([*dict.fromkeys([*dataset.features, dataset.label, *keys])]).head(5).to_pandas()
    notices = (series.notice(), series.estimate_line()) if series is not None else ("", "")
    description = describe(overall, table, keys, name, model, *notices)
    report = _evaluation_report(
        f"BCE evaluation of {name}: {run_name}",
        description,
        table,
        figures,
        sample,
        overall,
        tags,
        audit,
        series,
        slices,
    )
    return RunContent(
        experiment=experiment,
        run_name=run_name,
        params=build_params(dataset, model, overall, {}),
        metrics=metrics,
        partition_metrics=partition_metrics(table, keys, max_partition_metrics),
        tags=_evaluation_tags(dataset, tags, table),
        description=description,
        tables=tables,
        figures=encode_figures(figures),
        text_artifacts={"report.html": report},
        model=fitted_model,
        model_input_example=X_example,
        model_output_example=y_example,
        datasets=[DatasetRef(data_location(dataset.root), name, dataset.fingerprint, schema_df)],
        register=register,
        results_path=results_path,
    )


def _evaluation_tags(dataset: Dataset, tags: dict[str, str], table: pl.DataFrame) -> dict[str, str]:
    estimated = table.filter(pl.col("n_unlabelled") > 0) if "n_unlabelled" in table.columns else table.head(0)
    names = estimated.get_column("partition").to_list() if "partition" in estimated.columns else ["(all)"]
    return {
        "data_fingerprint": dataset.fingerprint,
        "bce_eval.kind": "evaluation",
        # which partitions hold estimated rows (labels not arrived): their figures are estimates, not realized
        **({"bce_eval.estimated_partitions": ",".join(names)[:4000]} if estimated.height else {}),
        **{k: v for k, v in tags.items() if v},
    }


def _evaluation_values(
    dataset: Dataset,
    table: pl.DataFrame,
    overall: dict[str, Any],
    figures: dict[str, Any],
    sample: pl.DataFrame,
    audit: tuple[pl.DataFrame, pl.DataFrame] | None,
    series: Series | None,
) -> tuple[dict[str, float], dict[str, dict[str, list[Any]]], dict[str, Any]]:
    """An evaluation's metrics, tables and figures: the audit's and the series' beside its own, and the
    predictions of a small dataset."""
    metrics = _overall_metrics(overall)
    tables = {"bce_by_partition.json": table_for_mlflow(table, dataset.partition_by)}
    if audit is not None:
        metrics.update(audit_metrics(audit[0]))
        tables.update(audit_tables(audit))
    if overall["n_rows"] <= 1000:
        tables["predictions.json"] = predictions_table(sample, dataset.features)
    if series is not None and series.estimates is not None and series.estimates.height:
        metrics.update(estimate_metrics(series.estimates))
        tables["estimate_errors.json"] = {c: series.estimates.get_column(c).to_list() for c in series.estimates.columns}
    if series is not None and series.has_history:
        tables["bce_series.json"], figures = (
            series_table(series),
            {**figures, "plots/bce_series.png": plot_series(series.history, series.band, figure=series.figure)},
        )
    return metrics, tables, figures


def _with_slices(
    slices: SliceJudgement | None,
    limit: int,
    overall: dict[str, Any],
    metrics: dict[str, float],
    tables: dict[str, dict[str, list[Any]]],
    figures: dict[str, Any],
) -> tuple[dict[str, float], dict[str, dict[str, list[Any]]], dict[str, Any]]:
    """Each slicing's table and gaps, its metrics and its forest plot, beside the run's own."""
    if slices is None:
        return metrics, tables, figures
    return (
        {**metrics, **slice_metrics(slices, limit)},
        {**tables, **slice_tables(slices)},
        {**figures, **slice_figures(slices, overall["bce"])},
    )


def _model_examples(fitted_model: Any, sample: pl.DataFrame, features: tuple[str, ...]) -> tuple[Any, Any]:
    """The logged model's input example (20 sampled rows) and its output on them (None, None without a fit)."""
    if fitted_model is None:
        return None, None
    import pandas as pd

    X = pd.DataFrame(sample.select(pl.col(c).cast(pl.Float64) for c in features).head(20).to_pandas())
    return X, fitted_model.predict_proba(X.to_numpy())


def series_table(series: Series) -> dict[str, list[Any]]:
    return {c: [clean_value(v) for v in series.band.get_column(c).to_list()] for c in series.band.columns}


def _overall_metrics(overall: dict[str, Any]) -> dict[str, float]:
    names = [*metric_schema.overall_metric_names(), *further_columns(overall)]  # and the figures at more thresholds
    metrics = {k: float(overall[k]) for k in names if overall.get(k) is not None}
    metrics.update(n_rows=float(overall["n_rows"]), n_partitions=float(overall["n_partitions"]))
    if overall.get("n_unlabelled"):  # rows estimated, not realized
        metrics["n_unlabelled"] = float(overall["n_unlabelled"])
    metrics.update({k: float(overall[k]) for k in ("partitions_reused", "partitions_computed") if k in overall})
    return metrics


def _with_gate(run_name: str, metrics: dict[str, float], tags: dict[str, str]) -> str:
    """The gate's outcome where a reviewer sees it: a metric to chart over a series, the run's name."""
    if not tags.get("quality_gate"):
        return run_name
    metrics["quality_gate_passed"] = 1.0 if tags["quality_gate"] == "passed" else 0.0
    # first: the run list's name column is narrow and cuts the end
    return f"gate FAILED · {run_name}" if tags["quality_gate"] == "failed" else run_name


def _evaluation_report(
    title: str,
    summary: str,
    table: pl.DataFrame,
    figures: dict[str, Any],
    sample: pl.DataFrame,
    overall: dict[str, Any],
    tags: dict[str, str],
    audit: tuple[pl.DataFrame, pl.DataFrame] | None,
    series: Series | None,
    slices: SliceJudgement | None,
) -> str:
    band = series.band if series is not None and series.has_history else None
    extra = (
        {"Audit: BCE three ways, per partition": audit[0], "Audit: the largest per-row losses": audit[1]}
        if audit
        else {}
    )
    if band is not None:
        extra = {
            "Nightly series: this run against the band of each partition's history (median ± k robust σ)": band,
            **extra,
        }
    extra = {**(slice_report_tables(slices) if slices is not None else {}), **extra}
    sliced = slices.tables if slices is not None else {}
    return render_report(
        title=title,
        summary=summary,
        table=table,
        figures=figures,
        shown=describe_sample(sample.height, overall["n_rows"]),
        gate=tags.get("quality_gate"),
        gate_message=tags.get("quality_gate.failures", ""),
        extra_tables=extra,
        sections=(calibration_section(table, sliced, overall), decisions_section(table, sliced, overall)),
    )


def audit_metrics(table: pl.DataFrame) -> dict[str, float]:
    """The audit's overall figures: BCE under the three rules (row-weighted), and saturated counts."""
    n = table.get_column("n_rows").sum()
    out = {
        col: float((table.get_column(col) * table.get_column("n_rows")).sum() / n)
        for col in ("bce_sklearn_clip", "bce_keras_clip", "bce_recalibrated")
    }
    out["n_p_zero"] = float(table.get_column("n_p_zero").sum())
    out["n_p_one"] = float(table.get_column("n_p_one").sum())
    return out


def audit_headline(table: pl.DataFrame, bce: float) -> str:
    """The audit in one line for the terminal: BCE three ways, saturated rows, what recalibration removes."""
    m = audit_metrics(table)
    return (
        f"audit: BCE exact {bce:.4f}, as sklearn's log_loss {m['bce_sklearn_clip']:.4f}, under Keras' clipping "
        f"{m['bce_keras_clip']:.4f}; {int(m['n_p_zero'] + m['n_p_one']):,} row(s) with p exactly 0 or 1; "
        f"recalibration would remove {bce - m['bce_recalibrated']:.4f} (in-sample)"
    )


def audit_tables(audit: tuple[pl.DataFrame, pl.DataFrame]) -> dict[str, dict[str, list[Any]]]:
    """The audit's two tables as run artifacts: per partition, and the largest losses."""
    table, top = audit
    return {
        "bce_audit.json": {c: [clean_value(v) for v in table.get_column(c).to_list()] for c in table.columns},
        "largest_losses.json": {c: [clean_value(v) for v in top.get_column(c).to_list()] for c in top.columns},
    }
