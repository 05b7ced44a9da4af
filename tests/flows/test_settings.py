"""The same checks for every way a run starts: the CLI, `serve`, and a run triggered through Prefect's API.

Rules between two settings live in the settings models; the CLI shows their message as one line
(exit 2), and Prefect validates an API-triggered run's parameters with the same models. A model
given by URI must be a binary 0/1 classifier before any data is read.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from flows.cli.main import _evaluate_settings, build_parser, check_serve
from flows.evaluate import PASS_STARTED
from flows.settings import CompareSettings, EvaluateSettings
from tasks.errors import InputError
from tasks.judge.gates import GateSettings
from tests.conftest import REPO
from tests.conftest import run_cli_in_process as run_cli

BASE: dict[str, Any] = {"data": "data/demo", "label": "label"}
FEATURES: dict[str, Any] = {**BASE, "features": ["f1", "f2", "f3"]}

# rule → (settings that break it, the whole message, CLI arguments after
# `evaluate data/demo --label label` that break it)
EVALUATE_RULES: dict[str, tuple[dict[str, Any], str, list[str]]] = {
    "exact AUC with slices": (
        {**BASE, "score_col": "p", "auc": "exact", "slices": ["region"]},
        "--auc exact ranks the rows of each partition; with --slice or --weight-col ROC AUC comes from histograms "
        "within a stated bound: drop --auc exact (settings: auc=exact with slices or weight_col).",
        ["--score-col", "p", "--auc", "exact", "--slice", "region"],
    ),
    "score column and model": (
        {**BASE, "score_col": "p", "model_uri": "models:/m/1"},
        "pass either --score-col or --model-uri, not both (settings: score_col or model_uri).",
        ["--score-col", "p", "--model-uri", "models:/m/1"],
    ),
    "fitting without features": (
        BASE,
        "--features is required when fitting a model (or pass --model-uri / --score-col) (settings: features, or "
        "model_uri / score_col).",
        [],
    ),
    "label among the features": (
        {**BASE, "features": ["f1", "label"]},
        "--features includes the label column 'label'; drop it from --features (settings: features contains label).",
        ["--features", "f1,label"],
    ),
    "score column is the label": (
        {**BASE, "score_col": "label"},
        "--score-col 'label' is the label column; pass the column holding the predictions (settings: score_col equals "
        "label).",
        ["--score-col", "label"],
    ),
    "score kind without a score column": (
        {**FEATURES, "score_kind": "logit"},
        "--score-kind logit says what --score-col (or a pyfunc model's output) holds; pass --score-col COLUMN or "
        "--model-uri, "
        "or drop --score-kind (settings: score_kind needs score_col or model_uri).",
        ["--features", "f1,f2,f3", "--score-kind", "logit"],
    ),
    "alias without register": (
        {**FEATURES, "register_alias": "champion"},
        "--alias needs --register NAME (settings: register_alias needs register_name).",
        ["--features", "f1,f2,f3", "--alias", "champion"],
    ),
    "register a loaded model": (
        {**BASE, "model_uri": "models:/m/1", "register_name": "m"},
        "--register registers a fitted model; it cannot be used with --model-uri or --score-col (settings: "
        "register_name with model_uri or score_col).",
        ["--model-uri", "models:/m/1", "--register", "m"],
    ),
    "register stored scores": (
        {**BASE, "score_col": "p", "register_name": "m"},
        "--register registers a fitted model; it cannot be used with --model-uri or --score-col (settings: "
        "register_name with model_uri or score_col).",
        ["--score-col", "p", "--register", "m"],
    ),
    "streaming fit of a loaded model": (
        {**BASE, "model_uri": "models:/m/1", "fit": "streaming"},
        "--fit streaming fits a model; it cannot be used with --model-uri or --score-col (settings: fit=streaming with "
        "model_uri or score_col).",
        ["--model-uri", "models:/m/1", "--fit", "streaming"],
    ),
    "fit parameters for stored scores": (
        {**BASE, "score_col": "p", "model_params": {"C": 0.5}},
        "--C / --max-iter configure the fitted LogisticRegression (given: C=0.5); they cannot be used with --model-uri "
        "or --score-col (settings: model_params with model_uri or score_col).",
        ["--score-col", "p", "--C", "0.5"],
    ),
    "window without a date key": (
        {**FEATURES, "window_days": 7},
        "--window-days needs --date-key KEY, the hive key holding each partition's date (settings: window_days needs "
        "date_key).",
        ["--features", "f1,f2,f3", "--window-days", "7"],
    ),
    "date key without a window": (
        {**FEATURES, "date_key": "day"},
        "--date-key needs --window-days N, the number of days up to the scheduled time to evaluate (settings: date_key "
        "needs window_days).",
        ["--features", "f1,f2,f3", "--date-key", "day"],
    ),
    "worker count without a local cluster": (
        {**FEATURES, "dask_workers": 4},
        "--dask-workers sizes the cluster of --dask local, but no --dask was given; drop --dask-workers or pass --dask "
        "local (settings: dask_workers needs dask='local').",
        ["--features", "f1,f2,f3", "--dask-workers", "4"],
    ),
    "worker count for a remote scheduler": (
        {**FEATURES, "dask": "tcp://10.0.0.5:8786", "dask_workers": 4},
        "--dask-workers sizes the cluster of --dask local, but --dask tcp://10.0.0.5:8786 is a running cluster with "
        "its own workers; drop --dask-workers or pass --dask local (settings: dask_workers needs dask='local').",
        ["--features", "f1,f2,f3", "--dask", "tcp://10.0.0.5:8786", "--dask-workers", "4"],
    ),
    "verify a cache that is off": (
        {**FEATURES, "verify_cache": True, "cache": False},
        "--verify-cache checks the per-partition cache; it cannot be used with --no-cache (settings: verify_cache "
        "needs cache=true).",
        ["--features", "f1,f2,f3", "--verify-cache", "--no-cache"],
    ),
    "regression gate without a baseline": (
        {**FEATURES, "gates": {"max_regression": 0.01}},
        "--max-regression needs --baseline-run RUN_ID (or latest) (settings: gates.max_regression needs "
        "gates.baseline_run_id).",
        ["--features", "f1,f2,f3", "--max-regression", "0.01"],
    ),
    "baseline without a regression gate": (
        {**FEATURES, "gates": {"baseline_run_id": "abc123"}},
        "--baseline-run is only read for --max-regression; pass --max-regression DELTA or drop --baseline-run "
        "(settings: gates.baseline_run_id needs gates.max_regression).",
        ["--features", "f1,f2,f3", "--baseline-run", "abc123"],
    ),
    "a per-slice gate without a slicing": (
        {**FEATURES, "gates": {"rules": ["ece_equal_mass <= 0.02 per slice"]}},
        "--gate 'ece_equal_mass <= 0.02 per slice' judges slices, but no --slice is declared: add --slice COLUMN, or "
        "judge it 'per partition' (settings: a per-slice gate needs slices).",
        ["--features", "f1,f2,f3", "--gate", "ece_equal_mass <= 0.02 per slice"],
    ),
}

COMPARE = {**BASE, "champion": "models:/churn@champion", "challenger": "models:/churn/2"}
COMPARE_RULES: dict[str, tuple[dict[str, Any], str]] = {
    "a model against itself": (
        {**COMPARE, "challenger": "models:/churn@champion"},
        "--champion and --challenger are the same model (models:/churn@champion); pass two different models (settings: "
        "champion equals challenger).",
    ),
    "a margin without promotion": (
        {**COMPARE, "margin": 0.002},
        "--margin is the improvement --promote requires; pass --promote or drop --margin (settings: margin needs "
        "promote).",
    ),
    "label among the features": (
        {**COMPARE, "features": ["label", "f1"]},
        "--features includes the label column 'label'; drop it from --features (settings: features contains label).",
    ),
}

# combinations that are fine (and stay fine after a dump and reload, as a served deployment does)
VALID_EVALUATE = [
    FEATURES,
    {**BASE, "model_uri": "models:/m@champion"},  # features from the model's signature
    {**BASE, "score_col": "p", "score_kind": "logit"},
    {**FEATURES, "register_name": "churn", "register_alias": "champion"},
    {**FEATURES, "fit": "streaming", "model_params": {"C": 0.5, "max_iter": 50}},
    {**FEATURES, "date_key": "day", "window_days": 7, "where": {"region": ["north"]}},
    {**FEATURES, "dask": "local", "dask_workers": 4},
    {**FEATURES, "dask": "tcp://10.0.0.5:8786"},
    {**FEATURES, "verify_cache": True},
    {**FEATURES, "slices": ["region", "f1:0,1*region", "region=north"], "weight_col": "w"},
    {**FEATURES, "slices": ["region"], "gates": {"fdr_level": 0.1}},
    {**FEATURES, "full": True, "cache": False},
    {
        **BASE,
        "model_uri": "models:/m/1",
        "gates": {"max_regression": 0.01, "baseline_run_id": "abc", "max_partition_bce": 0.7},
    },
]
VALID_COMPARE = [COMPARE, {**COMPARE, "promote": True, "margin": 0.002, "max_regression": 0.01}]


@pytest.mark.parametrize("rule", list(EVALUATE_RULES))
def test_each_evaluate_rule_is_the_settings_models(rule: str) -> None:
    values, message, _ = EVALUATE_RULES[rule]
    with pytest.raises(ValidationError) as info:
        EvaluateSettings.model_validate(values)
    errors = info.value.errors()
    assert len(errors) == 1 and str(errors[0]["ctx"]["error"]) == message


@pytest.mark.parametrize("rule", list(EVALUATE_RULES))
def test_the_cli_shows_the_settings_rule_as_one_line(rule: str) -> None:
    # no rule of its own in the CLI: the same message, without pydantic's wording around it
    _, message, args = EVALUATE_RULES[rule]
    parsed = build_parser().parse_args(["evaluate", "data/demo", "--label", "label", *args])
    with pytest.raises(InputError) as info:
        _evaluate_settings(parsed)
    assert str(info.value) == message
    assert "\n" not in str(info.value) and "Value error" not in str(info.value) and "pydantic" not in str(info.value)


@pytest.mark.parametrize("rule", list(COMPARE_RULES))
def test_each_compare_rule_is_the_settings_models(rule: str) -> None:
    values, message = COMPARE_RULES[rule]
    with pytest.raises(ValidationError) as info:
        CompareSettings.model_validate(values)
    assert str(info.value.errors()[0]["ctx"]["error"]) == message


def test_the_gate_rule_holds_for_gate_settings_alone() -> None:
    with pytest.raises(ValidationError, match=re.escape("--max-regression needs --baseline-run RUN_ID")):
        GateSettings(max_regression=0.0)  # 0 is a threshold too, not "unset"
    assert GateSettings(max_regression=0.0, baseline_run_id="r").active


@pytest.mark.parametrize("values", VALID_EVALUATE, ids=lambda v: ",".join(sorted(set(v) - {"data", "label"})) or "fit")
def test_valid_combinations_pass_and_survive_a_dump_and_reload(values: dict[str, Any]) -> None:
    settings = EvaluateSettings.model_validate(values)
    again = EvaluateSettings.model_validate(settings.model_dump(mode="json"))
    assert again == settings
    for key, value in values.items():
        got = getattr(settings, key)
        assert (got.model_dump(exclude_defaults=True) if key == "gates" else got) == value


@pytest.mark.parametrize("values", VALID_COMPARE)
def test_valid_compare_combinations_pass(values: dict[str, Any]) -> None:
    settings = CompareSettings.model_validate(values)
    assert CompareSettings.model_validate(settings.model_dump(mode="json")) == settings


@pytest.mark.parametrize(
    "args, message",
    [
        (["--chunk-rows", "-5"], "--chunk-rows -5: input should be greater than 0."),
        (["--min-rows", "0"], "--min-rows 0: input should be greater than or equal to 1."),
        (["--max-partition-bce", "-1"], "--max-partition-bce -1.0: input should be greater than 0."),
    ],
)
def test_a_field_error_names_the_option_and_value(args: list[str], message: str) -> None:
    parsed = build_parser().parse_args(["evaluate", "data/demo", "--label", "label", "--features", "f1,f2,f3", *args])
    with pytest.raises(InputError) as info:
        _evaluate_settings(parsed)
    assert str(info.value) == message


def test_prefect_validates_an_api_triggered_run_with_the_same_rules(prefect_server, mlflow_uri) -> None:
    from prefect import get_client
    from prefect.exceptions import ParameterTypeError
    from prefect.flow_engine import run_flow

    from flows.evaluate import evaluate_flow

    message = EVALUATE_RULES["regression gate without a baseline"][1]
    bad = {
        "settings": {
            "data": str(REPO / "data" / "demo"),
            "label": "label",
            "features": "f1,f2,f3",
            "gates": {"max_regression": 0.01},
        }
    }
    with pytest.raises(ParameterTypeError, match=re.escape(message)):
        evaluate_flow.validate_parameters(bad)
    good = evaluate_flow.validate_parameters(
        {"settings": {**bad["settings"], "gates": {"max_regression": 0.01, "baseline_run_id": "r1"}}}
    )
    assert good["settings"].gates.baseline_run_id == "r1" and good["settings"].features == ["f1", "f2", "f3"]

    # as a runner or worker does: the flow run is created through the API with JSON parameters,
    # then the engine runs it; validation fails it before the flow's first task
    with get_client(sync_client=True) as client:
        created = client.create_flow_run(evaluate_flow, parameters=bad)
        state = run_flow(evaluate_flow, flow_run=created, parameters=created.parameters, return_type="state")
        assert state.is_failed()
        with pytest.raises(ParameterTypeError, match=re.escape(message)):
            state.result()
        stored = client.read_flow_run(created.id)
        assert stored.state is not None and stored.state.is_failed()
        assert "Validation of flow parameters failed" in (stored.state.message or ""), stored.state.message
        assert "--max-regression needs --baseline-run RUN_ID" in stored.state.message, stored.state.message
        assert not client.read_task_runs(flow_run_filter=_by_id(created.id))  # no task ran


def _by_id(flow_run_id: Any) -> Any:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))


# --- in process through the CLI: exit 2 and the rule's message as the last line ---------------


@pytest.fixture
def cli(prefect_server: str, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``run_cli`` against the session's Prefect server and the test's MLflow store."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    return lambda args: run_cli(args, capsys)


@pytest.mark.parametrize(
    "args, rule",
    [
        (
            ["evaluate", "data/demo", "--label", "label", "--features", "f1,f2,f3", "--max-regression", "0.01"],
            "regression gate without a baseline",
        ),
        (
            ["evaluate", "data/demo", "--label", "label", "--features", "f1,f2,f3", "--verify-cache", "--no-cache"],
            "verify a cache that is off",
        ),
        (
            [
                "serve",
                "--cron",
                "0 2 * * *",
                "data/demo",
                "--label",
                "label",
                "--features",
                "f1,f2,f3",
                "--date-key",
                "day",
            ],
            "date key without a window",
        ),
    ],
)
def test_cli_refuses_a_broken_rule_with_exit_2_and_one_last_line(cli, args: list[str], rule: str) -> None:
    code, out, err = cli(args)
    assert code == 2
    assert err[-1] == f"bce-eval: error: {EVALUATE_RULES[rule][1]}"
    assert "Traceback" not in out + "\n".join(err)


def test_cli_refuses_comparing_a_model_with_itself(cli) -> None:
    code, _, err = cli(
        ["compare", "data/demo", "--label", "label", "--champion", "models:/churn/1", "--challenger", "models:/churn/1"]
    )
    assert code == 2
    assert err[-1] == (
        "bce-eval: error: --champion and --challenger are the same model (models:/churn/1); pass two different models "
        "(settings: champion equals challenger)."
    )


# --- serve checks its options against the data and the model before serving -------------------


def test_serve_refuses_a_date_key_the_data_does_not_have(cli) -> None:
    # the README's old example: the demo data has no `day` key, so every scheduled run would fail
    data = REPO / "data" / "demo"
    code, out, err = cli(
        [
            "serve",
            "--cron",
            "0 2 * * *",
            "--name",
            "nightly",
            str(data),
            "--label",
            "label",
            "--features",
            "f1,f2,f3",
            "--date-key",
            "day",
            "--window-days",
            "7",
            "--max-partition-bce",
            "0.8",
        ]
    )
    assert code == 2
    assert re.fullmatch(
        r"bce-eval: error: .*region=\w+/part-0\.parquet: no hive key 'day' to select partitions by; keys are "
        r"\['region'\]\.",
        err[-1],
    ), err[-1]
    assert "serving deployment" not in out  # refused before flow.serve


def test_serve_refuses_a_missing_feature_column(cli) -> None:
    code, out, err = cli(
        ["serve", "--cron", "0 2 * * *", str(REPO / "data" / "demo"), "--label", "label", "--features", "f1,f9"]
    )
    assert code == 2 and "no feature column 'f9'" in err[-1] and "serving deployment" not in out


def test_serve_check_passes_on_good_options_and_counts_the_data(mlflow_uri) -> None:
    import polars as pl

    parsed = build_parser().parse_args(
        [
            "serve",
            "--cron",
            "0 2 * * *",
            str(REPO / "data" / "demo"),
            "--label",
            "label",
            "--features",
            "f1,f2,f3",
            "--where",
            "region=north,south",
        ]
    )
    line = check_serve(_evaluate_settings(parsed))
    n = sum(
        pl.read_parquet(REPO / "data" / "demo" / f"region={r}" / "part-0.parquet").height for r in ("north", "south")
    )
    assert (
        line == f"checked {REPO / 'data' / 'demo'}: {n:,} rows in 2 file(s), partitioned by region; "
        "label 'label', features f1,f2,f3"
    )


# --- a model given by URI must be a binary 0/1 classifier, checked before any data is read -----


def _log(model: Any, mlflow_uri: str) -> str:
    """Log ``model`` to the test's MLflow store; its ``runs:/`` URI."""
    import mlflow

    client = mlflow.MlflowClient(mlflow_uri)
    # no mlflow.set_experiment: it would leave an active experiment behind for later tests
    exp = client.get_experiment_by_name("models-under-test")
    exp_id = exp.experiment_id if exp else client.create_experiment("models-under-test")
    mlflow.set_tracking_uri(mlflow_uri)
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    return f"runs:/{run.info.run_id}/model"


