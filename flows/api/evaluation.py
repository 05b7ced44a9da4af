"""``evaluate``: the evaluation as one call from a notebook or a script, with no Prefect server.

The same steps as the flow (:mod:`flows.evaluate`), as plain calls of :mod:`tasks`: the same settings
and their rules, the same scan, pass, roll-up and gates, so the figures are the CLI's on the same
rows. What a run without a server cannot have is left out: the per-partition cache, the nightly
series (and its drift gates) and a baseline run. Nothing is logged unless ``log_to`` says where.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flows.api.inputs import ModelChoice, choose_model, parquet_path
from flows.api.result import BceEvaluation, ReportParts
from flows.settings import EvaluateSettings, build_settings
from tasks.data.dataset import Dataset, check_dataset, group_files, read_dataset_files
from tasks.data.slicing import finest_cross
from tasks.errors import InputError
from tasks.judge.gates import check_gates, with_verdicts
from tasks.judge.slice_gates import judge_slices, with_slice_failures
from tasks.metrics.bad_input import check_unlabelled
from tasks.metrics.reduce import reduce_chunk, summarize_records
from tasks.models.scoring import Scorer, make_scorer, stored_scorer
from tasks.review.results import ModelInfo, with_partition_label
from tasks.review.sample import sample_scores

#: gate scopes that need an earlier run (a series or a baseline): the CLI's and the deployments' only
_NEEDS_HISTORY = ("baseline", "drift")


def evaluate(
    data: Any,
    *,
    label: str,
    model: Any = None,
    features: Sequence[str] = (),
    partition_by: Sequence[str] = (),
    slices: Sequence[str] = (),
    weights: str | None = None,
    late_labels: bool = False,
    score_kind: str = "probability",
    gates: Sequence[str] = (),
    fdr: float = 0.05,
    min_rows: int = 1,
    decide: dict[str, Any] | None = None,
    sample_rows: int = 5000,
    log_to: str | None = None,
    experiment: str = "bce-evaluation",
    run_name: str | None = None,
    name: str | None = None,
) -> BceEvaluation:
    """Evaluate a binary classifier by BCE, overall, per partition and per declared slicing.

    BCE = −(1/Σw) Σ wᵢ [yᵢ log pᵢ + (1 − yᵢ) log(1 − pᵢ)], exact from the logit where the model has one.

    ``data``: a path to Parquet (file, folder, hive tree, ``s3://``), a Polars ``DataFrame`` or
    ``LazyFrame``, a pandas ``DataFrame``, or an ``mlflow.data`` dataset of one. ``model``: None (fit
    scikit-learn's ``LogisticRegression`` on ``features``), a model URI (``models:/churn@champion``),
    the name of a column of stored scores (``score_kind``: "probability" or "logit"), or a fitted
    estimator or booster (scikit-learn, XGBoost, LightGBM, CatBoost, an MLflow ``PyFuncModel``;
    ``features`` default to its own names). ``slices`` and ``gates`` are spelled as ``--slice`` and
    ``--gate`` spell them (``"region*age:30,60"``, ``"bce <= 0.5 per slice"``); ``weights`` names a
    column of sample weights; ``late_labels``: a null label has not arrived (its rows are estimated); ``fdr`` is
    the false discovery rate of per-slice gates; ``decide`` takes ``threshold`` (0.5), ``at_fpr`` (0.1), ``costs``
    (``"fp=1,fn=5"``) and ``also_at`` (more thresholds), as the CLI's. ``log_to``: None, a tracking URI (a new run
    in ``experiment``) or ``"active"`` (the active MLflow run).

    Returns a :class:`BceEvaluation` (in Jupyter: the report). Raises :class:`tasks.errors.InputError`,
    a ``ValueError`` whose one line names the file, column or value and the remedy, as the CLI prints it.
    """
    choice = choose_model(model)
    if choice.kind == "object":
        from tasks.models.in_memory import flavor_of_object, object_features

        flavor_of_object(choice.value)  # not a model at all: said before any data is read
        features = features or object_features(choice.value)
    with parquet_path(data, name) as path:
        settings = _settings(path, label, choice, features, partition_by, slices, weights, score_kind, gates)
        settings = settings.model_copy(update={"sample_rows": sample_rows, "late_labels": late_labels})
        settings = _with_decisions(settings, decide or {})
        settings.gates.fdr_level, settings.gates.min_rows = _checked_level(fdr), min_rows
        dataset, scorer, info, fitted = _scoring(settings, choice)
        table, overall, sliced = _reduce(settings, dataset, scorer)
        verdict = check_gates(table, overall, settings.gates, None, None) if settings.gates.active else None
        judged = judge_slices(sliced, overall, settings.gates) if sliced else None
        verdict = with_slice_failures(verdict, judged)
        sample = sample_scores(dataset, scorer, settings.sample_rows)
    parts = ReportParts(dataset, scorer, info, sample, fitted, settings.gates.partition_bound(), experiment, run_name)
    result = BceEvaluation(overall, with_verdicts(table, verdict), judged, verdict, info.description, parts)
    return result.logged(log_to) if log_to else result


def _with_decisions(settings: EvaluateSettings, decide: dict[str, Any]) -> EvaluateSettings:
    """The settings with the decision's threshold, FPR and costs, checked by the settings' own rules."""
    unknown = sorted(set(decide) - {"threshold", "at_fpr", "costs", "also_at"})
    if unknown:
        raise InputError(f"decide: unknown key(s) {unknown}; it takes threshold, at_fpr, costs and also_at.")
    return build_settings(EvaluateSettings, {**settings.model_dump(), **decide}) if decide else settings


def _checked_level(fdr: float) -> float:
    if not 0 < fdr < 1:
        raise InputError(f"--fdr {fdr!r}: the false discovery rate is a level between 0 and 1, e.g. 0.05.")
    return fdr


def _settings(
    path: str,
    label: str,
    choice: ModelChoice,
    features: Sequence[str],
    partition_by: Sequence[str],
    slices: Sequence[str],
    weights: str | None,
    score_kind: str,
    gates: Sequence[str],
) -> EvaluateSettings:
    """The CLI's settings (and their one-line refusals) for this call; no cache: nothing is kept between calls."""
    if choice.kind == "object" and not features:
        raise InputError(
            "features: the model does not name the columns it takes; pass features=[...] in the order it was trained "
            "on."
        )
    settings = build_settings(
        EvaluateSettings,
        dict(
            data=path,
            label=label,
            features=list(features),
            partition_by=list(partition_by),
            slices=list(slices),
            weight_col=weights,
            model_uri=choice.value if choice.kind == "uri" else None,
            score_col=choice.value if choice.kind == "column" else None,
            score_kind=score_kind,
            cache=False,
            gates=dict(rules=list(gates)),
        ),
    )
    for gate in settings.gates.all_gates():
        if gate.scope in _NEEDS_HISTORY:
            raise InputError(
                f"gate {gate.describe()!r} needs earlier runs (a baseline or the nightly series), which the Python API "
                "does not read; run it with bce-eval evaluate --gate, or in a deployment."
            )
    return settings


def _scoring(settings: EvaluateSettings, choice: ModelChoice) -> tuple[Dataset, Scorer, ModelInfo, Any]:
    """The checked dataset, its scorer, the model in words, and the model fitted here (or None)."""
    listing = read_dataset_files(settings.data)
    loaded = None
    if choice.kind == "uri":
        from tasks.models.loading import load_model
        from tasks.tracking.adapter import resolve_tracking_uri

        loaded = load_model(choice.value, resolve_tracking_uri(), settings.score_kind)
    features = loaded.features(settings.features) if loaded is not None else list(settings.features)
    dataset = check_dataset(
        listing,
        settings.label,
        features,
        settings.partition_by,
        [settings.score_col] if settings.score_col else [],
        loaded.inputs.by_name() if loaded and loaded.inputs else None,
        settings.model_uri or "",
        finest_cross(settings.slicings),
        settings.weight_col,
    )
    if choice.kind == "column":
        return dataset, stored_scorer(choice.value, settings.score_kind), ModelInfo(f"stored {choice.value}"), None
    if loaded is not None:
        from tasks.models.loading import check_model_output

        check_model_output(loaded, dataset)
        scorer = loaded.scorer(dataset.features, dataset.text_features)
        return dataset, scorer, ModelInfo(f"{loaded.type_name} from {choice.value}", uri=choice.value), None
    if choice.kind == "object":
        from tasks.models.in_memory import object_scorer

        scorer = object_scorer(choice.value, dataset.features, settings.score_kind)
        return dataset, scorer, ModelInfo(f"{type(choice.value).__name__} given in memory"), None
    from tasks.data.training_data import collect_training_data
    from tasks.models.fitting import fit_model

    fitted = fit_model(*collect_training_data(dataset), {})
    info = ModelInfo("LogisticRegression fitted on this data", params=fitted.get_params())
    return dataset, make_scorer(fitted, dataset.features), info, fitted


def _reduce(settings: EvaluateSettings, dataset: Dataset, scorer: Scorer) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The pass over every chunk, then the per-partition table, the overall row and each slicing's table."""
    records, hists = [], []
    for chunk in group_files(dataset, settings.rows_per_task(holds_rows=False)):
        rec, hist = reduce_chunk(dataset, scorer, chunk, False)
        records.append(rec)
        hists.append(hist)
    if dataset.per_cell:
        from tasks.metrics.rollup import summarize_cells

        table, overall, sliced = summarize_cells(
            records, hists, list(dataset.partition_by), settings.slicings, settings.decisions
        )
    else:
        (table, overall), sliced = summarize_records(records, hists, list(dataset.partition_by), settings.decisions), {}
    check_unlabelled(dataset, table, settings.late_labels)
    return with_partition_label(table, dataset.partition_by), overall, sliced
