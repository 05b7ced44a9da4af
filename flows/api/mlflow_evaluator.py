"""bce-eval as an MLflow evaluator: ``mlflow.models.evaluate(..., evaluators=["bce-eval"])``.

Registered under the ``mlflow.model_evaluator`` entry point (``pyproject.toml``). It evaluates
``model_type="classifier"`` with :func:`flows.api.evaluate` on the rows MLflow hands it, logs into
the run MLflow opened (the figures as metrics, each slicing's table, the plots and ``report.html``)
and returns MLflow's ``EvaluationResult``.

``evaluator_config={"bce-eval": {...}}`` takes ``slices`` (``--slice`` specs), ``weights`` (a column
of the data) or ``sample_weights`` (an array, as MLflow's default evaluator takes it),
``partition_by``, ``gates`` (``--gate`` specs), ``fdr``, ``min_rows`` and ``metric_prefix`` (default
``"bce_eval/"``: the default evaluator's ``roc_auc`` is exact, bce-eval's here is binned, and the
two must not overwrite each other).

BCE here is exact from the logit (XGBoost's margin, LightGBM's raw score, a linear model's
decision function). MLflow's default ``log_loss`` is scikit-learn's on ``predict_proba``, clipped to
[ε, 1 − ε]: where a probability rounds to 0 or 1 the two differ. ``log_loss_clipped`` (scikit-learn's
rule, on the same scores) and ``n_rows_clipped`` (rows where the clipping changes the loss) say where.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from mlflow.models.evaluation import EvaluationResult, ModelEvaluator

from flows.api.evaluation import evaluate
from tasks.errors import InputError

#: the evaluator's name in ``evaluators=[...]`` and ``evaluator_config``
NAME = "bce-eval"
#: the column that holds MLflow's ``sample_weights`` array once the rows are a frame
WEIGHT_COLUMN = "__sample_weight"
_CONFIG = {"slices", "weights", "sample_weights", "partition_by", "gates", "fdr", "min_rows", "metric_prefix"}


class BceEvaluator(ModelEvaluator):
    """BCE overall and per slice, exact, with intervals, gates and the report, logged into MLflow's run."""

    @classmethod
    def can_evaluate(cls, *, model_type: str, evaluator_config: dict[str, Any], **kwargs: Any) -> bool:
        return model_type == "classifier"

    def evaluate(
        self,
        *,
        model_type: str,
        dataset: Any,
        run_id: str,
        evaluator_config: dict[str, Any],
        model: Any = None,
        extra_metrics: Any = None,
        custom_artifacts: Any = None,
        predictions: Any = None,
        **kwargs: Any,
    ) -> EvaluationResult:
        import mlflow

        config = _checked_config(evaluator_config)
        frame, label, scored_by = _rows(dataset, model, config)
        weights = WEIGHT_COLUMN if config.get("sample_weights") is not None else config.get("weights")
        result = evaluate(
            frame,
            label=label,
            model=scored_by,
            features=_features(scored_by, dataset) if model is not None else [],
            partition_by=list(config.get("partition_by", [])),
            slices=list(config.get("slices", [])),
            weights=weights,
            gates=list(config.get("gates", [])),
            fdr=float(config.get("fdr", 0.05)),
            min_rows=int(config.get("min_rows", 1)),
            name=str(getattr(dataset, "name", None) or "dataset"),
        )
        prefix = str(config.get("metric_prefix", "bce_eval/"))
        clipping = _clipping(result, frame, label, weights)
        content = result.content()
        content.metrics.update(clipping)
        from tasks.tracking.operations import log_into_run

        log_into_run(run_id, content, mlflow.get_tracking_uri(), prefix)
        metrics = {prefix + k: v for k, v in {**content.metrics, **content.partition_metrics}.items()}
        return EvaluationResult(metrics=metrics, artifacts=_artifacts(run_id, content), run_id=run_id)


def _checked_config(config: dict[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    unknown = sorted(set(config) - _CONFIG)
    if unknown:
        raise InputError(f"evaluator_config['{NAME}']: unknown key(s) {unknown}; bce-eval takes {sorted(_CONFIG)}.")
    for key in ("slices", "gates", "partition_by"):
        if isinstance(config.get(key), str):
            config[key] = [config[key]]
    return config


def _rows(dataset: Any, model: Any, config: dict[str, Any]) -> tuple[pl.DataFrame, str, Any]:
    """MLflow's rows as one Polars frame (features, label, stored predictions, weights), the label's name, and what
    scores them: the model (the raw estimator or booster inside MLflow's pyfunc where there is one), or the column of
    predictions."""
    label = dataset.targets_name or "label"
    features = dataset.features_data
    frame = pl.from_pandas(features) if hasattr(features, "columns") else pl.from_numpy(np.asarray(features))
    frame = frame.with_columns(pl.Series(label, np.asarray(dataset.labels_data)))
    if config.get("sample_weights") is not None:
        frame = frame.with_columns(pl.Series(WEIGHT_COLUMN, np.asarray(config["sample_weights"], dtype=np.float64)))
    if model is None:  # static mode: predictions="column"
        if not dataset.has_predictions:
            raise InputError("mlflow.models.evaluate: pass a model, or predictions= naming the column of P(y=1).")
        name = dataset.predictions_name or "prediction"
        return frame.with_columns(pl.Series(name, np.asarray(dataset.predictions_data))), label, name
    try:
        return frame, label, model.get_raw_model()
    except (NotImplementedError, AttributeError):
        return frame, label, model  # any other pyfunc: its predict must return P(y=1)


def _features(model: Any, dataset: Any) -> list[str]:
    """The model's own input names (its signature, or the estimator's), else every column MLflow calls a feature:
    the data may hold slice or weight columns beside them."""
    from tasks.models.in_memory import object_features

    return object_features(model) or list(dataset.feature_names)


def _clipping(result: Any, frame: pl.DataFrame, label: str, weights: str | None) -> dict[str, float]:
    """Where scikit-learn's clipping (MLflow's default ``log_loss``) changes the loss: its value on the same scores,
    and how many rows have a probability within ε of 0 or 1 (there the clipped loss is not the exact one)."""
    from tasks.metrics.loss import PROBA_EPS, row_losses_from_probabilities, sigmoid

    scorer = result.parts.scorer
    y = frame.get_column(label).cast(pl.Float64).to_numpy()
    s = scorer.score_frame(frame)
    p = sigmoid(s) if scorer.kind == "logit" else s
    w = frame.get_column(weights).cast(pl.Float64).to_numpy() if weights else np.ones_like(y)
    return {
        "log_loss_clipped": float(np.sum(w * row_losses_from_probabilities(y, p)) / np.sum(w)),
        "n_rows_clipped": float(np.count_nonzero((p < PROBA_EPS) | (p > 1 - PROBA_EPS))),
    }


def _artifacts(run_id: str, content: Any) -> dict[str, Any]:
    """The report and each table as MLflow's evaluation artifacts, at the paths they were logged to."""
    from mlflow.models.evaluation.artifacts import JsonEvaluationArtifact, TextEvaluationArtifact
    from mlflow.tracking.artifact_utils import get_artifact_uri

    out: dict[str, Any] = {
        "bce_eval_report": TextEvaluationArtifact(
            uri=get_artifact_uri(run_id, "report.html"), content=content.text_artifacts["report.html"]
        )
    }
    for path, table in content.tables.items():
        name = "bce_eval_" + path.removesuffix(".json").replace("/", "_")
        out[name] = JsonEvaluationArtifact(uri=get_artifact_uri(run_id, path), content=table)
    return out
