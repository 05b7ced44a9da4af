"""Stage 4 of the evaluation: plots, results saved locally, the MLflow run, Prefect artifacts.

(No ``from __future__ import annotations``, as in :mod:`flows.evaluate`.)
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from prefect import get_run_logger
from prefect.runtime import deployment, flow_run
from prefect.utilities.annotations import quote

from flows.artifacts import publish_prefect_artifacts_task
from flows.settings import EvaluateSettings
from flows.stages import Judged, Reduced, Scoring
from flows.steps import (
    build_evaluation_log_task,
    log_evaluation_task,
    make_figures_task,
    sample_scores_task,
    save_results_task,
)
from tasks.metrics.cache import evaluation_key
from tasks.review.results import Evaluation
from tasks.review.run_content import audit_headline
from tasks.tracking.access import ui_hint


def publish(
    settings: EvaluateSettings,
    scoring: Scoring,
    reduced: Reduced,
    judged: Judged,
    scheduled: datetime | None,
    tracking_uri: str,
) -> Evaluation:
    """Stage 4: plots, results saved locally, the MLflow run, Prefect artifacts."""
    dataset, scorer = scoring.dataset, scoring.scorer
    get_run_logger().info("drawing the plots and the report")
    eval_key = evaluation_key(dataset, scorer, settings.model_dump(mode="json"))
    sample = sample_scores_task(quote(dataset), scorer, settings.sample_rows)
    figures = _draw_figures(settings, scoring, reduced, judged, sample)
    results_path = save_results_task(eval_key, judged.table, reduced.overall)
    log = build_evaluation_log_task(
        dataset=quote(dataset),
        table=judged.table,
        overall=reduced.overall,
        model=scoring.info,
        experiment=settings.experiment,
        run_name=settings.run_name or _default_run_name(settings, scoring.name, scheduled),
        figures=figures,
        sample=sample,
        fitted_model=scoring.fitted,
        max_partition_metrics=settings.max_partition_metrics,
        tags={
            **scoring.tags,
            **(judged.verdict.tags() if judged.verdict else {}),
            **_run_tags(eval_key),
            **judged.series.tags(),
        },
        series=judged.series,
        register=(settings.register_name, settings.register_alias) if settings.register_name else None,
        audit=judged.audit,
        results_path=results_path,
        slices=judged.slices,
    )
    get_run_logger().info(f"logging the run to MLflow ({len(figures)} plots, the table and the report)")
    run_id, experiment_id = log_evaluation_task(quote(log), tracking_uri)
    headline = audit_headline(judged.audit[0], reduced.overall["bce"]) if judged.audit else ""
    evaluation = Evaluation(
        judged.table,
        reduced.overall,
        dataset.partition_by,
        run_id,
        experiment_id,
        tracking_uri,
        sample,
        judged.verdict,
        headline,
        scoring.info.description,
        judged.series.notice(),
        judged.slices,
        judged.series.estimate_line(),
    )
    publish_prefect_artifacts_task(quote(evaluation), Path(settings.data).name, ui_hint(tracking_uri), judged.verdict)
    return evaluation


def _draw_figures(
    settings: EvaluateSettings, scoring: Scoring, reduced: Reduced, judged: Judged, sample: pl.DataFrame
) -> dict[str, Any]:
    """The run's plots by artifact name; a linear model on one feature also gets its fitted sigmoid."""
    dataset, linear = scoring.dataset, None
    if scoring.scorer.expression is not None and len(dataset.features) == 1:
        linear = (float(scoring.model.coef_.ravel()[0]), float(scoring.model.intercept_.ravel()[0]))
    return make_figures_task(
        sample,
        judged.table,
        reduced.overall["bce"],
        dataset.features,
        linear,
        bool(dataset.partition_by),
        reduced.overall["n_rows"],
        settings.gates.partition_bound(),
        reduced.overall,
    )


def _run_tags(eval_key: str) -> dict[str, str]:
    return {
        "prefect.flow_run_id": str(flow_run.get_id() or ""),
        "prefect.flow_run_name": str(flow_run.get_name() or ""),
        "prefect.deployment_id": str(deployment.id or ""),
        "bce_eval.evaluation_key": eval_key,
    }


def _default_run_name(settings: EvaluateSettings, name: str, scheduled: datetime | None) -> str:
    # scheduled runs are named by their scheduled time, so a nightly series sorts and reads well
    stamp = (scheduled or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M")
    return f"{Path(settings.data).name} · {name} · {stamp}"
