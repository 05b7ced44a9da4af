"""Every command the README shows works as written on the shipped data.

The commands are read from the README's code blocks, so a new or edited command is covered (or
this test says it is not). They run in this process through ``flows.cli.main`` against the
session's Prefect server, a private MLflow store and a copy of ``data/`` as the working directory.
Placeholders are filled with real values made here: ``<run_id>`` with the run of the first
command, and the two examples on the user's own data (``events.parquet``, ``scored/``) get such
data. ``serve`` and ``ui`` run until stopped: their arguments are parsed and ``serve``'s pre-flight
check runs on the data; ``make`` targets are checked with ``make -n`` (CI runs ``make test``).
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

# at import, not inside a fixture: this configures Prefect's console logging, which must not be
# bound to a capsys stream that pytest closes after a test's setup
from tests.conftest import run_cli_in_process as run_cli

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
Z = 1.959963984540054


def readme_commands() -> list[str]:
    """The ``bce-eval …`` and ``make …`` lines of the README's fenced code blocks, comments dropped."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] in {"bce-eval", "make"}:
                commands.append(shlex.join(words))
    return commands


def _c(text: str) -> str:
    return shlex.join(shlex.split(text))


FIT = _c("bce-eval evaluate data/demo --label label --features f1,f2,f3")
BY_RUN = _c("bce-eval evaluate data/demo --label label --model-uri runs:/<run_id>/model")
BY_ALIAS = _c("bce-eval evaluate data/demo --label label --model-uri models:/churn@champion")
IN_FILE_KEYS = _c("bce-eval evaluate events.parquet --label clicked --features a,b --partition-by country,day")
CIRCLES = _c("bce-eval circles --epochs 200")
UI = _c("bce-eval ui")
HELP = _c("bce-eval --help")
REGISTER = _c("bce-eval evaluate data/demo --label label --features f1,f2,f3 --register churn --alias champion")
SCORED = _c("bce-eval evaluate scored/ --label y --score-col p_model --score-kind probability")
COMPARE = _c("bce-eval compare data/demo --label label --champion models:/churn@champion --challenger models:/churn/2 --promote --margin 0.002")
GATE = _c("bce-eval evaluate data/demo --label label --model-uri models:/churn@champion --max-partition-bce 0.65 --min-rows 100")
REGRESSION = _c("bce-eval evaluate data/demo --label label --model-uri models:/churn@champion --max-regression 0.01 --baseline-run <run_id>")
SERVE = _c('bce-eval serve --cron "0 2 * * *" --name nightly data/demo --label label --features f1,f2,f3 --max-partition-bce 0.8')
EXAMPLE_MODELS = _c("bce-eval example-models")
FLAVOURS = {
    name: _c(f"bce-eval evaluate data/demo --label label --model-uri models:/demo-{name}@champion")
    for name in ("pipeline", "xgboost", "lightgbm", "catboost", "pyfunc")
}
FLAVOUR_COMPARE = _c(
    "bce-eval compare data/demo --label label --champion models:/demo-xgboost@champion --challenger models:/demo-lightgbm@champion"
)
MAKE = {_c("make demo"): "bce-eval demo", _c("make test"): "python -m pytest", _c("make bench"): "python -m flows.bench",
        _c("make stack"): "bce-eval stack up", _c("make stack-down"): "bce-eval stack down"}
# run against the session's team stack in tests/test_team_stack.py
ON_STACK = {_c("bce-eval evaluate s3://bce-eval/demo --label label --features f1,f2,f3 --dask tcp://127.0.0.1:8786")}
RUN_HERE = {FIT, BY_RUN, BY_ALIAS, IN_FILE_KEYS, CIRCLES, REGISTER, SCORED, COMPARE, GATE, REGRESSION, EXAMPLE_MODELS, FLAVOUR_COMPARE, *FLAVOURS.values()}


