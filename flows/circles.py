"""The seed's second experiment as a flow: two circles → MLP trained with BCE → curves in MLflow."""

from dataclasses import dataclass

from prefect import flow, get_run_logger

from flows.settings import CirclesSettings
from flows.steps import (
    check_tracking_access_task,
    create_run_task,
    log_run_content_task,
    make_circles_task,
    plot_learning_curves_task,
    train_mlp_task,
    write_circles_task,
)
from tasks.home import project_home
from tasks.seed.circles import seed_line
from tasks.seed.circles_run import circles_content
from tasks.tracking.adapter import MlflowTracker, resolve_tracking_uri

DATA = project_home() / "data"


@dataclass(frozen=True)
class CirclesOutcome:
    """The trained MLP's run, the seed's "Train: …, Test: …" line, training time and final figures."""

    run_id: str
    line: str
    seconds: float
    final: dict[str, float]
    experiment_id: str = ""


@flow(name="bce-circles")
def circles_flow(settings: CirclesSettings) -> CirclesOutcome:
    """Train the seed's MLP on two circles, logging BCE and accuracy per epoch to MLflow."""
    logger = get_run_logger()
    tracking_uri = resolve_tracking_uri()
    check_tracking_access_task(tracking_uri)
    train, test = make_circles_task()
    train_path, test_path = write_circles_task(train, test, settings.data_dir or DATA / "circles")
    run_name = settings.run_name or f"circles MLP · {settings.epochs} epochs"
    run_id, experiment_id = create_run_task(settings.experiment, run_name, {"bce_eval.kind": "training"}, tracking_uri)
    tracker = MlflowTracker(tracking_uri)
    stream = tracker.metric_stream(run_id)
    try:
        result = train_mlp_task(train, test, settings.epochs, settings.random_state, on_epoch=stream)
        stream.flush()
        figure = plot_learning_curves_task(result.history)
    except BaseException:
        tracker.end_run_failed(run_id)
        raise
    content = circles_content(
        settings.experiment, run_name, result, figure, train_path, test_path, train, test, settings.random_state
    )
    log_run_content_task(run_id, experiment_id, content, tracking_uri)
    line = seed_line(result)
    logger.info(f"{line} (training took {result.seconds:.2f} s)")
    return CirclesOutcome(run_id, line, result.seconds, dict(result.final), experiment_id)
