"""The evaluation flow: resolve the scorer → reduce with the cache → judge → publish.

Wiring only: every step is a task from :mod:`tasks`, grouped in four stages that each return a
frozen result, read top to bottom; nothing is patched after it is built. Which process runs the
chunks is the task runner's choice (one local thread by default, a Dask cluster with ``--dask``),
not an ``if`` in the flow. A failed quality gate ends the flow run Failed, with the whole
:class:`Evaluation` as its data, after everything was logged.

(No ``from __future__ import annotations`` here: Prefect must resolve the settings type when a
deployment loads this file.) Arguments that hold thousands of items (the dataset's files, cache
keys, per-partition records) go through ``quote()``: no task here takes a future, and Prefect would
otherwise walk every item of them.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow, get_run_logger
from prefect.runtime import deployment, flow_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows.background import listing_in_background
from flows.settings import EvaluateSettings
from tasks.audit import audit_chunk_task, summarize_audit_task
from tasks.cache import (
    check_cache_dir_task,
    evaluation_key,
    load_cached_task,
    partition_content_hashes_task,
    partition_keys,
    save_results_task,
    store_records_task,
)
from tasks.dataset import Dataset, check_dataset_task, files_by_partition, group_files
from tasks.fit_streaming import fit_logistic_streaming_task
from tasks.gates import GateResult, check_gates_task, read_baseline_task, with_verdicts
from tasks.model import check_model_output_task, fit_model_task, load_model_task
from tasks.plots import make_figures_task, sample_scores_task
from tasks.reduce import reduce_chunk_task, summarize_records_task
from tasks.prefect_artifacts import publish_prefect_artifacts_task
from tasks.results import Evaluation, ModelInfo, model_label, with_partition_label
from tasks.run_content import audit_headline, build_evaluation_log_task
from tasks.scoring import Scorer, make_scorer, stored_scorer
from tasks.tracking import check_tracking_access_task, describe_model_task, log_evaluation_task, resolve_tracking_uri
from tasks.series import DEFAULT_BAND, Series, current_points, drift_band, latest_run, model_lineage, read_history_task, series_key
from tasks.storage import data_location
from tasks.tracking_access import ui_hint
from tasks.training_data import collect_training_data_task


#: the progress line's words when the pass starts (tests wait for it, or check that a refusal came before it)
PASS_STARTED = "chunk(s) of whole partitions"


@dataclass(frozen=True)
class Scoring:
    """What is evaluated, on which data: the dataset, its scorer, and the model behind it."""

    dataset: Dataset
    scorer: Scorer
    info: ModelInfo
    tags: dict[str, str]
    lineage: str  # the model's part of the series key (tasks.series.model_lineage)
    name: str  # the model's short name, for the run's default name (tasks.results.model_label)
    model: Any = None  # the loaded or fitted model (None for stored scores)
    fitted: Any = None  # the model fitted by this run (logged with it), else None


@dataclass(frozen=True)
class Reduced:
    """The per-partition table and the overall row, merged from computed and cached partitions."""

    table: pl.DataFrame
    overall: dict[str, Any]


@dataclass(frozen=True)
class Judged:
    """The table with each partition's verdict, the gate's result, the series' bands, and the audit when it ran."""

    table: pl.DataFrame
    verdict: GateResult | None
    audit: tuple[pl.DataFrame, pl.DataFrame] | None
    series: Series