def test_this_file_covers_every_readme_command():
    shown = set(readme_commands())
    assert shown, "no command found in the README's code blocks"
    covered = RUN_HERE | {UI, HELP, SERVE} | set(MAKE) | ON_STACK
    assert shown - covered == set(), "README commands this test does not run"
    assert covered - shown == set(), "commands this test runs that the README no longer shows"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped data as the working directory (commands use relative paths)."""
    shutil.copytree(REPO / "data" / "demo", tmp_path / "data" / "demo")
    shutil.copy(REPO / "data" / "seed_points.parquet", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def bce_eval(prefect_server: str, mlflow_uri: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run a README command line in process: (exit code, stdout, last non-empty stderr line)."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)

    def run(command: str, **fill: str) -> tuple[int, str, str]:
        for key, value in fill.items():
            command = command.replace(f"<{key}>", value)
        words = shlex.split(command)
        assert words[0] == "bce-eval"
        code, out, err = run_cli(words[1:], capsys)
        return code, out, err[-1] if err else ""

    return run


def _run_id(stdout: str) -> str:
    return stdout.split("MLflow run ")[1].split()[0]


def _losses(model: Any, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row BCE from the model's probabilities (what sklearn's log_loss averages)."""
    p = np.clip(model.predict_proba(X)[:, 1], 2.220446049250313e-16, 1 - 2.220446049250313e-16)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def _probabilities(name: str, X: Any) -> np.ndarray:
    """P(y=1) of a registered example model, through its own flavour's loader (not bce-eval's)."""
    import mlflow

    uri = f"models:/demo-{name}@champion"
    if name == "pyfunc":
        return np.asarray(mlflow.pyfunc.load_model(uri).predict(X), dtype=np.float64).ravel()
    flavour = {"pipeline": mlflow.sklearn, "xgboost": mlflow.xgboost, "lightgbm": mlflow.lightgbm, "catboost": mlflow.catboost}[name]
    columns = ["f1", "f2", "f3", "region"] if name == "pipeline" else ["f1", "f2", "f3"]
    return flavour.load_model(uri).predict_proba(X[columns])[:, 1].astype(np.float64)


def test_readme_flavour_commands_run_as_written(bce_eval, mlflow_uri, workdir):
    import mlflow
    from sklearn.metrics import log_loss

    client = mlflow.MlflowClient(mlflow_uri)
    code, out, err = bce_eval(EXAMPLE_MODELS)
    assert code == 0, err
    demo = pl.read_parquet(workdir / "data" / "demo", hive_partitioning=True).to_pandas()
    y = demo["label"].to_numpy()
    losses = {}
    for name, command in FLAVOURS.items():
        code, out, err = bce_eval(command)
        assert code == 0, (name, err)
        run = client.get_run(_run_id(out))
        p = _probabilities(name, demo)
        # XGBoost's own probabilities are float32: equal to ~1e-7 (bce-eval uses the exact margin)
        assert run.data.metrics["bce"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-6), name
        assert run.data.tags["model_name"] == f"demo-{name}" and run.data.tags["model_digest"]
        losses[name] = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    code, out, err = bce_eval(FLAVOUR_COMPARE)
    assert code == 0, err
    comparison = client.search_runs([client.get_experiment_by_name("bce-comparison").experiment_id])[0]
    d = losses["lightgbm"] - losses["xgboost"]
    assert comparison.data.metrics["bce_diff"] == pytest.approx(d.mean(), abs=1e-6)
    half = comparison.data.metrics["bce_diff_high"] - comparison.data.metrics["bce_diff"]
    assert half == pytest.approx(Z * d.std(ddof=1) / math.sqrt(len(d)), rel=1e-3)


