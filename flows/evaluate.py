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
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import deployment, flow_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from flows.listing import listing_in_background
from flows.publish import publish
from flows.settings import EvaluateSettings
from flows.stages import Judged, Reduced, Scoring
from flows.steps import (
    audit_chunk_task,
    check_cache_dir_task,
    check_dataset_task,
    check_gates_task,
    check_model_output_task,
    check_tracking_access_task,
    collect_training_data_task,
    describe_model_task,
    fit_logistic_streaming_task,
    fit_model_task,
    judge_slices_task,
    load_cached_task,
    load_model_task,
    partition_content_hashes_task,
    read_run_table_task,
    reduce_chunk_task,
    search_runs_task,
    store_records_task,
    summarize_audit_slices_task,
    summarize_audit_task,
    summarize_cells_task,
    summarize_records_task,
)
from tasks.data.dataset import Dataset, files_by_partition, group_files
from tasks.data.slicing import finest_cross
from tasks.data.storage import data_location
from tasks.judge.drift import (
    DEFAULT_BAND,
    HISTORY_RUNS,
    SERIES_TAG,
    Series,
    current_points,
    drift_band,
    estimate_errors,
    history_frame,
    latest_run,
    model_lineage,
    series_key,
)
from tasks.judge.gates import with_verdicts
from tasks.judge.slice_gates import with_slice_failures
from tasks.metrics.bad_input import check_unlabelled
from tasks.metrics.cache import partition_keys
from tasks.models.loading import LoadedModel
from tasks.models.scoring import make_scorer, stored_scorer
from tasks.review.results import (
    Evaluation,
    ModelInfo,
    baseline_from,
    model_label,
    with_partition_label,
)
from tasks.tracking.adapter import resolve_tracking_uri

#: the progress line's words when the pass starts (tests wait for it, or check that a refusal came before it)
PASS_STARTED = "chunk(s) of whole partitions"


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
    from flows.steps import dask_task_runner

    if settings.dask == "local":
        runner = dask_task_runner(
            cluster_kwargs={"n_workers": settings.dask_workers, "threads_per_worker": 1, "dashboard_address": None}
        )
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
    with listing_in_background(
        {
            "data": settings.data,
            "where": settings.where,
            "date_key": settings.date_key,
            "window_days": settings.window_days,
            "reference": scheduled,
        }
    ) as listing:
        tags, loaded = _load_model(settings, tracking_uri)
        features = loaded.features(list(settings.features)) if loaded is not None else list(settings.features)
        extra = [settings.score_col] if settings.score_col else []
        dataset = check_dataset_task(
            quote(listing.result()),
            settings.label,
            features,
            settings.partition_by,
            extra,
            loaded.inputs.by_name() if loaded and loaded.inputs else None,
            settings.model_uri or "",
            finest_cross(settings.slicings),
            settings.weight_col,
        )
    logger.info(f"found {len(dataset.files):,} file(s), {dataset.num_rows:,} rows")
    if settings.score_col:
        info = ModelInfo(f"stored {settings.score_kind} column {settings.score_col!r}")
        lineage = model_lineage(tags, score_col=settings.score_col, score_kind=settings.score_kind)
        return Scoring(
            dataset,
            stored_scorer(settings.score_col, settings.score_kind),
            info,
            tags,
            lineage,
            f"stored {settings.score_col}",
        )
    if loaded is not None:
        return _loaded_scoring(settings, dataset, loaded, tags)
    get_run_logger().info(f"fitting LogisticRegression on {dataset.num_rows:,} rows of {len(dataset.files)} file(s)")
    fitted = _fit(settings, dataset)
    how = " (streaming L-BFGS)" if settings.fit == "streaming" else ""
    info = ModelInfo(f"LogisticRegression fitted on this data{how}", params=fitted.get_params())
    # the fit's configuration: its features, the estimator's parameters and how it was fitted
    lineage = model_lineage(tags, features=dataset.features, params={**info.params, "fit": settings.fit})
    return Scoring(
        dataset, make_scorer(fitted, dataset.features), info, tags, lineage, "LogisticRegression", fitted, fitted
    )


def _load_model(settings: EvaluateSettings, tracking_uri: str) -> tuple[dict[str, str], LoadedModel | None]:
    """The model of --model-uri and its registry tags; no tags and no model without one."""
    if not settings.model_uri:
        return {}, None
    get_run_logger().info(f"loading the model {settings.model_uri} from MLflow")
    tags = describe_model_task(settings.model_uri, tracking_uri)
    return tags, load_model_task(settings.model_uri, tracking_uri, settings.score_kind)


