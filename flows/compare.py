"""Champion vs challenger: both models scored on the same rows, the paired BCE difference logged."""

from dataclasses import dataclass
from typing import Any

import polars as pl
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.utilities.annotations import quote

from flows.background import listing_in_background
from flows.settings import CompareSettings
from tasks.compare import check_regression, reduce_paired_chunk_task, should_promote, summarize_comparison_task
from tasks.dataset import check_dataset_task, group_files
from tasks.model import check_model_output_task, load_model_task
from tasks.results import model_label, with_partition_label
from tasks.run_content import comparison_content
from tasks.tracking import check_tracking_access_task, describe_model_task, log_evaluation_task, move_alias_task, resolve_tracking_uri


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

    @property
    def gate_passed(self) -> bool:
        return not self.regressions


@flow(name="bce-compare")
def compare_flow(settings: CompareSettings) -> Comparison:
    """Score both models on the same data; report and log the paired BCE difference per partition."""
    logger = get_run_logger()
    tracking_uri = resolve_tracking_uri()
    check_tracking_access_task(tracking_uri)
    # the listing needs no model: read on a thread of its own while both models load (as in evaluate)
    with listing_in_background({"data": settings.data}) as listing:
        champion_info = describe_model_task(settings.champion, tracking_uri)
        challenger_info = describe_model_task(settings.challenger, tracking_uri)
        champion = load_model_task(settings.champion, tracking_uri)
        challenger = load_model_task(settings.challenger, tracking_uri)
        # each model is scored on its own columns (its signature's, unless --features); the scan reads both
        features = {m.uri: m.features(settings.features) for m in (champion, challenger)}
        types = {**(challenger.inputs.by_name() if challenger.inputs else {}), **(champion.inputs.by_name() if champion.inputs else {})}
        dataset = check_dataset_task(
            quote(listing.result()), settings.label, list(dict.fromkeys(features[champion.uri] + features[challenger.uri])),
            settings.partition_by, model_types=types or None, model_name=f"{settings.champion} or {settings.challenger}",
        )
    champion_scorer = champion.scorer(features[champion.uri], dataset.text_features)
    challenger_scorer = challenger.scorer(features[challenger.uri], dataset.text_features)
    for loaded in (champion, challenger):
        check_model_output_task(loaded, quote(dataset))
    champion_info = {**champion_info, **champion.tags(champion_scorer)}
    challenger_info = {**challenger_info, **challenger.tags(challenger_scorer)}

    records = [
        reduce_paired_chunk_task(quote(dataset), champion_scorer, challenger_scorer, quote(chunk))
        for chunk in group_files(dataset, settings.chunk_rows)
    ]
    table, overall = summarize_comparison_task(quote(records), list(dataset.partition_by), settings.min_rows)
    table = with_partition_label(table, dataset.partition_by)

    regressions = check_regression(table, overall, settings.max_regression) if settings.max_regression is not None else []
    promote, reason = should_promote(overall, settings.margin) if settings.promote and not regressions else (False, "promotion not requested" if not regressions else "the challenger regressed")
    content = comparison_content(
        dataset, table, overall, settings.experiment, settings.run_name, champion_info, challenger_info, reason,
        str(flow_run.get_id() or ""), (model_label(champion_info, champion.type_name), model_label(challenger_info, challenger.type_name)),
    )
    content.tags["quality_gate"] = "failed" if regressions else ("passed" if settings.max_regression is not None else "not set")
    run_id, experiment_id = log_evaluation_task(quote(content), tracking_uri)
    if promote:
        name, version = move_alias_task(settings.challenger, settings.champion, settings.alias, run_id, tracking_uri)
        logger.info(f"moved alias {settings.alias!r} of {name} to version {version}: {reason}")
    message = ""
    if regressions:
        message = (
            f"quality gate failed: the challenger's BCE is higher by more than {settings.max_regression} (paired 95% interval) in: "
            + ", ".join(regressions[:20])
        )
    result = Comparison(run_id, experiment_id, overall, table, promote, reason, tuple(regressions), message)
    if regressions:
        return Failed(message=message, data=result)  # after logging: the run is FINISHED and tagged
    logger.info(f"BCE difference (challenger − champion) {overall['bce_diff']:+.5f}, 95% CI [{overall['bce_diff_low']:+.5f}, {overall['bce_diff_high']:+.5f}]")
    return result
