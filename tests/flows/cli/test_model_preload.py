"""The model loaded in a helper process (``flows.cli.model_preload``): a real child process, a real
MLflow store; what it hands back must score exactly as the model the flow loads itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from flows.cli import model_preload
from tasks.models.loading import load_model
from tasks.models.scoring import LinearModel
from tasks.tracking.adapter import resolve_tracking_uri
from tests.conftest import REPO

#: real processes (the CLI, servers, a terminal or a browser): part of make test, not make test-fast
pytestmark = pytest.mark.system

FEATURES = ["a", "b", "c"]


def _log(model, frame: pl.DataFrame, where: Path) -> str:
    X = frame.select(FEATURES).to_pandas()
    # artifacts in the test's own folder (a new store's default experiment would write to ./mlruns)
    experiment = mlflow.get_experiment_by_name("prefetch")
    eid = (
        experiment.experiment_id if experiment else mlflow.create_experiment("prefetch", (where / "artifacts").as_uri())
    )
    with mlflow.start_run(experiment_id=eid) as run:
        mlflow.sklearn.log_model(
            model.fit(X, frame.get_column("label").to_numpy()), name="model", input_example=X.head(3)
        )
    return f"runs:/{run.info.run_id}/model"


def _prefetched(uri: str, kind: str = "probability"):
    helper = model_preload.start_model_preload(uri, kind)
    try:
        return helper.take(uri, resolve_tracking_uri(), kind)
    finally:
        helper.stop()


def test_linear_model_from_the_helper_scores_exactly_as_loaded_here(mlflow_uri, hive_data, tmp_path):
    frame = pl.read_parquet(hive_data, hive_partitioning=True)
    uri = _log(LogisticRegression(C=0.5), frame, tmp_path)
    got = _prefetched(uri)
    assert got is not None and isinstance(got.model, LinearModel)
    here = load_model(uri, resolve_tracking_uri())  # no helper: MLflow's own loader in this process
    assert isinstance(here.model, LogisticRegression)
    mine, theirs = got.scorer(FEATURES), here.scorer(FEATURES)
    # the same cache key, run tags and description; the same scores to the last bit
    assert mine.identity == theirs.identity and mine.description == theirs.description
    assert got.tags(mine) == here.tags(theirs) and got.type_name == here.type_name == "LogisticRegression"
    assert got.inputs == here.inputs and got.digest == here.digest
    scores = mine.score_frame(frame)
    assert np.array_equal(scores, theirs.score_frame(frame))
    # independent: scikit-learn's own decision function
    assert np.allclose(scores, here.model.decision_function(frame.select(FEATURES).to_pandas()), rtol=1e-12, atol=1e-12)


def test_helper_result_is_used_only_for_what_was_asked(mlflow_uri, hive_data, tmp_path):
    uri = _log(LogisticRegression(), pl.read_parquet(hive_data, hive_partitioning=True), tmp_path)
    helper = model_preload.start_model_preload(uri, "probability")
    try:
        # another score kind (or URI, or store) than the helper loaded: the flow loads it itself
        assert helper.take(uri, resolve_tracking_uri(), "logit") is None
        assert helper.take(uri, resolve_tracking_uri(), "probability") is None  # once only
    finally:
        helper.stop()


def test_models_that_are_not_linear_are_left_to_the_flow(mlflow_uri, hive_data, tmp_path):
    uri = _log(GaussianNB(), pl.read_parquet(hive_data, hive_partitioning=True), tmp_path)
    assert _prefetched(uri) is None
    assert _prefetched("runs:/0123456789abcdef/model") is None  # cannot load: the flow says why, in its words


def test_a_process_given_the_helpers_model_never_imports_scikit_learn(mlflow_uri, hive_data, tmp_path):
    uri = _log(LogisticRegression(), pl.read_parquet(hive_data, hive_partitioning=True), tmp_path)
    script = f"""
import json, sys
import polars as pl
from flows.cli import model_preload
from flows.preloaded import load_model_preloaded_first, models_preloaded_by
from tasks.tracking.adapter import resolve_tracking_uri
from tests.conftest import REPO
from tests.conftest import REPO
helper = model_preload.start_model_preload({uri!r}, "probability")
with models_preloaded_by(helper):
    loaded = load_model_preloaded_first({uri!r}, resolve_tracking_uri(), "probability")
