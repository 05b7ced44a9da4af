"""``bce-eval demo``: the seed article's examples and the partitioned demo dataset, end to end."""

from prefect import flow

from flows.circles import circles_flow
from flows.evaluate import evaluate_flow
from flows.settings import CirclesSettings, EvaluateSettings
from tasks.home import project_home
from tasks.review.summary import format_seed_listing, format_summary
from tasks.tracking.access import ui_command, ui_hint

DATA = project_home() / "data"


@flow(name="bce-demo")
def demo_flow() -> str:
    """Evaluate the seed's 10 points and the demo dataset; return what to print."""
    seed = evaluate_flow(
        EvaluateSettings(
            data=str(DATA / "seed_points.parquet"), label="y", features=["x"], run_name="seed article: 10 points"
        )
    )
    demo = evaluate_flow(
        EvaluateSettings(data=str(DATA / "demo"), label="label", features=["f1", "f2", "f3"], run_name="demo: regions")
    )
    circles = circles_flow(CirclesSettings())
    return "\n\n".join(
        [
            format_seed_listing(seed),
            format_summary(
                demo, "data/demo", 6, ui_command(demo.tracking_uri), EvaluateSettings.model_fields["experiment"].default
            ),
            f"Seed article, MLP on two circles ({circles.seconds:.2f} s of training, 200 epochs):\n"
            f"  {circles.line}   (the article: Train: 0.840, Test: 0.853)\n"
            f"  MLflow run {circles.run_id} in experiment bce-circles: open its metrics to see the curves",
            f"Results are in MLflow at {demo.tracking_uri}; {ui_hint(demo.tracking_uri)}",
        ]
    )