def _loaded_scoring(settings: EvaluateSettings, dataset: Dataset, loaded: LoadedModel, tags: dict[str, str]) -> Scoring:
    """The loaded model's scorer, its output checked on the data, and its description (registry name and version)."""
    scorer = loaded.scorer(dataset.features, dataset.text_features)
    check_model_output_task(loaded, quote(dataset))
    tags = {**tags, **loaded.tags(scorer)}
    label = model_label(tags, loaded.type_name)
    what = f"{label} ({loaded.flavor.name} {loaded.type_name})" if tags.get("model_version") else label
    info = ModelInfo(
        f"{what} from {settings.model_uri}",
        uri=settings.model_uri,
        registered_name=tags.get("model_name"),
        registered_version=tags.get("model_version"),
    )
    return Scoring(dataset, scorer, info, tags, model_lineage(tags), label, loaded.model)


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
    hashes = (
        partition_content_hashes_task(quote(dataset), quote(list(keys)))
        if settings.cache and settings.verify_cache
        else None
    )
    need = tuple(c.name for c in dataset.cells)
    cached = load_cached_task(quote(keys), quote(hashes), need) if settings.cache and not settings.full else {}
    chunks = group_files(dataset, settings.rows_per_task(holds_rows=exact_auc), skip=set(cached))
    if chunks:
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
    counts = {"partitions_reused": len(cached), "partitions_computed": computed}
    if dataset.per_cell:  # per-cell records: the partitions and every slicing rolled up from them
        table, overall, slices = summarize_cells_task(
            quote(records),
            quote(hists),
            list(dataset.partition_by),
            settings.slicings,
            settings.decisions,
        )
        check_unlabelled(dataset, table, settings.late_labels)
        return Reduced(with_partition_label(table, dataset.partition_by), {**overall, **counts}, slices)
    table, overall = summarize_records_task(
        quote(records), quote(hists), list(dataset.partition_by), settings.decisions
    )
    check_unlabelled(dataset, table, settings.late_labels)  # a null label among labelled rows: said, unless declared
    return Reduced(with_partition_label(table, dataset.partition_by), {**overall, **counts})


def judge(settings: EvaluateSettings, scoring: Scoring, reduced: Reduced, tracking_uri: str) -> Judged:
    """Stage 3: the series' bands, the quality gates (against a baseline run when asked), the optional audit pass."""
    gates = settings.gates
    key = series_key(data_location(settings.data), settings.label, deployment.id, scoring.lineage)
    figure = gates.drift_figure  # what the series follows: BCE, or NE (a base-rate shift barely moves it)
    runs = search_runs_task(tracking_uri, settings.experiment, SERIES_TAG, key, HISTORY_RUNS)
    history = history_frame(runs, figure)
    run = latest_run(history, settings.experiment) if gates.baseline_run_id == "latest" else gates.baseline_run_id
    baseline = (
        baseline_from(run, *read_run_table_task(tracking_uri, run, "bce_by_partition.json", "--baseline-run"))
        if run
        else None
    )
    current = current_points(reduced.table, reduced.overall, scoring.dataset.partition_by, figure)
    k = gates.drift_k or DEFAULT_BAND
    band = drift_band(history, current, k, figure)
    # partitions estimated last time whose labels have come: how far off the estimate was
    checked = estimate_errors(runs, reduced.table, scoring.dataset.partition_by)
    series = Series(key, history, band, k, gates.drift_k is not None, figure, checked)
    verdict = check_gates_task(reduced.table, reduced.overall, gates, baseline, series.band) if gates.active else None
    slices = judge_slices_task(reduced.slices, reduced.overall, gates) if reduced.slices else None
    verdict = with_slice_failures(verdict, slices)
    table = with_verdicts(reduced.table, verdict)
    if not settings.audit:
        return Judged(table, verdict, None, series, slices)
    dataset, logger = scoring.dataset, get_run_logger()
    chunks = group_files(dataset, settings.rows_per_task(holds_rows=True))
    logger.info(
        f"auditing {dataset.num_rows:,} rows in {len(chunks)} chunk(s): a second pass that sorts each partition's "
        "losses"
    )
    parts = []
    for i, chunk in enumerate(chunks, 1):
        parts.append(audit_chunk_task(quote(dataset), scoring.scorer, quote(chunk)))
        if len(chunks) > 1:
            logger.info(f"audited {i}/{len(chunks)} chunks")
    sums, bins, tops = (quote([p[i] for p in parts]) for i in range(3))
    audit = summarize_audit_task(sums, bins, tops, list(dataset.partition_by), table)
    if slices is not None:  # each slicing's audit, rolled up from the cells' audit sums
        slices.audits.update(summarize_audit_slices_task(sums, bins, settings.slicings, reduced.slices))
    return Judged(table, verdict, audit, series, slices)