@pytest.fixture
def bad_models(mlflow_uri: str) -> dict[str, str]:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    rng = np.random.default_rng(3)
    X = rng.normal(size=(90, 3))
    return {
        "three classes": _log(LogisticRegression().fit(X, np.arange(90) % 3), mlflow_uri),
        "regressor": _log(LinearRegression().fit(X, X[:, 0]), mlflow_uri),
        "classes 1 and 2": _log(LogisticRegression().fit(X, 1 + (X[:, 0] > 0)), mlflow_uri),
    }


EXPECTED_MODEL_ERRORS = {
    "three classes": r"model {uri}: LogisticRegression has 3 classes \[0, 1, 2\]; "
    r"BCE needs a binary classifier of the classes 0 and 1\.",
    "regressor": r"model {uri}: LinearRegression is not a classifier "
    r"\(it has neither predict_proba nor decision_function\); pass a binary classifier trained on 0/1 labels\.",
    "classes 1 and 2": r"model {uri}: LogisticRegression was trained on the classes \[1, 2\], "
    r"not 0 and 1 \(or False and True\); its scores cannot be matched to 0/1 labels, so retrain it on 0/1 labels\.",
}


def test_evaluate_refuses_a_model_that_is_not_a_binary_classifier(cli, bad_models, hive_data) -> None:
    # the model is checked when it loads, before any row is read
    for case, uri in bad_models.items():
        code, out, err = cli(["evaluate", str(hive_data), "--label", "label", "--model-uri", uri])
        assert code == 2, (case, err)
        assert PASS_STARTED not in out + "\n".join(err)
        assert re.fullmatch("bce-eval: error: " + EXPECTED_MODEL_ERRORS[case].format(uri=re.escape(uri)), err[-1]), err[
            -1
        ]
        assert sum(line.startswith("bce-eval:") for line in err) == 1 and "Traceback" not in out + "\n".join(err)


