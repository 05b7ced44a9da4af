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
from tests.conftest import SECRET, make_frame, write_hive
from tests.conftest import run_cli_in_process as run_cli


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
    remote = evaluate_flow(
        EvaluateSettings(data=f"s3://{bucket}/events", label="label", features=["a", "b", "c"], cache=False)
    )
    assert remote.overall["n_rows"] == local.overall["n_rows"] == 650
    assert remote.overall["bce"] == pytest.approx(local.overall["bce"], rel=1e-12)
    assert (
        _by_partition(remote).keys() == _by_partition(local).keys() == {"region=north", "region=south", "region=east"}
    )
    for key, value in _by_partition(local).items():
        assert _by_partition(remote)[key] == pytest.approx(value, rel=1e-12)
    # a single object, and a prefix of plain files, the same way
    one = evaluate_flow(
        EvaluateSettings(
            data=f"s3://{bucket}/events/region=south/part-0.parquet",
            label="label",
            features=["a", "b", "c"],
            cache=False,
        )
    )
    same = evaluate_flow(
        EvaluateSettings(
            data=str(hive_tree / "region=south" / "part-0.parquet"),
            label="label",
            features=["a", "b", "c"],
            cache=False,
        )
    )
    assert one.overall["n_rows"] == pl.read_parquet(hive_tree / "region=south" / "part-0.parquet").height
    assert one.overall["bce"] == pytest.approx(same.overall["bce"], rel=1e-12)


def test_a_rewritten_object_is_recomputed_not_served_from_the_cache(
    prefect_server, mlflow_uri, bucket, hive_tree, tmp_path
):
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


def test_credentials_appear_nowhere_and_a_missing_prefix_is_one_line(
    prefect_server, mlflow_uri, bucket, hive_tree, capsys
):
    _upload(hive_tree, f"s3://{bucket}/data")
    code, out, err = run_cli(["evaluate", f"s3://{bucket}/data", "--label", "label", "--features", "a,b,c"], capsys)
    assert code == 0, err
    run = mlflow.MlflowClient().search_runs([mlflow.get_experiment_by_name("bce-evaluation").experiment_id])[0]
    recorded = " ".join([*run.data.params.values(), *run.data.tags.values(), out, *err])
    assert SECRET not in recorded and "bce-eval-test" not in recorded
    assert f"s3://{bucket}/data" in run.data.params.values() or any(
        f"s3://{bucket}/data" in v for v in run.data.params.values()
    )
    code, out, err = run_cli(
        ["evaluate", f"s3://{bucket}/nothing-here", "--label", "label", "--features", "a,b,c"], capsys
    )
    assert code == 2
    assert err[-1].startswith(f"bce-eval: error: s3://{bucket}/nothing-here: no such object or prefix")