def test_readme_commands_run_as_written(bce_eval, mlflow_uri, workdir, monkeypatch):
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    import flows.circles

    client = mlflow.MlflowClient(mlflow_uri)
    demo = pl.read_parquet(workdir / "data" / "demo", hive_partitioning=True)
    X, y = demo.select("f1", "f2", "f3").to_numpy(), demo.get_column("label").to_numpy()

    # fit and evaluate: the overall BCE is scikit-learn's log loss of the same fit
    code, out, err = bce_eval(FIT)
    assert code == 0, err
    fit_id = _run_id(out)
    fit_bce = client.get_run(fit_id).data.metrics["bce"]
    assert fit_bce == pytest.approx(log_loss(y, LogisticRegression().fit(X, y).predict_proba(X)[:, 1]), rel=1e-6)

    # the logged model, by run: the same figures
    code, out, err = bce_eval(BY_RUN, run_id=fit_id)
    assert code == 0, err
    assert client.get_run(_run_id(out)).data.metrics["bce"] == pytest.approx(fit_bce, rel=1e-12)

    # register (the setup the alias commands need), then evaluate by alias
    code, out, err = bce_eval(REGISTER)
    assert code == 0, err
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "1"
    code, out, err = bce_eval(BY_ALIAS)
    assert code == 0, err
    by_alias = client.get_run(_run_id(out))
    assert by_alias.data.tags["model_name"] == "churn" and by_alias.data.tags["model_version"] == "1"
    champion = mlflow.sklearn.load_model("models:/churn@champion")

    # the partition gate: exactly the regions with >= 100 rows whose whole 95% interval is above 0.65 fail
    code, out, err = bce_eval(GATE)
    expected_fail = set()
    for region, part in demo.partition_by("region", as_dict=True).items():
        losses = _losses(champion, part.select("f1", "f2", "f3").to_numpy(), part.get_column("label").to_numpy())
        if len(losses) >= 100 and losses.mean() - Z * losses.std() / math.sqrt(len(losses)) > 0.65:
            expected_fail.add(f"region={region[0]}")
    assert code == (3 if expected_fail else 0), err
    gate_run = client.get_run(_run_id(out))
    assert set(filter(None, gate_run.data.tags.get("quality_gate.partitions", "").split(","))) == expected_fail

    # the regression gate against the first run: the champion is the same fit, so no regression
    code, out, err = bce_eval(REGRESSION, run_id=fit_id)
    assert code == 0, err
    assert client.get_run(_run_id(out)).data.tags["quality_gate"] == "passed"

    # a second version of churn (moving @champion to it), then compare: equal models, no promotion
    code, out, err = bce_eval(REGISTER)
    assert code == 0, err
    code, out, err = bce_eval(COMPARE)
    assert code == 0, err
    assert "promotion: no" in out
    assert client.get_run(_run_id(out)).data.metrics["bce_diff"] == 0.0

    # partition columns inside one file: the user's events.parquet, made here
    rng = np.random.default_rng(8)
    n = 600
    a, b = rng.normal(size=n), rng.normal(size=n)
    clicked = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * a - b)))).astype(np.int64)
    country = rng.choice(["de", "fr", "nl"], size=n)
    day = rng.choice(["2026-11-23", "2026-11-24"], size=n)
    pl.DataFrame({"clicked": clicked, "a": a, "b": b, "country": country, "day": day}).write_parquet(workdir / "events.parquet")
    code, out, err = bce_eval(IN_FILE_KEYS)
    assert code == 0, err
    run = client.get_run(_run_id(out))
    assert run.data.metrics["n_partitions"] == len(set(zip(country, day)))
    ab = np.column_stack([a, b])
    assert run.data.metrics["bce"] == pytest.approx(log_loss(clicked, LogisticRegression().fit(ab, clicked).predict_proba(ab)[:, 1]), rel=1e-6)

    # predictions scored elsewhere: the user's scored/ folder, made here from the demo data
    (workdir / "scored").mkdir()
    p_model = LogisticRegression(C=0.1).fit(X, y).predict_proba(X)[:, 1]
    pl.DataFrame({"y": y, "p_model": p_model}).write_parquet(workdir / "scored" / "part-0.parquet")
    code, out, err = bce_eval(SCORED)
    assert code == 0, err
    assert client.get_run(_run_id(out)).data.metrics["bce"] == pytest.approx(log_loss(y, p_model), rel=1e-9)

    # the seed's circles (its split is written beside the copied data, not into the repo)
    monkeypatch.setattr(flows.circles, "DATA", workdir / "data")
    code, out, err = bce_eval(CIRCLES)
    assert code == 0, err
    circles = client.get_run(_run_id(out))
    assert circles.data.params["epochs"] == "200"
    assert [m.step for m in client.get_metric_history(circles.info.run_id, "val_loss")] == list(range(1, 201))
    # the logged network's loss on the written test split, by scikit-learn
    test = pl.read_parquet(workdir / "data" / "circles" / "test.parquet")
    net = mlflow.sklearn.load_model(f"runs:/{circles.info.run_id}/model")
    val = log_loss(test.get_column("y").to_numpy(), net.predict_proba(test.select("x1", "x2").to_numpy())[:, 1])
    assert circles.data.metrics["final_val_loss"] == pytest.approx(val, rel=1e-9)
    assert f"Test: {circles.data.metrics['final_val_accuracy']:.3f}" in out

def test_help_shows_every_subcommand(capsys):
    from flows.cli import main

    with pytest.raises(SystemExit) as info:
        main(shlex.split(HELP)[1:])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for sub in ("evaluate", "demo", "circles", "serve", "compare", "ui"):
        assert re.search(rf"^\s+{sub}\s", text, flags=re.M), sub


def test_ui_parses_and_binds_loopback():
    from flows.cli import build_parser

    args = build_parser().parse_args(shlex.split(UI)[1:])
    assert (args.command, args.host, args.port) == ("ui", "127.0.0.1", 5000)


def test_serve_parses_and_passes_its_preflight_on_the_shipped_data(mlflow_uri, monkeypatch):
    from flows.cli import _evaluate_settings, build_parser, check_serve

    monkeypatch.chdir(REPO)  # as written, from the repo root; the check only reads footers
    args = build_parser().parse_args(shlex.split(SERVE)[1:])
    assert (args.cron, args.name) == ("0 2 * * *", "nightly")
    settings = _evaluate_settings(args)
    assert settings.gates.max_partition_bce == 0.8
    n = pl.scan_parquet(REPO / "data" / "demo" / "**" / "*.parquet").select(pl.len()).collect().item()
    assert check_serve(settings) == f"checked data/demo: {n:,} rows in 6 file(s), partitioned by region; label 'label', features f1,f2,f3"


@pytest.mark.parametrize("command", sorted(MAKE))
def test_make_targets_exist_and_run_what_the_readme_says(command):
    dry = subprocess.run([*shlex.split(command), "-n"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert MAKE[command] in dry.stdout