def test_compare_and_serve_refuse_them_too(cli, bad_models, hive_data, mlflow_uri) -> None:
    import polars as pl
    from sklearn.linear_model import LogisticRegression

    df = pl.read_parquet(hive_data, hive_partitioning=True)
    good = _log(
        LogisticRegression().fit(df.select("a", "b", "c").to_numpy(), df.get_column("label").to_numpy()), mlflow_uri
    )
    multi = bad_models["three classes"]
    code, _, err = cli(
        [
            "compare",
            str(hive_data),
            "--label",
            "label",
            "--features",
            "a,b,c",
            "--champion",
            good,
            "--challenger",
            multi,
        ]
    )
    assert code == 2 and re.fullmatch(
        "bce-eval: error: " + EXPECTED_MODEL_ERRORS["three classes"].format(uri=re.escape(multi)), err[-1]
    ), err[-1]
    reg = bad_models["regressor"]
    code, out, err = cli(
        ["serve", "--cron", "0 2 * * *", str(hive_data), "--label", "label", "--features", "a,b,c", "--model-uri", reg]
    )
    assert code == 2 and re.fullmatch(
        "bce-eval: error: " + EXPECTED_MODEL_ERRORS["regressor"].format(uri=re.escape(reg)), err[-1]
    ), err[-1]
    assert "serving deployment" not in out


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 5 iterations are enough to have classes_
@pytest.mark.parametrize("labels", [[0, 1], [False, True], [0.0, 1.0]], ids=["int", "bool", "float"])
def test_binary_classifiers_of_0_and_1_pass_the_check(labels: list[Any]) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from tasks.models.scoring import check_binary_model

    X = np.random.default_rng(0).normal(size=(40, 2))
    y = np.array(labels, dtype=type(labels[0]))[(X[:, 0] > 0).astype(int)]
    for model in (LogisticRegression().fit(X, y), MLPClassifier(max_iter=5).fit(X, y)):
        check_binary_model(model, "model m")  # no error
    with pytest.raises(InputError, match=r"^model m: LogisticRegression was trained on the classes \['a', 'b'\]"):
        check_binary_model(LogisticRegression().fit(X, np.where(X[:, 0] > 0, "b", "a")), "model m")


