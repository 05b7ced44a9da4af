"""The flows' steps: each plain function of :mod:`tasks` as a Prefect task, with its name and retries.

The one place that makes Prefect tasks. Everything under ``tasks/`` is plain computation that knows
nothing of Prefect; a flow calls these tasks (or submits them to its task runner) and wires their
results. Retries are declared here, on the steps that talk to a server, and taken only for a
transient failure; bad input is never retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flows.preloaded import load_model_preloaded_first
from tasks.data.dataset import check_dataset, read_dataset_files
from tasks.data.training_data import collect_training_data
from tasks.errors import Stopped, is_transient
from tasks.extras import require_extra
from tasks.judge.audit import audit_chunk, summarize_audit, summarize_audit_slices
from tasks.judge.gates import check_gates
from tasks.judge.paired import reduce_paired_chunk, summarize_comparison
from tasks.judge.slice_gates import judge_slices
from tasks.metrics.cache import (
    check_cache_dir,
    load_cached,
    partition_content_hashes,
    save_results,
    store_records,
)
from tasks.metrics.reduce import reduce_chunk, summarize_records
from tasks.metrics.rollup import summarize_cells
from tasks.models.fit_streaming import fit_logistic_streaming
from tasks.models.fitting import fit_model
from tasks.models.loading import check_model_output
from tasks.review.plots import make_figures
from tasks.review.run_content import build_evaluation_log
from tasks.review.sample import sample_scores
from tasks.seed.circles import (
    make_circles_data,
    plot_learning_curves,
    train_mlp,
    write_circles_data,
)
from tasks.tracking.access import check_tracking_access
from tasks.tracking.history import read_run_table, search_runs
from tasks.tracking.operations import (
    create_run,
    describe_model,
    log_evaluation,
    log_run_content,
    move_alias,
)


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - classified, not swallowed: the state stays failed
        return is_transient(exc)
    return False


class Carried:
    """A task argument that reaches a Dask worker process as it is.

    ``quote(x)`` keeps Prefect from walking a large argument, but it is a tuple subclass and Dask
    sends tuples to another process as plain tuples: the task there got ``(x,)``. The Dask runner
    (:func:`dask_task_runner`) sends quoted arguments as ``Carried`` (which Prefect does not walk
    either), and every task made by :func:`as_task` unwraps it.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Carried, (self.value,))


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Carried) else value


def as_task(fn: Callable[..., Any], *, name: str, retries: int = 0, **kwargs: Any) -> Any:
    """A thin ``@task`` around ``fn``: no input hashing (inputs are large frames and models); with
    ``retries``, retried only on a transient failure (:func:`tasks.errors.is_transient`)."""
    return _make_task(fn, name, retries, kwargs)


def _make_task(fn: Callable[..., Any], name: str, retries: int, kwargs: dict[str, Any]) -> Any:
    import functools

    from prefect import task
    from prefect.cache_policies import NO_CACHE

    @functools.wraps(fn)
    def call(*args: Any, **kw: Any) -> Any:
        try:
            return fn(*map(_unwrap, args), **{k: _unwrap(v) for k, v in kw.items()})
        except Stopped as exc:
            # work the flow no longer needs (only the submitted listing gets a stop): Cancelled says
            # so in the UI, where Failed would read as a second error beside the one that ended the flow
            from prefect.states import Cancelled

            return Cancelled(message=str(exc))

    kwargs = dict(kwargs)
    if retries:
        kwargs.setdefault("retry_delay_seconds", [2, 5, 15][:retries] + [15] * max(0, retries - 3))
        kwargs["retry_condition_fn"] = _retry_if_transient
    return task(call, name=name, retries=retries, cache_policy=NO_CACHE, persist_result=False, **kwargs)


def dask_task_runner(**kwargs: Any) -> Any:
    """Prefect's ``DaskTaskRunner`` (same arguments), sending ``quote()``d arguments as :class:`Carried`."""
    from prefect.utilities.annotations import quote

    require_extra("dask", "--dask")
    from prefect_dask import DaskTaskRunner

    class CarryingDaskTaskRunner(DaskTaskRunner):
        def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
            carried = {k: Carried(v.unwrap()) if isinstance(v, quote) else v for k, v in parameters.items()}
            return super().submit(task, carried, wait_for, dependencies)

    return CarryingDaskTaskRunner(**kwargs)


# --- the steps, by concern ---------------------------------------------------------------------

# data: the listing needs no model (the flows run it beside the model's loading), then the checks
list_files_task = as_task(read_dataset_files, name="list-files")
check_dataset_task = as_task(check_dataset, name="check-dataset")
collect_training_data_task = as_task(collect_training_data, name="collect-training-data")
# models
fit_model_task = as_task(fit_model, name="fit-model")
fit_logistic_streaming_task = as_task(fit_logistic_streaming, name="fit-model-streaming")
load_model_task = as_task(load_model_preloaded_first, name="load-model", retries=3)
check_model_output_task = as_task(check_model_output, name="check-model-output")
# metrics: the pass, the exact merge, the cache
check_cache_dir_task = as_task(check_cache_dir, name="check-cache-folder")
load_cached_task = as_task(load_cached, name="load-cached-partitions")
partition_content_hashes_task = as_task(partition_content_hashes, name="hash-partition-bytes")
reduce_chunk_task = as_task(reduce_chunk, name="reduce-chunk")
store_records_task = as_task(store_records, name="cache-partitions")
summarize_records_task = as_task(summarize_records, name="merge-records")
summarize_cells_task = as_task(summarize_cells, name="roll-up-slices")
judge_slices_task = as_task(judge_slices, name="judge-slices")
summarize_audit_slices_task = as_task(summarize_audit_slices, name="audit-slices")
save_results_task = as_task(save_results, name="save-results-locally")
# judge
check_gates_task = as_task(check_gates, name="check-gates")
audit_chunk_task = as_task(audit_chunk, name="audit-chunk")
summarize_audit_task = as_task(summarize_audit, name="merge-audit")
reduce_paired_chunk_task = as_task(reduce_paired_chunk, name="reduce-paired-chunk")
summarize_comparison_task = as_task(summarize_comparison, name="merge-paired-records")
# review
sample_scores_task = as_task(sample_scores, name="sample-rows")
make_figures_task = as_task(make_figures, name="make-plots")
build_evaluation_log_task = as_task(build_evaluation_log, name="assemble-run")
# tracking: every step that talks to the server retries a transient failure
check_tracking_access_task = as_task(check_tracking_access, name="check-tracking-access")
describe_model_task = as_task(describe_model, name="describe-model", retries=3)
search_runs_task = as_task(search_runs, name="read-series")
read_run_table_task = as_task(read_run_table, name="read-baseline", retries=3)
create_run_task = as_task(create_run, name="create-mlflow-run", retries=3)
log_run_content_task = as_task(log_run_content, name="log-to-mlflow", retries=3)
log_evaluation_task = as_task(log_evaluation, name="log-to-mlflow", retries=3)
move_alias_task = as_task(move_alias, name="move-alias", retries=3)
# the seed's circles
make_circles_task = as_task(make_circles_data, name="make-circles")
write_circles_task = as_task(write_circles_data, name="write-circles-parquet")
train_mlp_task = as_task(train_mlp, name="train-mlp")
plot_learning_curves_task = as_task(plot_learning_curves, name="plot-learning-curves")
