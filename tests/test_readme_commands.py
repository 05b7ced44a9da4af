"""Every command the README shows works as written, in document order, on the shipped data.

The commands are read from the README's ``sh`` code blocks, in order, and run one after another
against ONE fresh MLflow store and one fresh copy of ``data/`` as the working directory (as a
fresh clone has it), so each command finds only what the commands before it made: a command that
uses something the README has not made yet fails here. Each command is run in this process
through ``flows.cli.main.main`` against the session's Prefect server, and where it computes a figure
the figure is checked against scikit-learn. ``serve`` and ``ui`` run until stopped: their
arguments are parsed and ``serve``'s pre-flight check runs; ``make`` targets are checked with
``make -n`` (CI runs ``make test``); the stack's command runs on the stack in
tests/test_team_stack.py. A line of a code block this file does not know fails the test.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

from tasks.data.naming import metric_key_suffix
from tests.conftest import REPO

# at import, not inside a fixture: this configures Prefect's console logging, which must not be
# bound to a capsys stream that pytest closes after a test's setup
from tests.conftest import run_cli_in_process as run_cli

README = REPO / "README.md"
Z = 1.959963984540054


def readme_steps() -> list[str]:
    """The README's steps in document order: each ``sh`` command line (comments dropped), and each ``python``
    block whole."""
    steps = []
    for kind, block in re.findall(r"^```(sh|python)\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M):
        if kind == "python":
            steps.append(block)
            continue
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            words = shlex.split(line, comments=True)
            if words:
                steps.append(shlex.join(words))
    return steps


def readme_python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def readme_commands() -> list[str]:
    """Every command line of the README's ``sh`` code blocks, in order."""
    blocks = readme_python_blocks()
    return [step for step in readme_steps() if step not in blocks]


#: the README's Python blocks, by what their first line says: the notebook API, then MLflow's evaluate
PY_API = "from flows.api import evaluate"
PY_MLFLOW = "import mlflow"


def _c(text: str) -> str:
    return shlex.join(shlex.split(text))


ACTIVATE = _c(". .venv/bin/activate")
FIT = _c("bce-eval evaluate data/demo --label label --features f1,f2,f3")
REGISTER = _c("bce-eval evaluate data/demo --label label --features f1,f2,f3 --register churn --alias champion")
BY_ALIAS = _c("bce-eval evaluate data/demo --label label --model-uri models:/churn@champion")
EXAMPLE_MODELS = _c("bce-eval example-models")
FLAVOURS = {
    name: _c(f"bce-eval evaluate data/demo --label label --model-uri models:/demo-{name}@champion")
    for name in ("pipeline", "xgboost", "lightgbm", "catboost", "pyfunc")
}
FLAVOUR_COMPARE = _c(
    "bce-eval compare data/demo --label label --champion models:/demo-xgboost@champion --challenger "
    "models:/demo-lightgbm@champion"
)
SCORED = _c("bce-eval evaluate data/scored --label y --score-col p_model --score-kind probability")
IN_FILE_KEYS = _c("bce-eval evaluate data/events.parquet --label clicked --features a,b --partition-by country,day")
CIRCLES = _c("bce-eval circles --epochs 200")
SUBFLOW = _c("python -m flows.pipeline_example")
SLICED = _c(
    'bce-eval evaluate data/events.parquet --label clicked --features a,b --slice country --slice "country*a:-1,0,1"'
)
WEIGHTED = _c(
    "bce-eval evaluate data/events.parquet --label clicked --features a,b --weight-col weight --slice country "
    '--gate "bce <= 0.6 per slice"'
)
LATE = _c("bce-eval evaluate data/late --label clicked --features a,b --partition-by day --late-labels")
UI = _c("bce-eval ui")
GATE = _c(
    "bce-eval evaluate data/demo --label label --model-uri models:/churn@champion --max-partition-bce 0.65 --min-rows "
    "100"
)
ANY_FIGURE = _c(
    "bce-eval evaluate data/demo --label label --model-uri models:/churn@champion "
    '--gate "roc_auc >= 0.7 per partition" --gate "brier <= 0.25"'
)
REGRESSION = _c(
    "bce-eval evaluate data/demo --label label --model-uri models:/churn@champion --max-regression 0.01 --baseline-run "
    "latest"
)
CHALLENGER = _c("bce-eval evaluate data/demo --label label --features f1,f2,f3 --C 0.05 --register churn")
COMPARE = _c(
    "bce-eval compare data/demo --label label --champion models:/churn@champion --challenger models:/churn/2 --promote "
    "--margin 0.002"
)
SERVE = _c(
    'bce-eval serve --cron "0 2 * * *" --name nightly data/demo --label label --features f1,f2,f3 --max-partition-bce '
    "0.8"
)
MAKE = {
    _c("make demo"): "bce-eval demo",
    _c("make test"): "python -m pytest",
    _c("make bench"): "python -m flows.bench",
    _c("make stack"): "bce-eval stack up",
    _c("make stack-down"): "bce-eval stack down",
}
# run against the session's team stack in tests/test_team_stack.py
ON_STACK = {_c("bce-eval evaluate s3://bce-eval/demo --label label --features f1,f2,f3 --dask tcp://127.0.0.1:8786")}
RUN_HERE = [
    FIT,
    REGISTER,
    BY_ALIAS,
    EXAMPLE_MODELS,
    *FLAVOURS.values(),
    FLAVOUR_COMPARE,
    SCORED,
    IN_FILE_KEYS,
    CIRCLES,
    SUBFLOW,
    SLICED,
    WEIGHTED,
    LATE,
    GATE,
    ANY_FIGURE,
    REGRESSION,
    CHALLENGER,
    COMPARE,
]
#: commands checked without running them here (each by its own test below or elsewhere)
NOT_RUN_HERE = {ACTIVATE, UI, SERVE, *MAKE, *ON_STACK}


