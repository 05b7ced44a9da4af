"""What a champion/challenger comparison's MLflow run holds: the paired figures, the tags naming both
models and the decision, the per-partition differences, the forest plot and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from tasks.data.dataset import Dataset
from tasks.data.naming import metric_key_suffix
from tasks.data.storage import data_location
from tasks.metrics import schema as metric_schema
from tasks.review.plots import plot_paired_differences
from tasks.review.report import render_report
from tasks.review.results import clean_value
from tasks.tracking.content import RunContent, encode_figures


def comparison_content(
    dataset: Dataset,
    table: pl.DataFrame,
    overall: dict[str, Any],
    experiment: str,
    run_name: str | None,
    champion: dict[str, str],
    challenger: dict[str, str],
    decision: str,
    flow_run_id: str,
    names: tuple[str, str] = ("", ""),
    slices: dict[str, pl.DataFrame] | None = None,
) -> RunContent:
    """What a champion/challenger comparison logs (``names``: the two models' short names,
    :func:`tasks.review.results.model_label`, for the run's default name)."""
    keys = dataset.partition_by
    cols = [
        *(keys or ("partition",)),
        "n_rows",
        *(f.name for f in metric_schema.PAIRED_FIGURES if f.name != "bce_diff_se"),
        "verdict",
    ]
    out = table.select(cols)
    metrics = {f.name: float(overall[f.name]) for f in metric_schema.PAIRED_FIGURES if overall.get(f.name) is not None}
    part_metrics = _difference_metrics(table, keys)
    tags = _comparison_tags(dataset, overall, champion, challenger, decision, flow_run_id)
    label = "partition" if "partition" in table.columns else cols[0]
    figures = {"plots/comparison_by_partition.png": plot_paired_differences(table, label, overall)}
    report = _comparison_report(dataset, out, figures, overall, champion, challenger, decision)
    # two unregistered models of one class have the same short name: their URIs tell them apart
    pair = names if all(names) and names[0] != names[1] else (champion["model_uri"], challenger["model_uri"])
    return RunContent(
        experiment=experiment,
        run_name=run_name or f"{Path(dataset.root).name} · {pair[0]} vs {pair[1]}",
        params=_comparison_params(dataset, table, overall, champion, challenger),
        metrics=metrics,
        partition_metrics=part_metrics,
        tags=tags,
        description=_comparison_description(overall, decision),
        tables={
            "bce_comparison.json": _as_columns(out),
            # each slicing's paired difference per slice
            **{f"slices/bce_diff_by_{key}.json": _as_columns(t) for key, t in (slices or {}).items()},
        },
        figures=encode_figures(figures),
        text_artifacts={"report.html": report},
    )


def _as_columns(table: pl.DataFrame) -> dict[str, list[Any]]:
    return {c: [clean_value(v) for v in table.get_column(c).to_list()] for c in table.columns}


def _difference_metrics(table: pl.DataFrame, keys: tuple[str, ...]) -> dict[str, float]:
    """``bce_diff_by_partition/<partition>`` metrics for MLflow charts (up to 1000 partitions)."""
    part_metrics = {}
    if keys and table.height <= 1000:
        for row in table.iter_rows(named=True):
            part_metrics[f"bce_diff_by_partition/{metric_key_suffix({k: row[k] for k in keys})}"] = float(
                row["bce_diff"]
            )
    return part_metrics


def _comparison_tags(
    dataset: Dataset,
    overall: dict[str, Any],
    champion: dict[str, str],
    challenger: dict[str, str],
    decision: str,
    flow_run_id: str,
) -> dict[str, str]:
    """Each model's tags (``champion.*``, ``challenger.*``), the verdict and the decision."""
    tags = {f"champion.{k}": v for k, v in champion.items()} | {f"challenger.{k}": v for k, v in challenger.items()}
    tags |= {
        "bce_eval.kind": "comparison",
        "comparison.verdict": overall["verdict"],
        "comparison.decision": decision,
        "data_fingerprint": dataset.fingerprint,
        "prefect.flow_run_id": flow_run_id,
    }
    return tags


def _comparison_report(
    dataset: Dataset,
    out: pl.DataFrame,
    figures: dict[str, Any],
    overall: dict[str, Any],
    champion: dict[str, str],
    challenger: dict[str, str],
    decision: str,
) -> str:
    """The comparison's ``report.html``: the difference in words, the table ``out``, the forest plot."""
    summary = (
        f"Challenger `{challenger['model_uri']}` − champion `{champion['model_uri']}`: BCE difference "
        f"**{overall['bce_diff']:+.5f}** "
        f"(95% paired interval [{overall['bce_diff_low']:+.5f}, {overall['bce_diff_high']:+.5f}]) over "
        f"{overall['n_rows']:,} rows: "
        f"{overall['verdict']}.\n\nDecision: {decision}."
    )
    return render_report(
        title=f"Champion vs challenger on {Path(dataset.root).name}",
        summary=summary,
        table=out,
        figures=figures,
        columns=tuple(out.columns),
    )


def _comparison_params(
    dataset: Dataset,
    table: pl.DataFrame,
    overall: dict[str, Any],
    champion: dict[str, str],
    challenger: dict[str, str],
) -> dict[str, Any]:
    return {
        "data_path": data_location(dataset.root),
        "champion": champion["model_uri"],
        "challenger": challenger["model_uri"],
        "n_rows": overall["n_rows"],
        "n_partitions": table.height,
        "interval": "95% normal approximation on paired per-row loss differences",
    }


def _comparison_description(overall: dict[str, Any], decision: str) -> str:
    """The run's description: the difference with its interval, both models' BCE, the decision."""
    return (
        f"Challenger − champion BCE: **{overall['bce_diff']:+.5f}** (95% CI [{overall['bce_diff_low']:+.5f}, "
        f"{overall['bce_diff_high']:+.5f}]) over {overall['n_rows']:,} rows: {overall['verdict']}. "
        f"Champion BCE {overall['bce_champion']:.4f}, challenger {overall['bce_challenger']:.4f}. Decision: "
        f"{decision}."
    )
