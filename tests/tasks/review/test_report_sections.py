"""The report's calibration and decisions sections: where they are, what their tables hold, against numpy and
scikit-learn, per partition and per slice."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.metrics import confusion_matrix

from flows.api import evaluate
from tasks.review.report_sections import with_confidence


def _rows(n: int = 12_000, seed: int = 31) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(int)
    part = rng.choice(["p0", "p1", "p2"], n)
    scale = np.where(part == "p0", 2.5, np.where(part == "p1", 0.4, 1.0))  # over-, under-confident, calibrated
    return pd.DataFrame({"z": z * scale, "y": y, "part": part, "g": rng.choice(["a", "b"], n), "w": rng.gamma(2, 1, n)})


def _section(doc: str, heading: str) -> str:
    start = doc.index(f"<h2>{heading}</h2>")
    end = doc.find("<h2>", start + 1)
    return doc[start : end if end > 0 else len(doc)]


def _table(doc: str, caption: str) -> dict[str, dict[str, str]]:
    """The table under ``<h3>caption</h3>`` as {first cell: {header: exact value (data-v) or text}}."""
    part = doc[doc.index(f"<h3>{caption}</h3>") :]
    table = re.search(r"<table class=\"sortable\">(.*?)</table>", part, re.S).group(1)
    headers = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", table)]
    rows = {}
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table.split("<tbody>")[1], re.S):
        cells = [
            html.unescape(m.group(1) if m.group(1) is not None else re.sub(r"<[^>]+>", "", m.group(2)))
            for m in re.finditer(r"<td(?: data-v=\"([^\"]*)\")?>(.*?)</td>", tr, re.S)
        ]
        rows[cells[0]] = dict(zip(headers, cells))
    return rows


def test_the_calibration_section_holds_the_reliability_diagram_and_each_partitions_and_slices_gap_and_ece():
    rows = _rows()
    r = evaluate(
        rows, label="y", model="z", score_kind="logit", partition_by=["part"], slices=["g"], weights="w",
        decide={"costs": "fp=1,fn=4"},
    )  # fmt: skip
    doc = r.report_html
    calibration, figures = _section(doc, "Calibration"), _section(doc, "Figures")
    assert 'id="plots/reliability.png"' in calibration and 'id="plots/reliability.png"' not in figures
    assert doc.index("<h2>Figures</h2>") < doc.index("<h2>Calibration</h2>") < doc.index("<h2>Decisions</h2>")
    by_part = _table(calibration, "Calibration by partition")
    assert set(by_part) == {"part=p0", "part=p1", "part=p2"}
    for key, row in by_part.items():
        g = rows[rows["part"] == key.removeprefix("part=")]
        p, y, w = 1 / (1 + np.exp(-g["z"].to_numpy())), g["y"].to_numpy(), g["w"].to_numpy()
        loss = -(y * np.log(p) + (1 - y) * np.log1p(-p))
        entropy = -(p * np.log(p) + (1 - p) * np.log1p(-p))
        assert float(row["realized − expected"]) == pytest.approx(np.average(loss - entropy, weights=w), rel=1e-9)
        assert float(row["expected BCE"]) == pytest.approx(np.average(entropy, weights=w), rel=1e-12)
        low, high = float(row["gap 95% low"]), float(row["gap 95% high"])
        said = "over-confident" if low > 0 else "under-confident" if high < 0 else "within chance"
        assert row["the gap's interval says"] == said
        assert {"ECE (equal width)", "ECE (equal mass)"} <= row.keys()
    # the logits ×2.5 are over-confident, ×0.4 under-confident: the words say so
    words = {k.removeprefix("part="): v["the gap's interval says"] for k, v in by_part.items()}
    assert words["p0"] == "over-confident" and words["p1"] == "under-confident"
    by_slice = _table(calibration, "Calibration by slice of g")
    table = r.slices["g"]
    for label, row in by_slice.items():
        want = table.filter(pl.col("slice") == label).row(0, named=True)
        assert (
            float(row["ECE (equal mass)"]) == want["ece_equal_mass"] and float(row["ECE (equal width)"]) == want["ece"]
        )


def test_the_decisions_section_holds_the_cost_curve_and_each_slices_counts_equal_scikit_learn():
    rows = _rows(seed=32)
    r = evaluate(
        rows, label="y", model="z", score_kind="logit", partition_by=["part"], slices=["g"], weights="w",
        decide={"costs": "fp=1,fn=4", "also_at": 0.3},
    )  # fmt: skip
    decisions = _section(r.report_html, "Decisions")
    assert 'id="plots/cost_curve.png"' in decisions and "cost (fp=1, fn=4)" in decisions
    by_slice = _table(decisions, "Decisions by slice of g")
    assert len(by_slice) == 2
    for label, row in by_slice.items():
        g = rows[rows["g"] == label.split("=")[1]]
        pred = (1 / (1 + np.exp(-g["z"].to_numpy())) >= 0.5).astype(int)
        tn, fp, fn, tp = confusion_matrix(g["y"], pred, labels=[0, 1], sample_weight=g["w"]).ravel()
        got = [float(row[k]) for k in ("TP", "FP", "FN", "TN")]
        assert got == pytest.approx([tp, fp, fn, tn], rel=1e-12)
        # the further threshold, at its grid edge 1229/4096
        at = (1 / (1 + np.exp(-g["z"].to_numpy())) >= 1229 / 4096).astype(int)
        tn, fp, fn, tp = confusion_matrix(g["y"], at, labels=[0, 1], sample_weight=g["w"]).ravel()
        assert float(row["at 0.3/tp"]) == pytest.approx(tp, rel=1e-12) and float(row["at 0.3/fp"]) == pytest.approx(fp)
        assert {"precision", "recall", "F1", "FPR", "recall at FPR", "cost", "best t", "lowest cost"} <= row.keys()


def test_without_costs_the_decisions_tables_leave_the_cost_columns_out_and_confidence_is_null_without_interval():
    r = evaluate(_rows(n=3000, seed=33), label="y", model="z", score_kind="logit", partition_by=["part"])
    row = next(iter(_table(_section(r.report_html, "Decisions"), "Decisions by partition").values()))
    assert row["TP"].isdigit() and not {"cost", "best t", "lowest cost"} & row.keys()  # unweighted: whole counts
    t = pl.DataFrame({"calibration_gap_low": [0.1, -0.3, -0.2, None], "calibration_gap_high": [0.2, -0.1, 0.1, None]})
    assert with_confidence(t).get_column("confidence").to_list() == [
        "over-confident",
        "under-confident",
        "within chance",
        None,
    ]
