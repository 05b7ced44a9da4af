"""Champion vs challenger: both models scored on the same rows, the paired BCE difference logged."""

from dataclasses import dataclass, field
from typing import Any

import polars as pl
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.utilities.annotations import quote

from flows.listing import listing_in_background
from flows.settings import CompareSettings
from flows.steps import (
    check_dataset_task,
    check_model_output_task,
    check_tracking_access_task,
    describe_model_task,
    load_model_task,
    log_evaluation_task,
    move_alias_task,
    reduce_paired_chunk_task,
    summarize_comparison_task,
)
from tasks.data.dataset import Dataset, group_files
from tasks.data.slicing import finest_cross
from tasks.judge.paired import check_regression, should_promote, summarize_paired_slices
from tasks.models.loading import LoadedModel
from tasks.models.scoring import Scorer
from tasks.review.comparison_content import comparison_content
from tasks.review.results import model_label, with_partition_label
from tasks.tracking.adapter import resolve_tracking_uri


@dataclass(frozen=True)
class Comparison:
    """The outcome of a comparison: the paired table and overall row, its run, the promotion, the gate."""

    run_id: str
    experiment_id: str
    overall: dict[str, Any]
    table: pl.DataFrame
    promoted: bool
    reason: str
    #: partitions (or "overall") where the challenger is surely worse by more than --max-regression
    regressions: tuple[str, ...] = ()
    gate_message: str = ""
    slices: dict[str, pl.DataFrame] = field(default_factory=dict)  # each slicing's paired table, by its key

    @property
    def gate_passed(self) -> bool:
        return not self.regressions


@dataclass(frozen=True)
class Pair:
    """Both models on the same checked data: each loaded model, its scorer and its description for the run."""

    dataset: Dataset
    champion: LoadedModel
    challenger: LoadedModel
    champion_scorer: Scorer
    challenger_scorer: Scorer
    champion_info: dict[str, str]
    challenger_info: dict[str, str]


@dataclass(frozen=True)
class PairedTable:
    """The paired BCE difference per partition (labelled) and overall."""

    table: pl.DataFrame
    overall: dict[str, Any]
    slices: dict[str, pl.DataFrame] = field(default_factory=dict)  # each slicing's paired table, by its key


@dataclass(frozen=True)
class PairVerdict:
    """The gate's regressions, whether the challenger is promoted and why, and the gate's failure message."""

    regressions: tuple[str, ...]
    promote: bool
    reason: str
    message: str


@flow(name="bce-compare")
def compare_flow(settings: CompareSettings) -> Comparison:
    """Score both models on the same data; report and log the paired BCE difference per partition."""
    logger = get_run_logger()
    tracking_uri = resolve_tracking_uri()
    check_tracking_access_task(tracking_uri)
    pair = resolve_pair(settings, tracking_uri)
    paired = reduce_pairs(settings, pair)
    verdict = judge_pair(settings, paired)
    result = log_comparison(settings, pair, paired, verdict, tracking_uri)
    if not result.gate_passed:
        return Failed(message=result.gate_message, data=result)  # after logging: the run is FINISHED and tagged
    overall = result.overall
    logger.info(
        f"BCE difference (challenger − champion) {overall['bce_diff']:+.5f}, 95% CI [{overall['bce_diff_low']:+.5f}, "
        f"{overall['bce_diff_high']:+.5f}]"
    )
    return result


