"""The evaluation flow: DATA → scan → check → score → loss → reduce → merge → report.

Wiring only: every step is a task from :mod:`tasks`. (No ``from __future__ import annotations``
here: Prefect must resolve the settings type when a deployment loads this file.) Arguments that
hold thousands of items (the dataset's files, cache keys, per-partition records) go through
``quote()``: no task here takes a future, and Prefect would otherwise walk every item of them.
"""

import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import deployment, flow_run
from prefect.utilities.annotations import quote

from flows.settings import EvaluateSettings
from tasks.errors import GateFailed
from tasks.fit_streaming import fit_logistic_streaming_task
from tasks.gates import check_gates_task, read_baseline_task, with_verdicts
from tasks.audit import audit_chunk_task, summarize_audit_task
from tasks.cache import (
    evaluation_key,
    load_cached_task,
    partition_content_hashes_task,
    partition_keys,
    save_results_task,
    store_records_task,
)
from tasks.dataset import discover_dataset_task, files_by_partition, group_files
from tasks.training_data import collect_training_data_task
from tasks.model import (
    ModelInfoTags,
    describe_model_task,
    fit_model_task,
    load_model_task,
    model_features_task,
)
from tasks.scoring import make_scorer, stored_scorer
from tasks.plots import make_figures_task, sample_scores_task
from tasks.reduce import reduce_chunk_task, summarize_records_task
from tasks.report import (
    Evaluation,
    ModelInfo,
    add_audit,
    build_evaluation_log_task,
    publish_prefect_artifacts_task,
    with_partition_label,
)
from tasks.tracking import log_evaluation_task, resolve_tracking_uri, ui_command