def test_a_bad_slice_is_one_line_from_the_settings_and_the_cli() -> None:
    with pytest.raises(
        ValidationError, match=re.escape("--slice 'age:30,20': bin edges must be finite and increasing")
    ):
        EvaluateSettings.model_validate({**FEATURES, "slices": ["age:30,20"]})
    parsed = build_parser().parse_args(
        ["evaluate", "data/demo", "--label", "label", "--slice", "a*", "--features", "f1"]
    )
    with pytest.raises(InputError, match=re.escape("--slice 'a*': cannot read ''")):
        _evaluate_settings(parsed)


def test_a_deployments_parameters_carry_the_slicings_and_the_weight() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.evaluate import evaluate_flow

    schema = parameter_schema(evaluate_flow).model_dump()
    fields = schema["definitions"]["EvaluateSettings"]["properties"]
    assert {"slices", "weight_col"} <= set(fields)
    assert "fdr_level" in schema["definitions"]["GateSettings"]["properties"]


def test_costs_read_as_the_cli_spells_them_and_make_the_decision():
    from flows.settings import EvaluateSettings

    s = EvaluateSettings(data="d", label="y", features=["a"], threshold=0.25, at_fpr=0.05, costs="fp=1,fn=5")
    assert s.costs == {"fp": 1.0, "fn": 5.0}
    d = s.decisions
    assert (d.threshold, d.at_fpr, d.cost_fp, d.cost_fn, d.costs) == (0.25, 0.05, 1.0, 5.0, True)
    assert not EvaluateSettings(data="d", label="y", features=["a"]).decisions.costs
    for bad in ("fp=1", "fp=1,fn=x", "fp=1,fn=2,tp=3", "fp=-1,fn=2"):
        with pytest.raises(ValueError, match="--costs"):
            EvaluateSettings(data="d", label="y", features=["a"], costs=bad)
