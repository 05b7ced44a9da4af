"""Every way a file can change behind the cache: the incremental run equals a --full run to 1e-12.

Files are rewritten in ways that keep what a naive cache key looks at (path, size, mtime, even the
Parquet footer); each test checks which partitions were recomputed and that no figure is stale.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tasks.data import storage
from tasks.data.dataset import discover_dataset
from tasks.data.file_entry import FileEntry
from tasks.metrics import cache
from tests.conftest import REPO, make_frame

FIGURES = ("bce", "bce_se", "accuracy", "brier", "mean_predicted", "roc_auc", "roc_auc_bound")


def _write_plain(path: Path, seed: int, n: int = 200) -> None:
    """A Parquet file whose footer does not depend on its values (no statistics, no compression)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = make_frame(n, seed).to_arrow()
    pq.write_table(table, path, compression="none", use_dictionary=False, write_statistics=False)


def _hive(root: Path) -> Path:
    for i, region in enumerate(["north", "south", "east", "west"]):
        _write_plain(root / f"region={region}" / "part-0.parquet", seed=10 + i)
    return root


def _rewrite_keeping_metadata(path: Path) -> None:
    """Change feature values in place: same size, same footer, mtime set back (like cp -p / touch -r)."""
    st = os.stat(path)
    footer_before = path.read_bytes()[-2000:]
    a = pq.read_table(path).column("a").to_numpy()
    data = bytearray(path.read_bytes())
    for value in a[:50]:  # move 50 rows' feature far away: their losses change a lot
        old = struct.pack("<d", value)
        at = data.find(old)
        assert at > 0
        data[at : at + 8] = struct.pack("<d", value + 3.0)
    with open(path, "r+b") as fh:  # in place: same inode
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert after.st_size == st.st_size and after.st_mtime_ns == st.st_mtime_ns and after.st_ino == st.st_ino
    assert path.read_bytes()[-2000:] == footer_before  # the footer could not tell


def _settings(root: Path, **kw) -> EvaluateSettings:
    return EvaluateSettings(data=str(root), label="label", **kw)


def _assert_same(inc, full) -> None:
    for key in FIGURES:
        assert inc.overall[key] == pytest.approx(full.overall[key], rel=1e-12, abs=1e-15), key
    assert inc.overall["n_rows"] == full.overall["n_rows"]
    assert inc.overall["n_partitions"] == full.overall["n_partitions"]
    a, b = inc.table.sort("region"), full.table.sort("region")
    assert a.get_column("region").to_list() == b.get_column("region").to_list()
    for col in ("n_rows", "bce", "accuracy", "brier", "roc_auc"):
        np.testing.assert_allclose(
            a.get_column(col).to_numpy().astype(float), b.get_column(col).to_numpy().astype(float), rtol=1e-12
        )


@pytest.fixture
def fitted(prefect_server, mlflow_uri, tmp_path: Path):
    """A hive dataset, its first (caching) evaluation, and the URI of the model it fitted."""
    root = _hive(tmp_path / "data")
    first = evaluate_flow(_settings(root, features=["a", "b", "c"]))
    assert first.overall["partitions_computed"] == 4
    return root, f"runs:/{first.run_id}/model", first


def _incremental_and_full(root: Path, uri: str, **kw):
    inc = evaluate_flow(_settings(root, model_uri=uri, **kw))
    full = evaluate_flow(_settings(root, model_uri=uri, full=True, **kw))
    _assert_same(inc, full)
    return inc, full


def test_rewrite_with_same_size_mtime_and_footer_is_recomputed(fitted):
    root, uri, first = fitted
    _rewrite_keeping_metadata(root / "region=south" / "part-0.parquet")
    inc, full = _incremental_and_full(root, uri)
    assert inc.overall["partitions_reused"] == 3 and inc.overall["partitions_computed"] == 1
    assert inc.overall["bce"] != first.overall["bce"]  # the change is visible, not served stale


def test_file_replaced_by_rename_is_recomputed(fitted, tmp_path: Path):
    root, uri, _ = fitted
    target = root / "region=east" / "part-0.parquet"
    st = os.stat(target)
    new = tmp_path / "incoming.parquet"
    _write_plain(new, seed=99)  # same row count, schema and options: same size
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, target)  # mv over it
    inc, _ = _incremental_and_full(root, uri)
    assert inc.overall["partitions_reused"] == 3 and inc.overall["partitions_computed"] == 1