@flow(name="bce-evaluate", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def evaluate_flow(settings: EvaluateSettings) -> Evaluation:
    """Evaluate a binary classifier by BCE per partition and overall, and log it to MLflow."""
    tracking_uri = resolve_tracking_uri()
    check_tracking_access_task(tracking_uri)
    scheduled = flow_run.get_scheduled_start_time()
    scoring = resolve_scoring(settings, scheduled, tracking_uri)
    reduced = reduce_with_cache(settings, scoring)
    judged = judge(settings, scoring, reduced, tracking_uri)
    evaluation = publish(settings, scoring, reduced, judged, scheduled, tracking_uri)
    if not evaluation.gate_passed:
        # after logging: the run is FINISHED and tagged; the flow run ends Failed with the reason
        return Failed(message=evaluation.gate.message, data=evaluation)
    return evaluation


def with_dask(settings: EvaluateSettings):
    """The evaluation flow with its chunk tasks on a Dask cluster (``settings.dask``: an address or 'local')."""
    from tasks._prefect import dask_task_runner

    if settings.dask == "local":
        runner = dask_task_runner(cluster_kwargs={"n_workers": settings.dask_workers, "threads_per_worker": 1, "dashboard_address": None})
    else:
        runner = dask_task_runner(address=settings.dask)
    return evaluate_flow.with_options(task_runner=runner)


def flow_for(settings: EvaluateSettings):
    """The flow with the task runner the settings ask for."""
    return with_dask(settings) if settings.dask else evaluate_flow


def resolve_scoring(settings: EvaluateSettings, scheduled: datetime | None, tracking_uri: str) -> Scoring:
    """Stage 1: load and check the model (or take stored scores), select and check the data, fit if needed."""
    logger = get_run_logger()
    logger.info(f"listing the Parquet files under {data_location(settings.data)} and reading their footers")
    # the listing needs no model: it runs on a thread of its own while the model loads (MLflow's
    # look-ups, the helper process), whichever runner takes the chunks; only its checks wait for
    # the model, which decides the columns the scan needs and which of them may be text
    with listing_in_background({
        "data": settings.data, "where": settings.where, "date_key": settings.date_key,
        "window_days": settings.window_days, "reference": scheduled,
    }) as listing:
        features, tags, loaded = list(settings.features), {}, None
        if settings.model_uri:
            logger.info(f"loading the model {settings.model_uri} from MLflow")
            tags = describe_model_task(settings.model_uri, tracking_uri)
            loaded = load_model_task(settings.model_uri, tracking_uri, settings.score_kind)
            features = loaded.features(features)
        extra = [settings.score_col] if settings.score_col else []
        dataset = check_dataset_task(
            quote(listing.result()), settings.label, features, settings.partition_by, extra,
            loaded.inputs.by_name() if loaded and loaded.inputs else None, settings.model_uri or "",
        )
    logger.info(f"found {len(dataset.files):,} file(s), {dataset.num_rows:,} rows")
    if settings.score_col:
        info = ModelInfo(f"stored {settings.score_kind} column {settings.score_col!r}")
        lineage = model_lineage(tags, score_col=settings.score_col, score_kind=settings.score_kind)
        return Scoring(dataset, stored_scorer(settings.score_col, settings.score_kind), info, tags, lineage, f"stored {settings.score_col}")
    if loaded is not None:
        scorer = loaded.scorer(dataset.features, dataset.text_features)
        check_model_output_task(loaded, quote(dataset))
        tags = {**tags, **loaded.tags(scorer)}
        label = model_label(tags, loaded.type_name)
        what = f"{label} ({loaded.flavor.name} {loaded.type_name})" if tags.get("model_version") else label
        info = ModelInfo(f"{what} from {settings.model_uri}", uri=settings.model_uri,
                         registered_name=tags.get("model_name"), registered_version=tags.get("model_version"))
        return Scoring(dataset, scorer, info, tags, model_lineage(tags), label, loaded.model)
    get_run_logger().info(f"fitting LogisticRegression on {dataset.num_rows:,} rows of {len(dataset.files)} file(s)")
    fitted = _fit(settings, dataset)
    how = " (streaming L-BFGS)" if settings.fit == "streaming" else ""
    info = ModelInfo(f"LogisticRegression fitted on this data{how}", params=fitted.get_params())
    # the fit's configuration: its features, the estimator's parameters and how it was fitted
    lineage = model_lineage(tags, features=dataset.features, params={**info.params, "fit": settings.fit})
    return Scoring(dataset, make_scorer(fitted, dataset.features), info, tags, lineage, "LogisticRegression", fitted, fitted)


def _fit(settings: EvaluateSettings, dataset: Dataset) -> Any:
    if settings.fit == "streaming":
        return fit_logistic_streaming_task(quote(dataset), **settings.model_params)
    X, y = collect_training_data_task(quote(dataset))
    return fit_model_task(X, y, settings.model_params)


def reduce_with_cache(settings: EvaluateSettings, scoring: Scoring) -> Reduced:
    """Stage 2: score, check and reduce each chunk of whole partitions; cached partitions are not read."""
    dataset, scorer, logger = scoring.dataset, scoring.scorer, get_run_logger()
    check_cache_dir_task(settings.cache)  # a bad BCE_EVAL_CACHE stops the run before the pass
    exact_auc = settings.auc == "exact"
    keys = partition_keys(dataset, scorer, exact_auc) if settings.cache else {}
    hashes = partition_content_hashes_task(quote(dataset), quote(list(keys))) if settings.cache and settings.verify_cache else None
    cached = load_cached_task(quote(keys), quote(hashes)) if settings.cache and not settings.full else {}
    chunks = group_files(dataset, settings.rows_per_task(holds_rows=exact_auc), skip=set(cached))
    logger.info(f"scoring {sum(f.num_rows for c in chunks for f in c):,} rows: {len(chunks)} {PASS_STARTED}")
    futures = [reduce_chunk_task.submit(quote(dataset), scorer, quote(chunk), exact_auc) for chunk in chunks]
    records, hists = [rec for rec, _ in cached.values()], [hist for _, hist in cached.values()]
    started, rows_done = time.monotonic(), 0
    for i, (chunk, future) in enumerate(zip(chunks, futures), 1):
        rec, hist = future.result()
        if settings.cache:
            store_records_task(quote(dataset), quote(keys), rec, hist, quote(hashes))
        records.append(rec)
        hists.append(hist)
        rows_done += sum(f.num_rows for f in chunk)
        if len(chunks) > 1 and time.monotonic() - started > 2:
            logger.info(f"scored {i}/{len(chunks)} chunks, {rows_done:,} rows")
    computed = len(files_by_partition(dataset)) - len(cached)
    if cached:
        logger.info(f"reused {len(cached)} cached partition(s); computed {computed}")
    table, overall = summarize_records_task(quote(records), quote(hists), list(dataset.partition_by))
    counts = {"partitions_reused": len(cached), "partitions_computed": computed}
    return Reduced(with_partition_label(table, dataset.partition_by), {**overall, **counts})


def judge(settings: EvaluateSettings, scoring: Scoring, reduced: Reduced, tracking_uri: str) -> Judged:
    """Stage 3: the series' bands, the quality gates (against a baseline run when asked), the optional audit pass."""
    gates = settings.gates
    key = series_key(data_location(settings.data), settings.label, deployment.id, scoring.lineage)
    history = read_history_task(tracking_uri, settings.experiment, key)
    baseline_run = latest_run(history, settings.experiment) if gates.baseline_run_id == "latest" else gates.baseline_run_id
    baseline = read_baseline_task(baseline_run, tracking_uri) if baseline_run else None
    current = current_points(reduced.table, reduced.overall, scoring.dataset.partition_by)
    k = gates.max_drift or DEFAULT_BAND
    series = Series(key, history, drift_band(history, current, k), k, gates.max_drift is not None)
    verdict = check_gates_task(reduced.table, reduced.overall, gates, baseline, series.band) if gates.active else None
    table = with_verdicts(reduced.table, verdict)
    if not settings.audit:
        return Judged(table, verdict, None, series)
    dataset, logger = scoring.dataset, get_run_logger()
    chunks = group_files(dataset, settings.rows_per_task(holds_rows=True))
    logger.info(f"auditing {dataset.num_rows:,} rows in {len(chunks)} chunk(s): a second pass that sorts each partition's losses")
    parts = []
    for i, chunk in enumerate(chunks, 1):
        parts.append(audit_chunk_task(quote(dataset), scoring.scorer, quote(chunk)))
        if len(chunks) > 1:
            logger.info(f"audited {i}/{len(chunks)} chunks")
    sums, bins, tops = (quote([p[i] for p in parts]) for i in range(3))
    return Judged(table, verdict, summarize_audit_task(sums, bins, tops, list(dataset.partition_by), table), series)


def publish(
    settings: EvaluateSettings, scoring: Scoring, reduced: Reduced, judged: Judged, scheduled: datetime | None, tracking_uri: str
) -> Evaluation:
    """Stage 4: plots, results saved locally, the MLflow run, Prefect artifacts."""
    dataset, scorer = scoring.dataset, scoring.scorer
    get_run_logger().info("drawing the plots and the report")
    eval_key = evaluation_key(dataset, scorer, settings.model_dump(mode="json"))
    sample = sample_scores_task(quote(dataset), scorer, settings.sample_rows)
    linear = None
    if scorer.expression is not None and len(dataset.features) == 1:
        linear = (float(scoring.model.coef_.ravel()[0]), float(scoring.model.intercept_.ravel()[0]))
    figures = make_figures_task(
        sample, judged.table, reduced.overall["bce"], dataset.features, linear, bool(dataset.partition_by), reduced.overall["n_rows"],
        settings.gates.max_partition_bce,
    )
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
        tags={**scoring.tags, **(judged.verdict.tags() if judged.verdict else {}), **_run_tags(eval_key), **judged.series.tags()},
        series=judged.series,
        register=(settings.register_name, settings.register_alias) if settings.register_name else None,
        audit=judged.audit,
        results_path=results_path,
    )
    get_run_logger().info(f"logging the run to MLflow ({len(figures)} plots, the table and the report)")
    run_id, experiment_id = log_evaluation_task(quote(log), tracking_uri)
    headline = audit_headline(judged.audit[0], reduced.overall["bce"]) if judged.audit else ""
    evaluation = Evaluation(
        judged.table, reduced.overall, dataset.partition_by, run_id, experiment_id, tracking_uri, sample, judged.verdict, headline,
        scoring.info.description, judged.series.notice(),
    )
    publish_prefect_artifacts_task(quote(evaluation), Path(settings.data).name, ui_hint(tracking_uri), judged.verdict)
    return evaluation


def _run_tags(eval_key: str) -> dict[str, str]:
    return {
        "prefect.flow_run_id": str(flow_run.get_id() or ""),
        "prefect.flow_run_name": str(flow_run.get_name() or ""),
        "prefect.deployment_id": str(deployment.id or ""),
        "bce_eval.evaluation_key": eval_key,
    }


def _default_run_name(settings: EvaluateSettings, name: str, scheduled: datetime | None) -> str:
    # scheduled runs are named by their scheduled time, so a nightly series sorts and reads well
    stamp = (scheduled or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M")
    return f"{Path(settings.data).name} · {name} · {stamp}"