class _LatencyProxy:
    """A TCP proxy on loopback in front of the S3 server that holds each chunk a client sends for
    ``delay`` seconds (a network round trip, as from a region away), and records how many requests
    were in flight at once."""

    def __init__(self, target_port: int, delay: float) -> None:
        import asyncio
        import threading

        self.target_port, self.delay = target_port, delay
        self.in_flight = self.most_in_flight = 0
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            self.loop.run_forever()
            server.close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        started.wait(10)

    async def _handle(self, reader, writer) -> None:
        import asyncio

        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream() -> None:
            while data := await reader.read(65536):
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                await asyncio.sleep(self.delay)
                self.in_flight -= 1
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    def close(self) -> None:
        import asyncio

        async def end_connections() -> None:  # ended, not left pending when the loop stops
            handlers = asyncio.all_tasks() - {asyncio.current_task()}
            for handler in handlers:
                handler.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(end_connections(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_footers_and_verify_hashes_are_read_concurrently_and_equal_the_local_files(
    s3_env, bucket, tmp_path, monkeypatch
):
    """Discovery reads every object's footer, and ``--verify-cache`` hashes every object's bytes, in
    batches of concurrent requests: behind a 0.2 s round trip, 60 objects take far less than 60
    round trips, and the row counts, footer fingerprints and content hashes equal those of the same
    files read locally."""
    import time
    from urllib.parse import urlparse

    from tasks.data.dataset import content_hashes, discover_dataset, read_dataset_files
    from tasks.data.storage import storage_for

    parts = {f"p{i:02d}": make_frame(40 + i, i) for i in range(60)}
    local = write_hive(tmp_path / "many", parts)
    url = f"s3://{bucket}/many"
    _upload(local, url)
    # a round trip long against the machine's own noise: in one CI run, with the other test worker
    # busy, 60 concurrent requests through the proxy and moto's server took 2.7 s behind 50 ms
    proxy = _LatencyProxy(urlparse(s3_env).port, delay=0.2)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
        entries = storage_for(url).walk(url)  # the listing: a round trip or two
        t = time.perf_counter()
        tails = storage_for(url).read_tails(entries, 8192)
        elapsed = time.perf_counter() - t
        listing = read_dataset_files(url)
        remote = discover_dataset(url, "label", ["a", "b", "c"])
        t = time.perf_counter()
        remote_hashes = content_hashes(remote, remote.files)  # a footer and 4 column chunks an object
        hashing = time.perf_counter() - t
    finally:
        proxy.close()
    assert proxy.most_in_flight > 10, proxy.most_in_flight  # botocore's default pool is 10 connections
    assert elapsed < 0.5 * len(entries) * proxy.delay, elapsed  # one after another: at least 60 × 0.2 s
    assert hashing < 0.5 * 2 * len(entries) * proxy.delay, hashing  # before: two round trips an object
    here = discover_dataset(local, "label", ["a", "b", "c"])
    local_hashes = content_hashes(here, here.files)
    assert list(remote_hashes.values()) == list(local_hashes.values()) and len(set(local_hashes.values())) == 60
    assert [len(t) for t in tails] == [min(8192, e.size) for e in entries]
    expected = read_dataset_files(local)
    assert [f.num_rows for f in listing.files] == [f.num_rows for f in expected.files] == [40 + i for i in range(60)]
    assert [f.fingerprint for f in listing.files] == [f.fingerprint for f in expected.files]


def test_objects_are_listed_while_the_model_loads(prefect_server, mlflow_uri, s3_env, bucket, hive_tree, monkeypatch):
    """The listing and footers need no model: behind a 0.3 s round trip, the flow reads them while
    the model loads, and checks the columns once both are done."""
    from urllib.parse import urlparse

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    fitted = evaluate_flow(EvaluateSettings(data=str(hive_tree), label="label", features=["a", "b", "c"], cache=False))
    _upload(hive_tree, f"s3://{bucket}/events")
    proxy = _LatencyProxy(urlparse(s3_env).port, delay=0.3)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
        remote = evaluate_flow(
            EvaluateSettings(
                data=f"s3://{bucket}/events", label="label", model_uri=f"runs:/{fitted.run_id}/model", cache=False
            )
        )
    finally:
        proxy.close()
    assert _by_partition(remote) == pytest.approx(_by_partition(fitted), rel=1e-12)
    flow_run_id = mlflow.MlflowClient().get_run(remote.run_id).data.tags["prefect.flow_run_id"]
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    runs = {r.name.rsplit("-", 1)[0]: r for r in task_runs}
    listed, described, loaded = runs["list-files"], runs["describe-model"], runs["load-model"]
    # at least two round trips (the listing, then the footers): it overlaps the model's look-up and load
    assert listed.start_time < loaded.end_time and listed.end_time > described.start_time
    assert runs["check-dataset"].start_time >= max(listed.end_time, loaded.end_time)


def test_an_object_gone_between_listing_and_footer_is_one_clear_error(s3_env, bucket, hive_tree):
    from tasks.data.storage import storage_for
    from tasks.errors import InputError

    url = f"s3://{bucket}/gone"
    _upload(hive_tree, url)
    storage = storage_for(url)
    entries = storage.walk(url)
    _fs().rm(entries[1].path)
    with pytest.raises(InputError, match=f"{entries[1].path}: no such object or prefix"):
        storage.read_tails(entries, 8192)


# --- without a server: which backend a path gets, batches of hashed ranges, an unreachable store ---


def test_each_scheme_gets_its_backend_and_an_unknown_one_is_one_clear_line(monkeypatch):
    from tasks.data.object_storage import ObjectStorage
    from tasks.data.storage import LocalStorage, storage_for
    from tasks.errors import InputError

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert isinstance(storage_for("data/demo"), LocalStorage) and isinstance(storage_for("file:///tmp/x"), LocalStorage)
    for scheme in ("s3", "S3", "s3a", "gs", "gcs", "az", "abfs", "abfss"):
        storage = storage_for(f"{scheme}://bucket/events")
        assert isinstance(storage, ObjectStorage) and storage.scheme == scheme.lower()
    # Polars reaches a custom S3 endpoint only when told, over plain HTTP only when allowed; other stores: nothing
    assert storage_for("s3://b/k").storage_options == {
        "aws_endpoint_url": "http://127.0.0.1:9",
        "aws_allow_http": "true",
    }
    assert storage_for("gs://b/k").storage_options is None
    with pytest.raises(
        InputError, match=r"^ftp://host/x: ftp:// paths are not supported; pass a local path or an s3://"
    ):
        storage_for("ftp://host/x")


def test_hash_batches_keep_an_objects_ranges_together_and_stay_within_the_limit():
    from tasks.data.object_storage import _batches

    a, b, c, d, e = (
        ("a", [(0, 10), (50, 20)]),  # 30 bytes
        ("b", [(0, 50)]),
        ("c", [(0, 200)]),  # over the limit alone: a batch of its own
        ("d", [(0, 10)]),
        ("e", [(4, 60)]),
    )
    assert list(_batches([a, b, c, d, e], 100)) == [[a, b], [c], [d, e]]
    assert list(_batches([], 100)) == []


def test_a_store_that_does_not_answer_is_told_from_a_refusal_and_named_without_its_endpoint():
    from botocore.exceptions import EndpointConnectionError

    from tasks.data.object_storage import is_unreachable, storage_unavailable

    assert is_unreachable(EndpointConnectionError(endpoint_url="http://127.0.0.1:9/b"))
    assert is_unreachable(OSError("generic S3 error: error sending request for url (http://127.0.0.1:9/b/k)"))
    assert not is_unreachable(PermissionError("Access Denied"))
    assert not is_unreachable(FileNotFoundError("b/k"))
    message = str(storage_unavailable("s3://b/k", OSError("timed out after 3 retries: http://10.0.0.1:9000/b/k")))
    assert message.startswith("s3://b/k: the object store did not answer (no answer after 3 retries with backoff); ")
    assert "10.0.0.1" not in message