def _default_run_name(settings: EvaluateSettings, model: str, scheduled: datetime | None) -> str:
    # scheduled runs are named by their scheduled time, so a nightly series sorts and reads well
    stamp = (scheduled or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M")
    return f"{Path(settings.data).name} · {model} · {stamp}"


def with_dask(settings: EvaluateSettings):
    """The evaluation flow on a Dask cluster (``settings.dask``: an address or 'local')."""
    from prefect_dask import DaskTaskRunner

    if settings.dask == "local":
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": settings.dask_workers, "threads_per_worker": 1, "dashboard_address": None})
    else:
        runner = DaskTaskRunner(address=settings.dask)
    return evaluate_flow.with_options(task_runner=runner)


@flow(name="bce-evaluate", log_prints=True)
def evaluate_flow(settings: EvaluateSettings) -> Evaluation:
    """Evaluate a binary classifier by BCE per partition and overall, and log it to MLflow."""
    logger = get_run_logger()
    tracking_uri = resolve_tracking_uri()
    features = list(settings.features)
    extra: list[str] = []
    model = fitted = None
    info_tags: ModelInfoTags = {}

    # 1. the model (or the stored scores) decides which columns the scan needs
    if settings.score_col:
        extra = [settings.score_col]
        model_info = ModelInfo(f"stored {settings.score_kind} column {settings.score_col!r}")
    elif settings.model_uri:
        info_tags = describe_model_task(settings.model_uri)
        features = features or (model_features_task(settings.model_uri) or [])
        model = load_model_task(settings.model_uri)
        model_info = ModelInfo(f"{type(model).__name__} from {settings.model_uri}", uri=settings.model_uri)

    # 2. select partitions, scan and check (footers only)
    scheduled = flow_run.get_scheduled_start_time()
    dataset = discover_dataset_task(
        settings.data, settings.label, features, settings.partition_by, extra,
        settings.where, settings.date_key, settings.window_days, scheduled,
    )

    # 3. fit when no model was given
    if model is None and not settings.score_col and settings.fit == "streaming":
        model = fitted = fit_logistic_streaming_task(quote(dataset), **settings.model_params)
        model_info = ModelInfo("LogisticRegression fitted on this data (streaming L-BFGS)", params=model.get_params())
    elif model is None and not settings.score_col:
        X, y = collect_training_data_task(quote(dataset))
        model = fitted = fit_model_task(X, y, settings.model_params)
        model_info = ModelInfo("LogisticRegression fitted on this data", params=model.get_params())
    scorer = stored_scorer(settings.score_col, settings.score_kind) if settings.score_col else make_scorer(model, dataset.features)

    # 4. score, check and reduce, a chunk of whole partitions per task; cached partitions are not read
    exact_auc = settings.auc == "exact"
    keys = partition_keys(dataset, scorer, exact_auc) if settings.cache else {}
    hashes = partition_content_hashes_task(quote(dataset), quote(list(keys))) if settings.cache and settings.verify_cache else None
    cached = load_cached_task(quote(keys), quote(hashes)) if settings.cache and not settings.full else {}
    records = [rec for rec, _ in cached.values()]
    hists = [hist for _, hist in cached.values()]
    chunks = group_files(dataset, settings.rows_per_task(holds_rows=exact_auc), skip=set(cached))
    if settings.dask:
        # on a Dask cluster every chunk is a task of its own; each worker reads its own files
        futures = [reduce_chunk_task.submit(dataset, scorer, chunk, exact_auc) for chunk in chunks]
        done = [f.result() for f in futures]
    started, rows_done = time.monotonic(), 0
    for i, chunk in enumerate(chunks, 1):
        rec, hist = done[i - 1] if settings.dask else reduce_chunk_task(quote(dataset), scorer, quote(chunk), exact_auc)
        if settings.cache:
            store_records_task(quote(dataset), quote(keys), rec, hist, quote(hashes))
        records.append(rec)
        hists.append(hist)
        rows_done += sum(f.num_rows for f in chunk)
        if len(chunks) > 1 and time.monotonic() - started > 2:
            logger.info(f"scored {i}/{len(chunks)} chunks, {rows_done:,} rows")
    if cached:
        logger.info(f"reused {len(cached)} cached partition(s); computed {len(keys) - len(cached)}")

    # 5. merge into the per-partition table and the overall row
    table, overall = summarize_records_task(quote(records), quote(hists), list(dataset.partition_by))
    overall.update(partitions_reused=len(cached), partitions_computed=len(files_by_partition(dataset)) - len(cached))
    table = with_partition_label(table, dataset.partition_by)
    baseline = read_baseline_task(settings.gates.baseline_run_id, tracking_uri) if settings.gates.baseline_run_id else None
    verdict = check_gates_task(table, overall, settings.gates, baseline) if settings.gates.active else None
    table = with_verdicts(table, verdict)

    # 5b. the optional audit: one more pass over every partition
    audit = None
    if settings.audit:
        parts = [audit_chunk_task(quote(dataset), scorer, quote(chunk)) for chunk in group_files(dataset, settings.rows_per_task(holds_rows=True))]
        audit = summarize_audit_task(quote([a for a, _, _ in parts]), quote([b for _, b, _ in parts]), quote([t for _, _, t in parts]), list(dataset.partition_by), table)

    # 6. report: plots, the MLflow run, Prefect artifacts
    eval_key = evaluation_key(dataset, scorer, settings.model_dump(mode="json"))
    sample = sample_scores_task(quote(dataset), scorer, settings.sample_rows)
    linear = None
    if scorer.expression is not None and len(dataset.features) == 1:
        linear = (float(model.coef_.ravel()[0]), float(model.intercept_.ravel()[0]))
    figures = make_figures_task(sample, table, overall["bce"], dataset.features, linear, bool(dataset.partition_by))
    run_name = settings.run_name or _default_run_name(settings, type(model).__name__ if model is not None else "stored scores", scheduled)
    log = build_evaluation_log_task(
        dataset=quote(dataset),
        table=table,
        overall=overall,
        model=model_info,
        experiment=settings.experiment,
        run_name=run_name,
        figures=figures,
        sample=sample,
        fitted_model=fitted,
        max_partition_metrics=settings.max_partition_metrics,
        tags={
            **info_tags,
            **(verdict.tags() if verdict else {}),
            "prefect.flow_run_id": str(flow_run.get_id() or ""),
            "prefect.flow_run_name": str(flow_run.get_name() or ""),
            "prefect.deployment_id": str(deployment.id or ""),
            "bce_eval.evaluation_key": eval_key,
        },
        register=(settings.register_name, settings.register_alias) if settings.register_name else None,
    )
    if audit is not None:
        add_audit(log, audit, overall)
    log.results_path = save_results_task(eval_key, table, overall)
    run_id, experiment_id = log_evaluation_task(quote(log), tracking_uri)
    evaluation = Evaluation(table, overall, dataset.partition_by, run_id, experiment_id, tracking_uri, sample)
    publish_prefect_artifacts_task(quote(evaluation), Path(settings.data).name, ui_command(tracking_uri), verdict)
    if verdict is not None and not verdict.passed:
        # after logging: the run is FINISHED and tagged; the flow run ends Failed with the reason
        raise GateFailed(verdict.message, evaluation)
    return evaluation
