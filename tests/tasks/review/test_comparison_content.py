"""tasks/review/comparison_content.py: what a champion/challenger comparison's run holds, read back
from the table and overall figures it is given."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import polars as pl

from tasks.data.dataset import discover_dataset
from tasks.review.comparison_content import comparison_content
from tests.conftest import make_frame, write_hive

CHAMPION = {"model_uri": "models:/churn/1", "registered_name": "churn", "registered_version": "1"}
CHALLENGER = {"model_uri": "models:/churn/2", "registered_name": "churn", "registered_version": "2"}


def _comparison(tmp_path: Path):
    root = write_hive(tmp_path / "events", {r: make_frame(40, i) for i, r in enumerate(("east", "north", "south"))})
    dataset = discover_dataset(str(root), "label", ["a", "b", "c"])
    diff = np.array([-0.02, 0.001, 0.03])
    table = pl.DataFrame(
        {
            "region": ["east", "north", "south"],
            "partition": ["region=east", "region=north", "region=south"],
            "n_rows": [40, 40, 40],
            "bce_champion": [0.50, 0.40, 0.45],
            "bce_challenger": [0.48, 0.401, 0.48],
            "bce_diff": diff,
            "bce_diff_se": [0.005, 0.004, 0.006],
            "bce_diff_low": diff - 0.01,
            "bce_diff_high": diff + 0.01,
            "verdict": ["better", "no difference", "worse"],
        }
    )
    overall = {
        "bce_champion": 0.45,
        "bce_challenger": 0.4537,
        "bce_diff": 0.0037,
        "bce_diff_se": 0.003,
        "bce_diff_low": -0.0022,
        "bce_diff_high": 0.0096,
        "n_rows": 120,
        "verdict": "no significant difference",
    }
    return dataset, table, overall


def test_the_run_holds_the_paired_figures_both_models_and_the_decision(tmp_path: Path):
    dataset, table, overall = _comparison(tmp_path)
    content = comparison_content(
        dataset, table, overall, "bce-comparison", None, CHAMPION, CHALLENGER, "kept the champion", "fr-9", ("v1", "v2")
    )
    assert content.run_name == "events · v1 vs v2"
    assert content.metrics == {k: overall[k] for k in table.columns if k.startswith("bce_")}
    assert content.partition_metrics == {
        f"bce_diff_by_partition/region_{r}": d for r, d in zip(table["region"], table["bce_diff"])
    }
    assert content.tags == {
        **{f"champion.{k}": v for k, v in CHAMPION.items()},
        **{f"challenger.{k}": v for k, v in CHALLENGER.items()},
        "bce_eval.kind": "comparison",
        "comparison.verdict": "no significant difference",
        "comparison.decision": "kept the champion",
        "data_fingerprint": dataset.fingerprint,
        "prefect.flow_run_id": "fr-9",
    }
    assert content.params["data_path"] == os.path.abspath(dataset.root) and content.params["n_partitions"] == 3
    logged = content.tables["bce_comparison.json"]
    assert list(logged) == [c for c in table.columns if c not in ("partition", "bce_diff_se")]
    assert logged["bce_diff"] == table["bce_diff"].to_list()
    assert "**+0.00370** (95% CI [-0.00220, +0.00960]) over 120 rows: no significant difference." in content.description
    assert content.figures["plots/comparison_by_partition.png"].startswith(b"\x89PNG")
    report = content.text_artifacts["report.html"]
    assert "Champion vs challenger on events" in report and "Decision: kept the champion." in report
    assert len(re.findall(r"<tr[^>]*>", report.split("<tbody>")[1].split("</tbody>")[0])) == 3


def test_two_models_of_the_same_short_name_are_told_apart_by_their_uris(tmp_path: Path):
    dataset, table, overall = _comparison(tmp_path)
    args = (dataset, table, overall, "bce-comparison")
    same = comparison_content(*args, None, CHAMPION, CHALLENGER, "kept", "fr", ("LogisticRegression",) * 2)
    assert same.run_name == "events · models:/churn/1 vs models:/churn/2"
    assert comparison_content(*args, "mine", CHAMPION, CHALLENGER, "kept", "fr").run_name == "mine"