def test_deleted_partition_is_not_counted(fitted):
    root, uri, first = fitted
    shutil.rmtree(root / "region=west")
    inc, full = _incremental_and_full(root, uri)
    assert inc.overall["partitions_reused"] == 3 and inc.overall["partitions_computed"] == 0
    assert inc.overall["n_partitions"] == 3 and "west" not in inc.table.get_column("region").to_list()
    assert inc.overall["n_rows"] == first.overall["n_rows"] - 200


def test_file_added_to_a_partition_is_recomputed(fitted):
    root, uri, _ = fitted
    _write_plain(root / "region=north" / "part-1.parquet", seed=77, n=90)
    inc, _ = _incremental_and_full(root, uri)
    assert inc.overall["partitions_reused"] == 3 and inc.overall["partitions_computed"] == 1
    north = inc.table.filter(inc.table.get_column("region") == "north")
    assert north.get_column("n_rows").item() == 290


def test_changed_model_recomputes_everything(fitted, tmp_path: Path):
    root, _, _ = fitted
    other = _hive(tmp_path / "other")
    for f in other.rglob("*.parquet"):  # a different model: fitted on flipped labels
        t = pq.read_table(f)
        pq.write_table(t.set_column(3, "label", pa.compute.subtract(1, t.column("label"))), f)
    second = evaluate_flow(_settings(other, features=["a", "b", "c"]))
    inc, _ = _incremental_and_full(root, f"runs:/{second.run_id}/model")
    assert inc.overall["partitions_reused"] == 0 and inc.overall["partitions_computed"] == 4


def test_changed_metric_code_recomputes_everything(fitted, tmp_path: Path, monkeypatch):
    root, uri, _ = fitted
    again = evaluate_flow(_settings(root, model_uri=uri))
    assert again.overall["partitions_reused"] == 4
    # the same code in another place, then one edit nobody versioned
    copy = tmp_path / "repo"
    shutil.copytree(cache.CODE_ROOT / "tasks", copy / "tasks")
    monkeypatch.setattr(cache, "CODE_ROOT", copy)
    assert cache.metric_code_identity() == cache.metric_code_identity(
        tuple(REPO / (m.replace(".", "/") + ".py") for m in cache._METRIC_MODULES)
    )
    with open(copy / "tasks" / "metrics" / "kernels.py", "a") as fh:
        fh.write("\n# a change to the metric code\n")
    inc, _ = _incremental_and_full(root, uri)
    assert inc.overall["partitions_reused"] == 0 and inc.overall["partitions_computed"] == 4


def _metadata_blind(monkeypatch) -> None:
    """A storage whose identity keeps only what a copy can keep (size and mtime): no inode, no ctime."""

    def entry(path, st):
        return FileEntry(path=path, size=st.st_size, identity=f"{st.st_size}:{st.st_mtime_ns}")

    monkeypatch.setattr(storage, "_local_entry", entry)


def test_verify_cache_recomputes_changed_bytes_that_metadata_hides(fitted, monkeypatch):
    root, uri, _ = fitted
    _metadata_blind(monkeypatch)
    # a verified run records each partition's byte hash
    verified = evaluate_flow(_settings(root, model_uri=uri, verify_cache=True))
    assert verified.overall["partitions_computed"] == 4  # cached without a hash before: recomputed
    again = evaluate_flow(_settings(root, model_uri=uri, verify_cache=True))
    assert again.overall["partitions_reused"] == 4  # same bytes: reused
    _rewrite_keeping_metadata(root / "region=north" / "part-0.parquet")
    # without verification a metadata-blind identity cannot see it; with it, only north is recomputed
    inc, full = _incremental_and_full(root, uri, verify_cache=True)
    assert inc.overall["partitions_reused"] == 3 and inc.overall["partitions_computed"] == 1


def test_identity_sees_ctime_and_inode(tmp_path: Path):
    f = tmp_path / "x.parquet"
    _write_plain(f, seed=1)
    one = discover_dataset(f, "label", ["a"]).files[0]
    _rewrite_keeping_metadata(f)
    two = discover_dataset(f, "label", ["a"]).files[0]
    assert one.fingerprint == two.fingerprint  # size and footer are the same ...
    assert one.identity != two.identity  # ... but ctime moved


def test_the_metric_identity_holds_every_metrics_module_its_modules_import():
    """A sum defined in a module the identity does not read (the calibration sums, once moved out of the schema)
    would let a cached record outlive a change of what it holds: every tasks.metrics module that a module of the
    identity imports, at the top or inside a function, is in it too."""
    import ast

    listed = set(cache._METRIC_MODULES)
    missing = set()
    for name in listed:
        tree = ast.parse((REPO / (name.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tasks.metrics."):
                missing |= {node.module} - listed
    assert not missing, f"metric modules the cache key does not read: {sorted(missing)}"