def resolve_pair(settings: CompareSettings, tracking_uri: str) -> Pair:
    """Stage 1: describe and load both models, select and check the data, make and check both scorers."""
    # the listing needs no model: read on a thread of its own while both models load (as in evaluate)
    with listing_in_background({"data": settings.data}) as listing:
        champion_info = describe_model_task(settings.champion, tracking_uri)
        challenger_info = describe_model_task(settings.challenger, tracking_uri)
        champion = load_model_task(settings.champion, tracking_uri)
        challenger = load_model_task(settings.challenger, tracking_uri)
        # each model is scored on its own columns (its signature's, unless --features); the scan reads both
        features = {m.uri: m.features(settings.features) for m in (champion, challenger)}
        types = {
            **(challenger.inputs.by_name() if challenger.inputs else {}),
            **(champion.inputs.by_name() if champion.inputs else {}),
        }
        dataset = check_dataset_task(
            quote(listing.result()),
            settings.label,
            list(dict.fromkeys(features[champion.uri] + features[challenger.uri])),
            settings.partition_by,
            model_types=types or None,
            model_name=f"{settings.champion} or {settings.challenger}",
            cells=finest_cross(settings.slicings),
            weight=settings.weight_col,
        )
    champion_scorer = champion.scorer(features[champion.uri], dataset.text_features)
    challenger_scorer = challenger.scorer(features[challenger.uri], dataset.text_features)
    for loaded in (champion, challenger):
        check_model_output_task(loaded, quote(dataset))
    return Pair(
        dataset,
        champion,
        challenger,
        champion_scorer,
        challenger_scorer,
        {**champion_info, **champion.tags(champion_scorer)},
        {**challenger_info, **challenger.tags(challenger_scorer)},
    )


def reduce_pairs(settings: CompareSettings, pair: Pair) -> PairedTable:
    """Stage 2: score both models on each chunk of whole partitions and merge the paired records."""
    dataset = pair.dataset
    records = [
        reduce_paired_chunk_task(quote(dataset), pair.champion_scorer, pair.challenger_scorer, quote(chunk))
        for chunk in group_files(dataset, settings.chunk_rows)
    ]
    table, overall = summarize_comparison_task(quote(records), list(dataset.partition_by), settings.min_rows)
    slices = summarize_paired_slices(records, settings.slicings, settings.min_rows) if settings.slices else {}
    return PairedTable(with_partition_label(table, dataset.partition_by), overall, slices)


def judge_pair(settings: CompareSettings, paired: PairedTable) -> PairVerdict:
    """Stage 3: the regression gate (with --max-regression), then promotion (with --promote) unless it regressed."""
    regressions = (
        check_regression(paired.table, paired.overall, settings.max_regression)
        if settings.max_regression is not None
        else []
    )
    promote, reason = (
        should_promote(paired.overall, settings.margin)
        if settings.promote and not regressions
        else (False, "promotion not requested" if not regressions else "the challenger regressed")
    )
    message = ""
    if regressions:
        message = (
            f"quality gate failed: the challenger's BCE is higher by more than {settings.max_regression} (paired 95% "
            "interval) in: " + ", ".join(regressions[:20])
        )
    return PairVerdict(tuple(regressions), promote, reason, message)


def log_comparison(
    settings: CompareSettings, pair: Pair, paired: PairedTable, verdict: PairVerdict, tracking_uri: str
) -> Comparison:
    """Stage 4: the MLflow run (tagged with the gate's outcome), then the alias moved when promoted."""
    content = comparison_content(
        pair.dataset,
        paired.table,
        paired.overall,
        settings.experiment,
        settings.run_name,
        pair.champion_info,
        pair.challenger_info,
        verdict.reason,
        str(flow_run.get_id() or ""),
        (
            model_label(pair.champion_info, pair.champion.type_name),
            model_label(pair.challenger_info, pair.challenger.type_name),
        ),
        paired.slices,
    )
    content.tags["quality_gate"] = (
        "failed" if verdict.regressions else ("passed" if settings.max_regression is not None else "not set")
    )
    run_id, experiment_id = log_evaluation_task(quote(content), tracking_uri)
    if verdict.promote:
        name, version = move_alias_task(settings.challenger, settings.champion, settings.alias, run_id, tracking_uri)
        get_run_logger().info(f"moved alias {settings.alias!r} of {name} to version {version}: {verdict.reason}")
    return Comparison(
        run_id,
        experiment_id,
        paired.overall,
        paired.table,
        verdict.promote,
        verdict.reason,
        verdict.regressions,
        verdict.message,
        paired.slices,
    )