helper.stop()
scores = loaded.scorer({FEATURES!r}).score_frame(pl.read_parquet({str(hive_data)!r}, hive_partitioning=True))
imported = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "skops"))
print(json.dumps({{"sklearn": imported, "first": scores[:3].tolist()}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["sklearn"] == []
    here = load_model(uri, resolve_tracking_uri())
    frame = pl.read_parquet(hive_data, hive_partitioning=True).head(3)
    assert seen["first"] == here.scorer(FEATURES).score_frame(frame).tolist()


def test_a_helper_that_dies_is_not_waited_for(mlflow_uri, hive_data, tmp_path):
    import time

    uri = _log(LogisticRegression(), pl.read_parquet(hive_data, hive_partitioning=True), tmp_path)
    helper = model_preload.start_model_preload(uri, "probability")
    try:
        helper.process.kill()  # killed before it wrote anything (out of memory, a crash)
        start = time.monotonic()
        assert helper.take(uri, resolve_tracking_uri(), "probability") is None
        assert time.monotonic() - start < 5  # its exit ends the wait, not the 30 s limit
    finally:
        helper.stop()


def test_a_cli_killed_after_the_helper_loaded_leaves_no_file(mlflow_uri, hive_data, tmp_path):
    # the model comes through the pipe: a CLI killed at any moment (a scheduler's SIGKILL) leaves
    # no pickle behind in the temporary folder, where each run once left one
    uri = _log(LogisticRegression(), pl.read_parquet(hive_data, hive_partitioning=True), tmp_path)
    temp = tmp_path / "tmp"
    temp.mkdir()
    script = f"""
import os, signal
from flows.cli import model_preload

helper = model_preload.start_model_preload({uri!r}, "probability")
print(helper.process.wait(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    env = {**os.environ, "TMPDIR": str(temp)}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == -9 and out.stdout.strip() == "0"  # the helper loaded it, then the CLI died
    assert list(temp.iterdir()) == []


def test_a_helper_cut_short_while_writing_is_not_used():
    import pickle

    data = pickle.dumps((("m", "t", "probability"), {}, None))
    for written in (b"", model_preload._SIZE.pack(len(data)) + data[:-1], data):  # nothing, cut, no length
        read_fd, write_fd = os.pipe()
        os.write(write_fd, written)
        os.close(write_fd)
        helper = model_preload.Helper(subprocess.Popen(["true"]), read_fd)
        assert helper.take("m", "t", "probability") is None
        helper.stop()


def test_relative_store_is_the_users_folder_not_the_repos(tmp_path, monkeypatch, hive_data):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///relative.db")  # as users often set it
    mlflow.set_tracking_uri("sqlite:///relative.db")
    try:
        uri = _log(LogisticRegression(), pl.read_parquet(hive_data, hive_partitioning=True), tmp_path)
        got = _prefetched(uri)
    finally:
        mlflow.set_tracking_uri(None)
    assert got is not None and isinstance(got.model, LinearModel)
    assert not (REPO / "relative.db").exists()


def test_an_alias_moved_after_the_helper_loaded_is_not_used(mlflow_uri, hive_data, tmp_path):
    frame = pl.read_parquet(hive_data, hive_partitioning=True)
    client = mlflow.MlflowClient()
    for c in (0.1, 10.0):
        version = mlflow.register_model(_log(LogisticRegression(C=c), frame, tmp_path), "churn").version
    client.set_registered_model_alias("churn", "champion", "1")
    uri = "models:/churn@champion"
    helper = model_preload.start_model_preload(uri, "probability")
    try:
        helper.process.wait(timeout=120)  # it loaded version 1
        client.set_registered_model_alias("churn", "champion", version)  # a promotion meanwhile
        assert helper.take(uri, resolve_tracking_uri(), "probability") is None
    finally:
        helper.stop()
    loaded = load_model(uri, resolve_tracking_uri())  # what the flow then loads: version 2's coefficients
    assert np.array_equal(loaded.model.coef_, mlflow.sklearn.load_model("models:/churn/2").coef_)


def test_the_helper_is_out_of_the_terminals_foreground_group(mlflow_uri, hive_data, tmp_path):
    # Ctrl-C in a terminal signals its whole foreground process group: the CLI's own session. The
    # helper has a session of its own: the key does not kill it under the CLI, which stops it itself
    uri = _log(LogisticRegression(), pl.read_parquet(hive_data, hive_partitioning=True), tmp_path)
    helper = model_preload.start_model_preload(uri, "probability")
    try:
        pid = helper.process.pid
        assert os.getsid(pid) == pid != os.getsid(0) and os.getpgid(pid) != os.getpgrp()
        assert helper.take(uri, resolve_tracking_uri(), "probability") is not None  # it still does its work
    finally:
        helper.stop()
    assert helper.process.poll() is not None  # stopped with the command


def test_the_flows_load_step_asks_the_preloading_source_once_and_only_within_its_block(mlflow_uri, hive_data, tmp_path):
    from flows.preloaded import load_model_preloaded_first, models_preloaded_by

    uri = _log(LogisticRegression(), pl.read_parquet(hive_data, hive_partitioning=True), tmp_path)
    helper = model_preload.start_model_preload(uri, "probability")
    try:
        with models_preloaded_by(helper):
            first = load_model_preloaded_first(uri, resolve_tracking_uri())
            second = load_model_preloaded_first(uri, resolve_tracking_uri())  # taken once: loaded here
        outside = load_model_preloaded_first(uri, resolve_tracking_uri())
    finally:
        helper.stop()
    assert isinstance(first.model, LinearModel)  # the helper's coefficients
    assert isinstance(second.model, LogisticRegression) and isinstance(outside.model, LogisticRegression)
    assert first.scorer(FEATURES).identity == second.scorer(FEATURES).identity == outside.scorer(FEATURES).identity
