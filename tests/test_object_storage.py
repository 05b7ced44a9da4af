"""Data in an S3 bucket, served by a real S3-compatible server (moto's, in its own process, on loopback).

(A Dask cluster of processes reading the bucket is tested on the team stack: tests/test_team_stack.py.)

Discovery, footers, the scan and the cache read ``s3://`` exactly as they read local folders; the
figures equal the same files evaluated locally; a rewritten object is never served from the cache;
the credentials appear nowhere in the run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import polars as pl
import pytest

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tests.conftest import SECRET, make_frame, run_cli_in_process as run_cli, write_hive



def _fs():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


@pytest.fixture
def bucket(s3_env: str, request: pytest.FixtureRequest) -> str:
    name = "bce-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    fs = _fs()
    if not fs.exists(name):
        fs.mkdir(name)
    return name


def _upload(local: Path, url: str) -> None:
    fs = _fs()
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{url}/{path.relative_to(local).as_posix()}")


@pytest.fixture
def hive_tree(tmp_path: Path) -> Path:
    parts = {"north": make_frame(300, 1), "south": make_frame(200, 2, shift=0.5), "east": make_frame(150, 3, noise=0.3)}
    return write_hive(tmp_path / "hive", parts)


def _by_partition(ev) -> dict[str, float]:
    return {r["partition"]: r["bce"] for r in ev.table.iter_rows(named=True)}


def test_an_s3_hive_tree_equals_the_same_files_read_locally(prefect_server, mlflow_uri, bucket, hive_tree, tmp_path):
    _upload(hive_tree, f"s3://{bucket}/events")
    (tmp_path / "junk.txt").write_text("not parquet")
    _fs().put_file(str(tmp_path / "junk.txt"), f"s3://{bucket}/events/README.txt")  # clutter is skipped
    _fs().put_file(str(tmp_path / "junk.txt"), f"s3://{bucket}/events/_SUCCESS")
    local = evaluate_flow(EvaluateSettings(data=str(hive_tree), label="label", features=["a", "b", "c"], cache=False))
    remote = evaluate_flow(EvaluateSettings(data=f"s3://{bucket}/events", label="label", features=["a", "b", "c"], cache=False))
    assert remote.overall["n_rows"] == local.overall["n_rows"] == 650
    assert remote.overall["bce"] == pytest.approx(local.overall["bce"], rel=1e-12)
    assert _by_partition(remote).keys() == _by_partition(local).keys() == {"region=north", "region=south", "region=east"}
    for key, value in _by_partition(local).items():
        assert _by_partition(remote)[key] == pytest.approx(value, rel=1e-12)
    # a single object, and a prefix of plain files, the same way
    one = evaluate_flow(EvaluateSettings(data=f"s3://{bucket}/events/region=south/part-0.parquet", label="label", features=["a", "b", "c"], cache=False))
    same = evaluate_flow(EvaluateSettings(data=str(hive_tree / "region=south" / "part-0.parquet"), label="label", features=["a", "b", "c"], cache=False))
    assert one.overall["n_rows"] == pl.read_parquet(hive_tree / "region=south" / "part-0.parquet").height
    assert one.overall["bce"] == pytest.approx(same.overall["bce"], rel=1e-12)


def test_a_rewritten_object_is_recomputed_not_served_from_the_cache(prefect_server, mlflow_uri, bucket, hive_tree, tmp_path):
    url = f"s3://{bucket}/nightly"
    _upload(hive_tree, url)
    model = evaluate_flow(EvaluateSettings(data=str(hive_tree), label="label", features=["a", "b", "c"], cache=False))
    settings = EvaluateSettings(data=url, label="label", model_uri=f"runs:/{model.run_id}/model")
    first, again = evaluate_flow(settings), evaluate_flow(settings)
    assert first.overall["partitions_computed"] == 3 and again.overall["partitions_reused"] == 3
    # the same key rewritten with other rows of the same size: a new ETag
    replacement = make_frame(200, 99, shift=0.5)
    path = tmp_path / "new.parquet"
    replacement.write_parquet(path)
    _fs().put_file(str(path), f"{url}/region=south/part-0.parquet")
    after = evaluate_flow(settings)
    assert after.overall["partitions_reused"] == 2 and after.overall["partitions_computed"] == 1
    shutil.copy(path, hive_tree / "region=south" / "part-0.parquet")
    fresh = evaluate_flow(settings.model_copy(update={"data": str(hive_tree), "cache": False}))
    assert after.overall["bce"] == pytest.approx(fresh.overall["bce"], rel=1e-12)


def test_credentials_appear_nowhere_and_a_missing_prefix_is_one_line(prefect_server, mlflow_uri, bucket, hive_tree, capsys):
    _upload(hive_tree, f"s3://{bucket}/data")
    code, out, err = run_cli(["evaluate", f"s3://{bucket}/data", "--label", "label", "--features", "a,b,c"], capsys)
    assert code == 0, err
    run = mlflow.MlflowClient().search_runs([mlflow.get_experiment_by_name("bce-evaluation").experiment_id])[0]
    recorded = " ".join([*run.data.params.values(), *run.data.tags.values(), out, *err])
    assert SECRET not in recorded and "bce-eval-test" not in recorded
    assert f"s3://{bucket}/data" in run.data.params.values() or any(f"s3://{bucket}/data" in v for v in run.data.params.values())
    code, out, err = run_cli(["evaluate", f"s3://{bucket}/nothing-here", "--label", "label", "--features", "a,b,c"], capsys)
    assert code == 2
    assert err[-1].startswith(f"bce-eval: error: s3://{bucket}/nothing-here: no such object or prefix")
