"""The benchmark's slices-and-weights section (flows.bench.slices) on a small dataset: it prints its three
ratios with their targets, and the sliced figures it computed while timing equal a pandas and
scikit-learn computation on the same rows."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from flows.bench import slices as bench_slices
from flows.bench.run import _target_rows


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    """The section's printed output and its figures (the JSON line it prints), on 24,000 rows in 4 files."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("slices") / "d"
    bench_slices.write_sliced_dataset(root, 24_000, partitions=2, files_per_partition=2, seed=3)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = bench_slices.main(["--rows", "24000", "--repeats", "1", "--root", str(root)])
    assert code == 0
    text = out.getvalue()
    line = next(ln for ln in text.splitlines() if ln.startswith("  {"))
    return root, text, json.loads(line)


def _frame(root) -> pd.DataFrame:
    df = pd.read_parquet(root)
    df["p"] = 1.0 / (1.0 + np.exp(-df["z"].to_numpy()))
    return df


def test_the_section_prints_its_three_ratios_with_numbers_and_targets(section):
    _, text, results = section
    for name, num, _, target in bench_slices.RATIOS:
        line = next((ln for ln in text.splitlines() if ln.strip().startswith(name)), None)
        assert line is not None, f"no line for {name!r} in:\n{text}"
        m = re.search(r"\s(\d+\.\d\d)x\s+<= (\d+\.\d\d)x\s+(holds|SHORT)$", line)
        assert m, line
        assert m[1] == f"{results['ratios'][num]:.2f}"  # the printed ratio is the measured one, rounded
        assert float(m[2]) == target
        assert (m[3] == "holds") == (results["ratios"][num] <= target)
    assert re.search(r"sliced pass \(region\) / plain pass.*\s\d+\.\d\dx", text)
    # the same rows in make bench's one table
    measures = [m for m, *_ in _target_rows({"slices": results})]
    assert all(any(m.startswith(name) for m in measures) for name, *_ in bench_slices.RATIOS)


def test_every_contender_covers_every_row_and_slice(section):
    root, _, results = section
    assert results["rows"] == 24_000 and results["files"] == 4
    assert results["slices"]["four"] == {"region": 8, "country": 25, "region_x_country": 200}
    assert list(results["slices"]["thousand"].values()) == [1000]
    assert list(results["slices"]["ten"].values()) == [10]
    assert results["max_rel_diff_unweighted"] <= 1e-12
    df = _frame(root)
    # the overall BCE of the plain pass, and of the weighted one, against scikit-learn on every row
    assert results["bce"]["plain"] == pytest.approx(log_loss(df["label"], df["p"]), rel=1e-12)
    assert results["bce"]["weighted"] == pytest.approx(log_loss(df["label"], df["p"], sample_weight=df["w"]), rel=1e-12)


def test_the_timed_weighted_slice_equals_pandas_and_sklearn(section):
    root, _, results = section
    got = results["first_slice"]["weighted"]
    assert got["slice"] == "region=region0"
    sub = _frame(root).query("region == 'region0'")
    assert got["n_rows"] == len(sub)
    assert got["sum_w"] == pytest.approx(sub["w"].sum(), rel=1e-12)
    assert got["bce"] == pytest.approx(log_loss(sub["label"], sub["p"], sample_weight=sub["w"]), rel=1e-12)
    exact = roc_auc_score(sub["label"], sub["p"], sample_weight=sub["w"])
    assert abs(got["roc_auc"] - exact) <= got["roc_auc_bound"] + 1e-12


def test_the_timed_slice_of_the_1000_slice_cross_equals_pandas_and_sklearn(section):
    root, _, results = section
    got = results["first_slice"]["thousand"]
    assert got["slice"].endswith("=< 20 × country=c00") and got["slice"].startswith("age[20,22,")
    sub = _frame(root).query("age < 20 and country == 'c00'")
    assert len(sub) > 0 and got["n_rows"] == len(sub) and got["sum_w"] == len(sub)
    assert got["bce"] == pytest.approx(log_loss(sub["label"], sub["p"], labels=[0, 1]), rel=1e-12)
    exact = roc_auc_score(sub["label"], sub["p"])
    assert abs(got["roc_auc"] - exact) <= got["roc_auc_bound"] + 1e-12
