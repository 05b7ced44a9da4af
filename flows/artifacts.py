"""What a flow run shows in Prefect: the per-partition table and a markdown summary as artifacts."""

from __future__ import annotations

from typing import Any

from flows.steps import as_task
from tasks.metrics.late_labels import ESTIMATE_COLUMNS, estimated_line, has_estimates
from tasks.review.results import Evaluation, clean_value
from tasks.review.slices import artifact_key
from tasks.review.summary import run_link


def publish_prefect_artifacts(ev: Evaluation, dataset_name: str, ui_hint: str, verdict: Any = None) -> None:
    """A table of per-partition BCE and a markdown summary on the Prefect flow run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = ev.table.sort("bce", descending=True, nulls_last=True).head(500)
    cols = [
        *(ev.partition_by or ("partition",)),
        "n_rows",
        "bce",
        "bce_low",
        "bce_high",
        "verdict",
        "accuracy",
        "roc_auc",
        *(ESTIMATE_COLUMNS if has_estimates(ev.table) else ()),  # rows without a label yet: estimated, apart
        "note",
    ]
    create_table_artifact(
        key="bce-by-partition",
        table=[{c: clean_value(r[c]) for c in cols} for r in rows.iter_rows(named=True)],
        description=f"BCE by partition of {dataset_name} (worst first)",
    )
    for key, table in (ev.slices.tables if ev.slices is not None else {}).items():
        shown = [
            c
            for c in ("slice", "n_rows", "bce", "bce_low", "bce_high", "normalized_entropy", "verdict")
            if c in table.columns
        ]
        create_table_artifact(
            key=artifact_key(key),
            table=[
                {c: clean_value(r[c]) for c in shown}
                for r in table.sort("bce", descending=True, nulls_last=True).head(500).iter_rows(named=True)
            ],
            description=f"BCE by slice of {key} (worst first)",
        )
    o = ev.overall
    realized = (
        f"Overall BCE **{o['bce']:.4f}** over {o['n_rows']:,} rows in {o['n_partitions']} partition(s); "
        f"accuracy {o['accuracy']:.4f}."
        if o.get("bce") is not None
        else f"No label has arrived yet in {o['n_partitions']} partition(s): no BCE is realized."
    )
    estimated = estimated_line(o, ev.table)
    create_markdown_artifact(
        key="bce-summary",
        markdown=(
            f"# BCE evaluation of `{dataset_name}`\n\n{realized}\n\n"
            + (f"**{estimated[:1].upper()}{estimated[1:]}.**\n\n" if estimated else "")
            + (f"**{verdict.message}**\n\n" if verdict is not None else "")
            + f"MLflow run `{ev.run_id}` (experiment {ev.experiment_id}): {run_link(ev)} — {ui_hint}\n"
        ),
        description="BCE evaluation summary",
    )


publish_prefect_artifacts_task = as_task(publish_prefect_artifacts, name="publish-artifacts")
