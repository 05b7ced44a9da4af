"""The report a reviewer opens (``report.html``), the sample behind the row-level figures, and the
run list's view of a gate: checked against the run's own table and an independent computation."""

from __future__ import annotations

import html
import re
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tests.conftest import make_frame


def _report(run_id: str) -> str:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="report.html")).read_text()


def _table_rows(doc: str) -> dict[str, dict[str, str]]:
    """The report's first table as {partition: {header: cell text}}."""
    table = re.search(r"<table class=\"sortable\">(.*?)</table>", doc, re.S).group(1)
    headers = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", table)]
    rows = {}
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table.split("<tbody>")[1], re.S):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        rows[cells[0]] = dict(zip(headers, cells))
    return rows


def test_the_report_holds_the_table_the_forest_plot_and_the_gate(prefect_server, mlflow_uri, hive_data):
    ev = evaluate_flow(
        EvaluateSettings(
            data=str(hive_data),
            label="label",
            features=["a", "b", "c"],
            gates={"max_partition_bce": 0.5, "min_rows": 50, "judge_on": "point"},
        ),
        return_state=True,
    ).result(raise_on_failure=False)
    doc = _report(ev.run_id)
    assert (
        doc.startswith("<!doctype html>")
        and "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", doc).split("<body>")[1]
    )
    rows = _table_rows(doc)
    # every partition, with the figures an independent computation gives
    frame = pl.read_parquet(hive_data, hive_partitioning=True)
    model = mlflow.sklearn.load_model(f"runs:/{ev.run_id}/model")
    from sklearn.metrics import log_loss

    for region in ("north", "south", "east", "west"):
        part = frame.filter(pl.col("region") == region)
        y = part["label"].to_numpy()
        expected = log_loss(y, model.predict_proba(part.select("a", "b", "c").to_numpy())[:, 1])
        row = rows[f"region={region}"]
        assert float(row["BCE"]) == pytest.approx(expected, abs=5e-5)
        assert int(row["rows"].replace(",", "")) == part.height
        assert float(row["positive rate"].rstrip("%")) / 100 == pytest.approx(y.mean(), abs=5e-4)
        assert float(row["95% low"]) < float(row["BCE"]) < float(row["95% high"])
        assert row["verdict"] == ("failed" if expected > 0.5 else "passed")
    failed = {p for p, r in rows.items() if r["verdict"] == "failed"}
    assert failed and doc.count('<tr class="failed">') == len(failed)
    assert 'id="plots/bce_by_partition.png"' in doc and "Forest plot" in doc  # the forest plot, embedded
    assert "quality gate failed" in doc and "all 750 rows" in doc  # the rows behind the figures, said
    # the run list shows the failure, and the series can chart it
    run = mlflow.MlflowClient().get_run(ev.run_id)
    assert run.info.run_name.startswith("gate FAILED · ") and run.data.metrics["quality_gate_passed"] == 0.0


def test_the_sample_is_exactly_its_size_uniform_across_partitions_and_seeded(tmp_path):
    from tasks.data.dataset import discover_dataset
    from tasks.models.scoring import stored_scorer
    from tasks.review.sample import describe_sample, sample_scores

    # partitions of very different sizes and file sizes: one large file; 100 files smaller than a
    # draw's rows; 10 files of a few hundred rows. Every row must have the same chance, k / N.
    layout = {"big": [20_000], "small": [20] * 100, "mid": [400] * 10}
    for i, (region, sizes) in enumerate(layout.items()):
        folder = tmp_path / "d" / f"region={region}"
        folder.mkdir(parents=True)
        for j, n in enumerate(sizes):
            make_frame(n, 100 * i + j).with_columns(pl.lit(0.5).alias("p_model")).write_parquet(
                folder / f"part-{j:03d}.parquet"
            )
    dataset = discover_dataset(str(tmp_path / "d"), "label", [], None, ["p_model"])
    scorer = stored_scorer("p_model", "probability")
    total, k, seeds = dataset.num_rows, 2000, 150
    rows = {region: sum(sizes) for region, sizes in layout.items()}
    assert total == sum(rows.values()) == 26_000
    first, again = (sample_scores(dataset, scorer, max_rows=k) for _ in range(2))
    assert first.equals(again)  # seeded: the same rows every time
    assert np.all(np.abs(first["loss"].to_numpy() - np.log(2)) < 1e-12)  # p = 0.5 everywhere: loss log 2
    shares = {region: [] for region in layout}
    for seed in range(seeds):
        sample = sample_scores(dataset, scorer, max_rows=k, seed=seed)
        assert sample.height == k  # exactly the size the figures say
        counts = dict(sample.group_by("region").len().iter_rows())
        for region in layout:
            shares[region].append(counts.get(region, 0) / k)
    # each partition's mean share over the seeds is its share of the rows, within 4 standard errors
    for region, got in shares.items():
        got = np.asarray(got)
        se = got.std(ddof=1) / np.sqrt(seeds)
        assert abs(got.mean() - rows[region] / total) < 4 * se + 1e-9, (region, got.mean(), rows[region] / total, se)
    assert (
        describe_sample(k, total)
        == f"a uniform random sample of {k:,} of {total:,} rows across all partitions (seed 0; at most {k:,} are drawn)"
    )


def test_the_table_marks_failed_rows_whatever_the_verdict_column_holds():
    from tasks.review.report import table_html

    table = pl.DataFrame(
        {"partition": ["a", "b", "c"], "bce": [0.5, float("nan"), None], "verdict": ["failed", None, "passed"]}
    )
    rows = re.findall(r"<tr[^>]*>.*?</tr>", table_html(table).split("<tbody>")[1])
    assert [r.startswith('<tr class="failed">') for r in rows] == [True, False, False]
    assert '<td data-v="0.5">0.5000</td>' in rows[0] and rows[1].count('<td data-v="">–</td>') == 2
    # a table with no rows has a verdict column of no type: an empty body, not an error
    empty = pl.DataFrame({"partition": pl.Series([], dtype=pl.String), "verdict": pl.Series([], dtype=pl.Null)})
    assert "<tbody></tbody>" in table_html(empty)


def test_a_figure_is_encoded_once_the_report_embeds_the_bytes_the_run_logs_outside_pyplot():
    import base64

    import pandas as pd

    from tasks.review.plots import plot_reliability
    from tasks.review.report import figure_png
    from tasks.tracking.content import encode_figures

    rng = np.random.default_rng(3)
    p = rng.random(2000)
    y = (rng.random(2000) < p**1.5).astype(np.float64)  # miscalibrated: the points leave the diagonal
    fig = plot_reliability(pl.DataFrame({"y": y, "p": p}), n_bins=10)
    # its points: each tenth of [0, 1)'s mean probability and positive rate, as pandas bins them
    bins = pd.DataFrame({"y": y, "p": p}).groupby(pd.cut(p, np.linspace(0, 1, 11), right=False), observed=True)
    np.testing.assert_allclose(fig.axes[0].lines[1].get_xydata(), bins[["p", "y"]].mean().to_numpy(), rtol=1e-12)
    embedded = base64.b64decode(figure_png(fig))
    assert embedded.startswith(b"\x89PNG\r\n\x1a\n")
    assert encode_figures({"plots/reliability.png": fig}) == {"plots/reliability.png": embedded}
    # drawn outside pyplot: nothing for matplotlib to keep open, and a notebook's backend is left as it was
    from matplotlib._pylab_helpers import Gcf

    assert not any(m.canvas.figure is fig for m in Gcf.get_all_fig_managers()) and getattr(fig, "number", None) is None