def test_this_file_knows_every_readme_python_block():
    assert [block.splitlines()[0] for block in readme_python_blocks()] == [PY_API, PY_MLFLOW]


def test_this_file_knows_every_readme_command_and_runs_them_in_the_readmes_order():
    shown = readme_commands()
    assert shown, "no command found in the README's code blocks"
    known = set(RUN_HERE) | NOT_RUN_HERE
    assert [c for c in shown if c not in known] == [], "README commands this test does not run"
    assert known - set(shown) == set(), "commands this test runs that the README no longer shows"
    assert [c for c in shown if c in RUN_HERE] == RUN_HERE, "the README's order differs from the order run here"


@pytest.fixture
def fresh_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding what a fresh clone holds of the data (``data/`` as git has it), as the working directory."""
    tracked = subprocess.run(
        ["git", "ls-files", "data"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", "data"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in tracked + untracked:  # untracked: shipped files not committed yet (a working tree's)
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run_id(stdout: str) -> str:
    return stdout.split("MLflow run ")[1].split()[0]


def _losses(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row BCE from probabilities, clipped as sklearn's log_loss clips."""
    p = np.clip(p, 2.220446049250313e-16, 1 - 2.220446049250313e-16)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def _flavour_probabilities(name: str, X: Any) -> np.ndarray:
    """P(y=1) of a registered example model, through its own flavour's loader (not bce-eval's)."""
    import mlflow

    uri = f"models:/demo-{name}@champion"
    if name == "pyfunc":
        return np.asarray(mlflow.pyfunc.load_model(uri).predict(X), dtype=np.float64).ravel()
    flavour = {
        "pipeline": mlflow.sklearn,
        "xgboost": mlflow.xgboost,
        "lightgbm": mlflow.lightgbm,
        "catboost": mlflow.catboost,
    }[name]
    columns = ["f1", "f2", "f3", "region"] if name == "pipeline" else ["f1", "f2", "f3"]
    return flavour.load_model(uri).predict_proba(X[columns])[:, 1].astype(np.float64)


