"""The benchmark's figures section (flows.bench.figures) on a small dataset: it prints its ratio with its target,
the pass sums the same BCE with and without the figures, and the decision figure it computed while timing equals
scikit-learn's on the same rows."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_score

from flows.bench import figures as bench_figures
from flows.bench import slices as bench_slices
from flows.bench.run import _target_rows


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures") / "d"
    bench_slices.write_sliced_dataset(root, 24_000, partitions=2, files_per_partition=2, seed=4)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench_figures.main(["--rows", "24000", "--repeats", "1", "--root", str(root)]) == 0
    text = out.getvalue()
    return root, text, json.loads(next(ln for ln in text.splitlines() if ln.startswith("  {")))


def test_the_section_prints_its_ratio_with_its_target_and_the_same_bce_both_ways(section):
    _, text, results = section
    line = next(ln for ln in text.splitlines() if "the pass without them, from the files" in ln)
    m = re.search(r"\s(\d+\.\d\d)x\s+<= 1\.10x\s+(holds|SHORT)$", line)
    assert m and m[1] == f"{results['ratio']:.2f}"  # the printed ratio is the measured one, rounded
    assert (m[2] == "holds") == (results["ratio"] <= bench_figures.TARGET)
    b = results["bce"]
    assert results["rows"] == 24_000 and b["with"] == b["without"] and b["with in memory"] == b["without in memory"]
    assert any(m.startswith("calibration, late labels and decisions") for m, *_ in _target_rows({"figures": results}))


def test_the_bce_and_the_precision_it_timed_equal_numpy_and_scikit_learn(section):
    root, _, results = section
    df = pd.read_parquet(root)
    p = 1.0 / (1.0 + np.exp(-df["z"].to_numpy()))
    y = df["label"].to_numpy()
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    assert results["bce"]["with"] == pytest.approx(bce, rel=1e-12)
    assert results["precision"] == pytest.approx(precision_score(y, p >= 0.5), rel=1e-12)
