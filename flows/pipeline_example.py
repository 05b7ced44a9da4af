"""A team's own nightly pipeline with bce-eval's evaluation as a subflow: ``python -m flows.pipeline_example``.

The evaluation flow is an ordinary Prefect flow with one typed parameter (:class:`flows.settings.EvaluateSettings`,
which holds every rule about its fields): a parent ``@flow`` calls it as it calls its own, and Prefect records the
evaluation as a child flow run of the parent, with its artifacts. A failed gate makes the child's state Failed,
with the whole :class:`tasks.review.results.Evaluation` as its data; ``return_state=True`` lets the parent decide.

(No ``from __future__ import annotations``: Prefect reads the parameters' types.)
"""

import sys

from prefect import flow, get_run_logger

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tasks.judge.gates import GateSettings
from tasks.review.results import Evaluation


@flow(name="nightly-pipeline")
def nightly_pipeline(data: str = "data/demo", max_bce: float = 0.9) -> Evaluation:
    """Score and evaluate the night's data (here: fit and evaluate data/demo), then decide on the gate's verdict."""
    settings = EvaluateSettings(
        data=data,
        label="label",
        features=["f1", "f2", "f3"],
        slices=["f1:-1,0,1"],
        gates=GateSettings(max_bce=max_bce),
    )
    state = evaluate_flow(settings, return_state=True)  # a child flow run of this one
    evaluation = state.result(raise_on_failure=False)
    if isinstance(evaluation, BaseException):  # bad input, an unreachable store: not a verdict
        raise evaluation
    if state.is_failed():
        get_run_logger().warning(f"not promoting tonight: {state.message}")
    else:
        get_run_logger().info(f"BCE {evaluation.overall['bce']:.4f}: the gate passed (MLflow run {evaluation.run_id})")
    return evaluation


if __name__ == "__main__":
    result = nightly_pipeline()
    print(f"nightly pipeline: BCE {result.overall['bce']:.4f}, gate {'passed' if result.gate_passed else 'failed'}")
    sys.exit(0 if result.gate_passed else 3)