class Walk:
    """What the commands so far made, and the checks that each command's figures are scikit-learn's."""

    def __init__(self, client: Any, root: Path) -> None:
        from sklearn.linear_model import LogisticRegression

        self.client, self.root = client, root
        self.demo = pl.read_parquet(root / "data" / "demo", hive_partitioning=True)
        self.X, self.y = self.demo.select("f1", "f2", "f3").to_numpy(), self.demo.get_column("label").to_numpy()
        self.fit_p = LogisticRegression().fit(self.X, self.y).predict_proba(self.X)[:, 1]
        self.flavour_losses: dict[str, np.ndarray] = {}
        self.fit_bce = math.nan

    def run_of(self, out: str) -> Any:
        return self.client.get_run(_run_id(out))

    def fit(self, code: int, out: str, err: str) -> None:
        from sklearn.metrics import log_loss

        assert code == 0, err
        self.fit_bce = self.run_of(out).data.metrics["bce"]
        assert self.fit_bce == pytest.approx(log_loss(self.y, self.fit_p), rel=1e-9)

    def register(self, code: int, out: str, err: str) -> None:
        assert code == 0, err
        assert str(self.client.get_model_version_by_alias("churn", "champion").version) == "1"
        assert self.run_of(out).data.metrics["bce"] == pytest.approx(self.fit_bce, rel=1e-12)

    def by_alias(self, code: int, out: str, err: str) -> None:
        assert code == 0, err
        run = self.run_of(out)
        assert (run.data.tags["model_name"], run.data.tags["model_version"]) == ("churn", "1")
        assert run.data.metrics["bce"] == pytest.approx(self.fit_bce, rel=1e-12)

    def example_models(self, code: int, out: str, err: str) -> None:
        assert code == 0, err
        names = {m.name for m in self.client.search_registered_models()}
        assert {f"demo-{n}" for n in FLAVOURS} <= names

    def flavour(self, name: str) -> Callable[[int, str, str], None]:
        def check(code: int, out: str, err: str) -> None:
            from sklearn.metrics import log_loss

            assert code == 0, (name, err)
            run = self.run_of(out)
            p = _flavour_probabilities(name, self.demo.to_pandas())
            # XGBoost's own probabilities are float32: equal to ~1e-7 (bce-eval uses the exact margin)
            assert run.data.metrics["bce"] == pytest.approx(log_loss(self.y, p, labels=[0, 1]), rel=1e-6), name
            assert run.data.tags["model_name"] == f"demo-{name}" and run.data.tags["model_digest"]
            self.flavour_losses[name] = _losses(p, self.y)

        return check

    def flavour_compare(self, code: int, out: str, err: str) -> None:
        assert code == 0, err
        metrics = self.run_of(out).data.metrics
        d = self.flavour_losses["lightgbm"] - self.flavour_losses["xgboost"]
        assert metrics["bce_diff"] == pytest.approx(d.mean(), abs=1e-6)
        assert metrics["bce_diff_high"] - metrics["bce_diff"] == pytest.approx(
            Z * d.std(ddof=1) / math.sqrt(len(d)), rel=1e-3
        )

    def scored(self, code: int, out: str, err: str) -> None:
        from sklearn.metrics import log_loss

        assert code == 0, err
        scored = pl.read_parquet(self.root / "data" / "scored")
        expected = log_loss(scored.get_column("y").to_numpy(), scored.get_column("p_model").to_numpy())
        assert self.run_of(out).data.metrics["bce"] == pytest.approx(expected, rel=1e-9)

    def in_file_keys(self, code: int, out: str, err: str) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss

        assert code == 0, err
        events = pl.read_parquet(self.root / "data" / "events.parquet")
        run = self.run_of(out)
        assert run.data.metrics["n_partitions"] == events.select("country", "day").n_unique()
        ab, clicked = events.select("a", "b").to_numpy(), events.get_column("clicked").to_numpy()
        p = LogisticRegression().fit(ab, clicked).predict_proba(ab)[:, 1]
        assert run.data.metrics["bce"] == pytest.approx(log_loss(clicked, p), rel=1e-9)

    def circles(self, code: int, out: str, err: str) -> None:
        import mlflow
        from sklearn.metrics import log_loss

        assert code == 0, err
        run = self.run_of(out)
        assert run.data.params["epochs"] == "200"
        assert [m.step for m in self.client.get_metric_history(run.info.run_id, "val_loss")] == list(range(1, 201))
        # the logged network's loss on the written test split, by scikit-learn
        test = pl.read_parquet(self.root / "data" / "circles" / "test.parquet")
        net = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/model")
        val = log_loss(test.get_column("y").to_numpy(), net.predict_proba(test.select("x1", "x2").to_numpy())[:, 1])
        assert run.data.metrics["final_val_loss"] == pytest.approx(val, rel=1e-9)
        assert f"Test: {run.data.metrics['final_val_accuracy']:.3f}" in out

    def subflow(self, code: int, out: str, err: str) -> None:
        # the parent flow's own process, as a user runs it: the child evaluation's figure is the fit's
        assert code == 0, err
        assert f"nightly pipeline: BCE {self.fit_bce:.4f}, gate passed" in out

    def _slice_table(self, out: str, key: str) -> pd.DataFrame:
        logged = json.loads(
            Path(self.client.download_artifacts(_run_id(out), f"slices/bce_by_{key}.json", str(self.root))).read_text()
        )
        return pd.DataFrame(logged["data"], columns=logged["columns"])

    def _events(self) -> tuple[pd.DataFrame, np.ndarray]:
        from sklearn.linear_model import LogisticRegression

        events = pl.read_parquet(self.root / "data" / "events.parquet").to_pandas()
        ab = events[["a", "b"]].to_numpy()
        return events, LogisticRegression().fit(ab, events["clicked"]).predict_proba(ab)[:, 1]

    def sliced(self, code: int, out: str, err: str) -> None:
        from sklearn.metrics import log_loss

        assert code == 0, err
        events, p = self._events()
        events["p"], events["bin"] = p, pd.cut(events["a"], [-np.inf, -1, 0, 1, np.inf], right=False).cat.codes
        for key, by in (("country", ["country"]), ("country_x_a_-1_0_1_", ["country", "bin"])):
            table = self._slice_table(out, key)
            expected = sorted(log_loss(g["clicked"], g["p"], labels=[0, 1]) for _, g in events.groupby(by))
            assert np.allclose(sorted(table["bce"]), expected, rtol=1e-9), key

    def weighted(self, code: int, out: str, err: str) -> None:
        from scipy.stats import false_discovery_control, norm
        from sklearn.metrics import log_loss

        events, p = self._events()
        events["p"] = p
        table = self._slice_table(out, "country").set_index("country")
        for country, g in events.groupby("country"):
            want = log_loss(g["clicked"], g["p"], sample_weight=g["weight"], labels=[0, 1])
            assert table.loc[country, "bce"] == pytest.approx(want, rel=1e-9), country
        # Benjamini–Hochberg on the logged figures, by scipy: the slices it rejects are the failed ones
        rejected = false_discovery_control(norm.sf((table["bce"] - 0.6) / table["bce_se"]), method="bh") <= 0.05
        assert set(table.index[rejected]) == set(table.index[table["verdict"] == "failed"])
        assert code == (3 if rejected.any() else 0), err

    def late(self, code: int, out: str, err: str) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss

        assert code == 0, err
        days = pl.read_parquet(self.root / "data" / "late", hive_schema={"day": pl.String}).to_pandas()
        known = days[days["clicked"].notna()]
        model = LogisticRegression().fit(known[["a", "b"]].to_numpy(), known["clicked"].astype(int))
        days["p"] = model.predict_proba(days[["a", "b"]].to_numpy())[:, 1]
        metrics = self.run_of(out).data.metrics
        for day, g in days.groupby("day"):
            labelled, late = g[g["clicked"].notna()], g[g["clicked"].isna()]
            key = metric_key_suffix({"day": day})
            if len(labelled):  # realized on the labelled rows only
                want = log_loss(labelled["clicked"].astype(int), labelled["p"], labels=[0, 1])
                assert metrics[f"bce_by_partition/{key}"] == pytest.approx(want, rel=1e-9), day
            else:
                assert f"bce_by_partition/{key}" not in metrics
            if len(late):  # estimated on the rest: mean H(p)
                p = late["p"].to_numpy()
                want = float(np.mean(-(p * np.log(p) + (1 - p) * np.log1p(-p))))
                assert metrics[f"estimated_bce_by_partition/{key}"] == pytest.approx(want, rel=1e-9), day
        assert metrics["n_unlabelled"] == days["clicked"].isna().sum()

    def gate(self, code: int, out: str, err: str) -> None:
        # exactly the regions with >= 100 rows whose whole 95% interval is above 0.65 fail
        expected = set()
        for (region,), part in (
            self.demo.with_columns(pl.Series("p", self.fit_p)).partition_by("region", as_dict=True).items()
        ):
            losses = _losses(part.get_column("p").to_numpy(), part.get_column("label").to_numpy())
            if len(losses) >= 100 and losses.mean() - Z * losses.std(ddof=1) / math.sqrt(len(losses)) > 0.65:
                expected.add(f"region={region}")
        assert code == (3 if expected else 0), err
        run = self.run_of(out)
        assert set(filter(None, run.data.tags.get("quality_gate.partitions", "").split(","))) == expected

    def any_figure(self, code: int, out: str, err: str) -> None:
        from sklearn.metrics import brier_score_loss, roc_auc_score

        # the regions whose ROC AUC (by scikit-learn, on the champion's probabilities) is below 0.7 fail;
        # a single-class region has none and is not judged; the overall Brier score decides the other gate
        frame = self.demo.with_columns(pl.Series("p", self.fit_p))
        low_auc = {
            f"region={region}"
            for (region,), part in frame.partition_by("region", as_dict=True).items()
            if part.get_column("label").n_unique() == 2
            and roc_auc_score(part.get_column("label").to_numpy(), part.get_column("p").to_numpy()) < 0.7
        }
        brier_fails = brier_score_loss(self.y, self.fit_p) > 0.25
        assert code == (3 if low_auc or brier_fails else 0), err
        tags = self.run_of(out).data.tags
        assert set(filter(None, tags.get("quality_gate.partitions", "").split(","))) == low_auc
        assert ("overall brier" in tags.get("quality_gate.failures", "")) == brier_fails

    def regression(self, code: int, out: str, err: str) -> None:
        # the latest earlier run of this evaluation is the gate's: the same model, so no regression
        assert code == 0, err
        assert self.run_of(out).data.tags["quality_gate"] == "passed"

    def challenger(self, code: int, out: str, err: str) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss

        assert code == 0, err
        assert str(self.client.get_model_version_by_alias("churn", "champion").version) == "1"
        assert self.client.get_model_version("churn", "2").run_id == _run_id(out)
        p = LogisticRegression(C=0.05).fit(self.X, self.y).predict_proba(self.X)[:, 1]
        assert self.run_of(out).data.metrics["bce"] == pytest.approx(log_loss(self.y, p), rel=1e-9)
        self.challenger_p = p

    def compare(self, code: int, out: str, err: str) -> None:
        assert code == 0, err
        d = _losses(self.challenger_p, self.y) - _losses(self.fit_p, self.y)
        high = d.mean() + Z * d.std(ddof=1) / math.sqrt(len(d))
        metrics = self.run_of(out).data.metrics
        assert metrics["bce_diff"] == pytest.approx(d.mean(), rel=1e-9, abs=1e-12)
        promoted = high < -0.002
        assert ("promotion: done" in out) == promoted
        assert str(self.client.get_model_version_by_alias("churn", "champion").version) == ("2" if promoted else "1")

    def python_block(self, first_line: str, out: str) -> None:
        """The notebook API's BCE and table; MLflow's evaluate: bce-eval's BCE beside the default log_loss."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss

        if first_line == PY_API:
            events = pl.read_parquet(self.root / "data" / "events.parquet")
            X = events.select("a", "b").to_numpy()
            p = LogisticRegression().fit(X, events.get_column("clicked").to_numpy()).predict_proba(X)[:, 1]
            want = log_loss(events.get_column("clicked"), p, sample_weight=events.get_column("weight"))
            assert float(re.search(r"^BCE (\S+)", out, flags=re.M)[1]) == pytest.approx(want, abs=6e-7), out
            assert "shape: (3, 5)" in out, out
            return
        assert first_line == PY_MLFLOW
        bce, default_log_loss, clipped = (float(v) for v in out.split()[-3:])
        assert bce == pytest.approx(default_log_loss, rel=1e-12) and clipped == 0
        assert bce == pytest.approx(log_loss(self.y, self.fit_p), rel=1e-9)  # churn@champion is the README's fit

    def checks(self) -> dict[str, Callable[[int, str, str], None]]:
        return {
            FIT: self.fit,
            REGISTER: self.register,
            BY_ALIAS: self.by_alias,
            EXAMPLE_MODELS: self.example_models,
            **{command: self.flavour(name) for name, command in FLAVOURS.items()},
            FLAVOUR_COMPARE: self.flavour_compare,
            SCORED: self.scored,
            IN_FILE_KEYS: self.in_file_keys,
            CIRCLES: self.circles,
            SUBFLOW: self.subflow,
            SLICED: self.sliced,
            WEIGHTED: self.weighted,
            LATE: self.late,
            GATE: self.gate,
            ANY_FIGURE: self.any_figure,
            REGRESSION: self.regression,
            CHALLENGER: self.challenger,
            COMPARE: self.compare,
        }


def test_the_readme_walked_top_to_bottom_in_a_fresh_clone(prefect_server, mlflow_uri, fresh_clone, monkeypatch, capsys):
    import mlflow

    import flows.circles

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    # the circles' split is written under the clone's data/, as in a real clone
    monkeypatch.setattr(flows.circles, "DATA", fresh_clone / "data")
    client = mlflow.MlflowClient(mlflow_uri)
    assert not client.search_registered_models() and not client.search_runs(
        [e.experiment_id for e in client.search_experiments()]
    ), "the store is not fresh"
    walk = Walk(client, fresh_clone)
    checks = walk.checks()
    for command in readme_steps():
        if command in readme_python_blocks():  # a notebook's or a script's code: its own process, as written
            env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}
            proc = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, env=env, timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
            walk.python_block(command.splitlines()[0], proc.stdout)
            continue
        if command not in checks:
            continue
        if command.startswith("python "):  # a user's own script: its own process, as written
            env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}
            proc = subprocess.run(
                [sys.executable, *shlex.split(command)[1:]], capture_output=True, text=True, env=env, timeout=600
            )
            checks[command](proc.returncode, proc.stdout, proc.stderr.strip().splitlines()[-1] if proc.stderr else "")
            continue
        code, out, err = run_cli(shlex.split(command)[1:], capsys)
        checks[command](code, out, err[-1] if err else "")


def test_activate_puts_bce_eval_on_the_path():
    # `make demo` makes the venv; its activate script puts the bce-eval script on PATH
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "activate").exists() and (venv_bin / "bce-eval").exists()
    shell = subprocess.run(
        ["sh", "-c", f". {venv_bin / 'activate'} && command -v bce-eval"], capture_output=True, text=True, timeout=30
    )
    assert shell.returncode == 0 and Path(shell.stdout.strip()) == venv_bin / "bce-eval"


def test_help_shows_every_subcommand(capsys):
    from flows.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for sub in ("evaluate", "demo", "circles", "serve", "compare", "ui"):
        assert re.search(rf"^\s+{sub}\s", text, flags=re.M), sub


def test_ui_parses_and_binds_loopback():
    from flows.cli.main import build_parser

    args = build_parser().parse_args(shlex.split(UI)[1:])
    assert (args.command, args.host, args.port) == ("ui", "127.0.0.1", 5000)


def test_serve_parses_and_passes_its_preflight_on_the_shipped_data(mlflow_uri, monkeypatch):
    from flows.cli.main import _evaluate_settings, build_parser, check_serve

    monkeypatch.chdir(REPO)  # as written, from the repo root; the check only reads footers
    args = build_parser().parse_args(shlex.split(SERVE)[1:])
    assert (args.cron, args.name) == ("0 2 * * *", "nightly")
    settings = _evaluate_settings(args)
    assert settings.gates.max_partition_bce == 0.8
    n = pl.scan_parquet(REPO / "data" / "demo" / "**" / "*.parquet").select(pl.len()).collect().item()
    assert (
        check_serve(settings)
        == f"checked data/demo: {n:,} rows in 6 file(s), partitioned by region; label 'label', features f1,f2,f3"
    )


@pytest.mark.parametrize("command", sorted(MAKE))
def test_make_targets_exist_and_run_what_the_readme_says(command):
    dry = subprocess.run([*shlex.split(command), "-n"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert MAKE[command] in dry.stdout
