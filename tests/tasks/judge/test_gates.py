"""Gates that know their uncertainty: interval-based verdicts, too-small partitions."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tasks.judge.gates import GateSettings, check_gates
from tests.conftest import run_cli_in_process as run_cli
from tests.conftest import write_hive


def _scored(n: int, losses: np.ndarray) -> pl.DataFrame:
    # label 1 everywhere, stored probability p = exp(-loss): each row's BCE is exactly its loss
    return pl.DataFrame({"y": np.ones(n, dtype=np.int64), "p": np.exp(-losses), "x": np.zeros(n)})


def test_small_partition_over_by_chance_passes_large_truly_worse_fails(prefect_server, mlflow_uri, tmp_path):
    rng = np.random.default_rng(5)
    threshold = 0.7
    small = np.concatenate([np.full(27, 0.3), np.full(3, 5.1)])  # mean 0.78 > 0.7, from 3 bad rows of 30
    large = rng.normal(0.8, 0.05, size=5000).clip(0.01)  # truly above 0.7
    good = rng.normal(0.5, 0.05, size=2000).clip(0.01)
    tiny = rng.exponential(3.0, size=5)
    root = write_hive(
        tmp_path / "scored",
        {
            "small": _scored(30, small),
            "large": _scored(5000, large),
            "good": _scored(2000, good),
            "tiny": _scored(5, tiny),
        },
        key="seg",
    )
    gates = GateSettings(max_partition_bce=threshold, min_rows=10)
    state = evaluate_flow(
        EvaluateSettings(data=str(root), label="y", score_col="p", score_kind="probability", gates=gates),
        return_state=True,
    )
    assert state.is_failed() and "seg=large" in state.message and "seg=small" not in state.message
    ev = state.result(raise_on_failure=False)
    assert not ev.gate_passed
    verdict = dict(zip(ev.table.get_column("partition").to_list(), ev.table.get_column("verdict").to_list()))
    assert verdict == {"seg=small": "passed", "seg=large": "failed", "seg=good": "passed", "seg=tiny": "too small"}
    row = ev.table.filter(pl.col("seg") == "small").row(0, named=True)
    assert row["bce"] > threshold > row["bce_low"]  # over the threshold, but not surely
    # the interval is the normal approximation on the per-row losses, computed independently here
    se = np.std(small, ddof=1) / math.sqrt(len(small))  # sample variance
    assert row["bce_low"] == pytest.approx(np.mean(small) - 1.959963984540054 * se, rel=1e-9)
    # judged on the point value instead, the small partition fails too
    point = check_gates(ev.table, ev.overall, GateSettings(max_partition_bce=threshold, min_rows=10, judge_on="point"))
    assert set(point.partitions) == {"seg=small", "seg=large"}
    _check_forest_plot(ev, threshold, verdict)


def _check_forest_plot(ev, threshold: float, verdict: dict[str, str]) -> None:
    """The forest plot as the flow draws it: the gate's bound as a line, each partition's marker in its verdict's
    colour."""
    from matplotlib.colors import to_hex

    from tasks.review.plots import VERDICT_COLORS, make_figures

    fig = make_figures(ev.rows, ev.table, ev.overall["bce"], (), None, True, ev.overall["n_rows"], threshold)[
        "plots/bce_by_partition.png"
    ]
    ax = fig.axes[0]
    vertical = {
        to_hex(line.get_color()): line.get_xdata()[0]
        for line in ax.lines
        if len(set(line.get_xdata())) == 1 and list(line.get_ydata()) == [0, 1]
    }
    assert vertical == {to_hex(VERDICT_COLORS["failed"]): threshold, to_hex("k"): ev.overall["bce"]}
    at = {t.get_text().split()[0]: t.get_position()[1] for t in ax.get_yticklabels()}
    markers = {}
    for line in ax.lines:
        if line.get_marker() == "o":
            markers.update(
                {y: (x, to_hex(line.get_markerfacecolor())) for x, y in zip(line.get_xdata(), line.get_ydata())}
            )
    bce = dict(zip(ev.table["partition"], ev.table["bce"]))
    for partition, y in at.items():
        x, colour = markers[y]
        assert x == pytest.approx(bce[partition]) and colour == to_hex(VERDICT_COLORS[verdict[partition]]), partition
    # the failed partition is not the one drawn furthest right (the too-small one is): the colour says which failed
    assert max(bce, key=bce.get) == "seg=tiny" and verdict["seg=tiny"] == "too small"
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert (
        "failed: 1" in texts
        and "too small (not judged): 1" in texts
        and any(t.startswith(f"gate bound {threshold:g}") for t in texts)
    )


def test_min_class_rows_marks_one_sided_partitions_too_small():
    table = pl.DataFrame(
        {
            "partition": ["a", "b"],
            "n_rows": [500, 500],
            "n_pos": [2, 250],
            "bce": [0.9, 0.9],
            "bce_se": [0.01, 0.01],
            "bce_low": [0.88, 0.88],
            "bce_high": [0.92, 0.92],
        }
    )
    result = check_gates(table, {"bce": 0.9}, GateSettings(max_partition_bce=0.5, min_class_rows=10))
    assert result.verdicts == {"a": "too small", "b": "failed"}


def test_regression_gate_against_a_baseline_model_uses_paired_differences(prefect_server, mlflow_uri, hive_data):
    import mlflow

    from flows.compare import compare_flow
    from flows.settings import CompareSettings

    good = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"]))
    weak = evaluate_flow(
        EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"], model_params={"C": 0.001})
    )
    base = dict(
        data=str(hive_data),
        label="label",
        champion=f"runs:/{good.run_id}/model",
        challenger=f"runs:/{weak.run_id}/model",
    )
    state = compare_flow(CompareSettings(**base, max_regression=0.0), return_state=True)
    assert state.is_failed() and re.search(r"challenger's BCE is higher by more than 0.0 .*overall", state.message)
    result = state.result(raise_on_failure=False)
    assert not result.gate_passed and result.regressions[0].startswith("overall")
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["quality_gate"] == "failed"
    # the paired interval of the overall difference, recomputed from the two runs' per-row losses
    df = pl.read_parquet(hive_data, hive_partitioning=True)
    X, y = df.select("a", "b", "c").to_numpy(), df.get_column("label").to_numpy()
    losses = []
    for ev in (good, weak):
        z = mlflow.sklearn.load_model(f"runs:/{ev.run_id}/model").decision_function(X)
        losses.append(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    d = losses[1] - losses[0]
    assert result.overall["bce_diff"] == pytest.approx(d.mean(), rel=1e-9)
    assert result.overall["bce_diff_low"] == pytest.approx(
        d.mean() - 1.959963984540054 * d.std(ddof=1) / math.sqrt(len(d)), rel=1e-9
    )
    # a generous allowance passes
    ok = compare_flow(CompareSettings(**base, max_regression=1.0))
    assert ok.gate_passed and ok.overall["bce_diff"] > 0
    # the report says only what it has: no row-level figures, no shaded rows (no verdict is "failed")
    doc = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="report.html")).read_text()
    assert "failed" not in set(result.table["verdict"]) and "shaded" not in doc and "Row-level" not in doc
    assert "paired 95% normal intervals" in doc and "The table and the figures use every row." in doc
    # its legend sits below the axes, over no whisker
    from tasks.review.plots import plot_paired_differences

    fig = plot_paired_differences(result.table, "partition", result.overall)
    fig.canvas.draw()
    legend, axes = fig.legends[0].get_window_extent(), fig.axes[0].get_window_extent()
    assert legend.y1 <= axes.y0 and not fig.axes[0].get_legend()


def test_baseline_key_columns_are_what_the_logged_table_holds_besides_values():
    from tasks.review.results import baseline_key_columns, table_columns
    from tasks.review.run_content import table_for_mlflow

    values = {c: [0.5] for c in table_columns() if c not in {"verdict", "note"}} | {"verdict": ["passed"], "note": [""]}
    keyed = pl.DataFrame({"region": ["north"], "day": ["2026-11-24"], **values})
    assert baseline_key_columns(list(table_for_mlflow(keyed, ("region", "day")))) == ["region", "day"]
    whole = pl.DataFrame({"partition": ["all"], **values})
    assert baseline_key_columns(list(table_for_mlflow(whole, ()))) == ["partition"]


@pytest.fixture
def cli(prefect_server, mlflow_uri, monkeypatch, capsys):
    """``bce-eval ARGS`` in this process: (exit code, stdout, non-empty stderr lines)."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    return lambda args: run_cli(args, capsys)


def test_regression_gate_against_a_baseline_run_fails_only_the_partition_that_regressed(
    cli, mlflow_uri, hive_data, tmp_path
):
    import json
    import shutil

    import mlflow
    from sklearn.metrics import log_loss

    code, out, err = cli(["evaluate", str(hive_data), "--label", "label", "--features", "a,b,c"])
    assert code == 0, err
    base_id = out.split("MLflow run ")[1].split()[0]

    # the next version of the data: the same files, but 40% of the south region's labels flipped
    v2 = tmp_path / "v2"
    shutil.copytree(hive_data, v2)
    south = v2 / "region=south" / "part-0.parquet"
    df = pl.read_parquet(south)
    flip = np.random.default_rng(11).random(df.height) < 0.4
    df.with_columns(
        pl.Series("label", np.where(flip, 1 - df.get_column("label").to_numpy(), df.get_column("label").to_numpy()))
    ).write_parquet(south)

    model_uri = f"runs:/{base_id}/model"
    code, out, err = cli(
        [
            "evaluate",
            str(v2),
            "--label",
            "label",
            "--model-uri",
            model_uri,
            "--max-regression",
            "0.05",
            "--baseline-run",
            base_id,
        ]
    )
    assert code == 3, err
    run_id = out.split("MLflow run ")[1].split()[0]

    # per-partition BCE of both versions, independently: the logged model's probabilities and sklearn's log_loss
    model = mlflow.sklearn.load_model(model_uri)
    expected = {}
    for region in ("north", "south", "east", "west"):
        old = pl.read_parquet(hive_data / f"region={region}" / "part-0.parquet").to_pandas()
        new = pl.read_parquet(v2 / f"region={region}" / "part-0.parquet").to_pandas()
        p_old = model.predict_proba(old[["a", "b", "c"]].to_numpy())[:, 1]
        p_new = model.predict_proba(new[["a", "b", "c"]].to_numpy())[:, 1]
        expected[f"region={region}"] = log_loss(new["label"], p_new, labels=[0, 1]) - log_loss(
            old["label"], p_old, labels=[0, 1]
        )
    assert expected["region=south"] > 0.05 and all(v == 0 for k, v in expected.items() if k != "region=south")

    client = mlflow.MlflowClient(mlflow_uri)

    def table(rid: str) -> dict[str, dict]:
        doc = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=rid, artifact_path="bce_by_partition.json", tracking_uri=mlflow_uri
                )
            ).read_text()
        )
        return {f"region={r['region']}": r for r in (dict(zip(doc["columns"], row)) for row in doc["data"])}

    base, now = table(base_id), table(run_id)
    for part, delta in expected.items():
        assert now[part]["bce"] - base[part]["bce"] == pytest.approx(delta, rel=1e-9, abs=1e-12), part
    assert {p: r["verdict"] for p, r in now.items()} == {
        "region=north": "passed",
        "region=south": "failed",
        "region=east": "passed",
        "region=west": "passed",
    }
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["quality_gate"] == "failed"
    assert run.data.tags["quality_gate.partitions"] == "region=south"
    # seen in the run list (its name) and chartable over a series (a metric)
    assert run.info.run_name.startswith("gate FAILED · ") and run.data.metrics["quality_gate_passed"] == 0.0
    # the experiment opens in MLflow's model-training view, not its GenAI one
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert f"region=south (+{expected['region=south']:.4f})" in err[-1] and err[-1].startswith(
        "bce-eval: quality gate failed"
    )


# --- gates as data: every figure of the schema, through the CLI, decided by scikit-learn's value ---


def _sklearn_figures(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Each gateable figure of these rows, computed independently (scikit-learn, numpy)."""
    from sklearn.metrics import (
        accuracy_score,
        brier_score_loss,
        d2_brier_score,
        d2_log_loss_score,
        log_loss,
        roc_auc_score,
    )

    losses = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    se = losses.std(ddof=1) / math.sqrt(len(y))
    bce = log_loss(y, p, labels=[0, 1])
    return {
        "bce": bce,
        "bce_se": se,
        "bce_low": bce - 1.959963984540054 * se,
        "bce_high": bce + 1.959963984540054 * se,
        "positive_rate": float(y.mean()),
        "accuracy": accuracy_score(y, p > 0.5),
        "brier": brier_score_loss(y, p),
        "mean_predicted": float(p.mean()),
        "bce_pos": log_loss(y[y == 1], p[y == 1], labels=[0, 1]),
        "bce_neg": log_loss(y[y == 0], p[y == 0], labels=[0, 1]),
        "roc_auc": roc_auc_score(y, p),
        "d2_log_loss": d2_log_loss_score(y, p),
        "d2_brier": d2_brier_score(y, p),
        # He et al. 2014: BCE over the entropy of the base rate, by hand
        "normalized_entropy": bce / -(y.mean() * math.log(y.mean()) + (1 - y.mean()) * math.log(1 - y.mean())),
        **_numpy_calibration(y, p, losses),
        **_sklearn_decisions(y, p),
    }


def _sklearn_decisions(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The decision at p ≥ 0.5 by scikit-learn, and the recall at FPR ≤ 0.1 on the histogram's bin edges."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_curve

    tn, fp, fn, tp = confusion_matrix(y, p >= 0.5, labels=[0, 1]).ravel()
    precision, recall, f1, _ = precision_recall_fscore_support(y, p >= 0.5, average="binary")
    fpr, tpr, _ = roc_curve(y, np.minimum((p * 4096).astype(int), 4095))
    return dict(
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        precision=precision,
        recall=recall,
        f1=f1,
        fpr=fp / (fp + tn),
        recall_at_fpr=tpr[fpr <= 0.1].max(),
    )


def _numpy_calibration(y: np.ndarray, p: np.ndarray, losses: np.ndarray) -> dict[str, float]:
    """Expected BCE (mean H(p)), realized − expected with its interval, and ECE over 10 bins, by numpy."""
    entropy = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    excess = losses - entropy
    se = excess.std(ddof=1) / math.sqrt(len(y))
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(p[bins == b].sum() - y[bins == b].sum()) for b in range(10)) / len(y)
    # equal-mass bins on the 1/4096 grid: a score bin goes to ⌊10 · (rows in lower score bins) / rows⌋
    grid = np.minimum((p * 4096).astype(int), 4095)
    below = np.searchsorted(np.sort(grid), grid, side="left")  # rows in lower score bins
    mass = np.minimum(10 * below // len(y), 9)
    ece_mass = sum(abs(p[mass == b].sum() - y[mass == b].sum()) for b in range(10)) / len(y)
    return {
        "expected_bce": float(entropy.mean()),
        "calibration_gap": float(excess.mean()),
        "calibration_gap_low": float(excess.mean() - 1.959963984540054 * se),
        "calibration_gap_high": float(excess.mean() + 1.959963984540054 * se),
        "ece": float(ece),
        "ece_equal_mass": float(ece_mass),
    }


def test_any_figure_is_gated_overall_and_per_partition_and_scikit_learns_value_decides(cli, mlflow_uri, tmp_path):
    import mlflow

    from tasks.metrics.schema import gate_targets

    rng = np.random.default_rng(21)
    parts = {}
    for name, shift in (("a", 0.0), ("b", 0.8), ("c", -0.6)):
        x = rng.normal(size=3000)
        p = 1 / (1 + np.exp(-(1.5 * x + shift)))
        parts[name] = pl.DataFrame({"y": (rng.random(3000) < p).astype(np.int64), "p": p})
    root = write_hive(tmp_path / "scored", parts, key="seg")
    every = pl.concat(list(parts.values()))
    overall = _sklearn_figures(every["y"].to_numpy(), every["p"].to_numpy())
    per = {f"seg={k}": _sklearn_figures(v["y"].to_numpy(), v["p"].to_numpy()) for k, v in parts.items()}
    gated = [f for f in overall if f in gate_targets()]
    # every figure but the AUC's own bound, the costs' (none without --costs: tests/tasks/metrics/test_decisions.py)
    # and the estimate's (none when every label is known: tests/tasks/metrics/test_late_labels.py)
    estimated = {"estimated_bce", "estimated_bce_se", "estimated_bce_low", "estimated_bce_high"}
    costs = {"roc_auc_bound", "expected_cost", "best_threshold", "best_cost"}
    assert set(gate_targets()) - set(gated) == costs | estimated

    rules, overall_bounds, partition_bounds = [], {}, {}
    for f in gated:
        margin = 0.002 if f == "roc_auc" else 1e-7  # the binned AUC is within its stated bound (< 0.002 here)
        # overall: one gate a hair on the passing side of scikit-learn's value, one a hair on the failing side
        overall_bounds[f] = float(overall[f] + margin)
        rules += [f"{f} <= {overall_bounds[f]!r} on point", f"{f} >= {overall_bounds[f]!r} on point"]
        # per partition: a bound between the best and the worst partition fails exactly the worse ones
        values = sorted(v[f] for v in per.values())
        partition_bounds[f] = float((values[0] + values[1]) / 2)
        rules.append(f"{f} <= {partition_bounds[f]!r} per partition on point")
    code, out, err = cli(
        ["evaluate", str(root), "--label", "y", "--score-col", "p", *sum((["--gate", r] for r in rules), [])]
    )
    assert code == 3, err
    tags = mlflow.MlflowClient(mlflow_uri).get_run(out.split("MLflow run ")[1].split()[0]).data.tags
    lines = tags["quality_gate.failures"].removeprefix("quality gate failed: ").split("; ")
    assert len(lines) == 2 * len(gated), lines  # per figure: the failing overall gate and the partition gate
    for f in gated:
        (overall_line,) = [ln for ln in lines if ln.startswith(f"overall {f} ")]
        assert overall_line.endswith(f"< {overall_bounds[f]:g}"), (
            overall_line
        )  # the ">=" gate failed, the "<=" one passed
        (line,) = [ln for ln in lines if f" with {f} above {partition_bounds[f]:g}" in ln]
        failed = {name.split(" (")[0] for name in line.split(": ", 1)[1].split(", ")}
        assert failed == {k for k, v in per.items() if v[f] > partition_bounds[f]}, line


def test_a_gate_names_its_figure_and_the_remedy_when_it_is_not_one(cli, hive_data):
    code, out, err = cli(
        ["evaluate", str(hive_data), "--label", "label", "--features", "a,b,c", "--gate", "auc >= 0.7 per partition"]
    )
    assert (
        code == 2
        and err[-1].startswith("bce-eval: error: --gate ")
        and "'auc' is not a figure" in err[-1]
        and "roc_auc" in err[-1]
    )


def test_a_misspelled_figure_gets_the_nearest_name_and_a_further_thresholds_figure_is_not_gated():
    from tasks.judge.gates import parse_gate

    with pytest.raises(ValueError, match=r"'ece_equalmass' is not a figure .*; did you mean 'ece_equal_mass'\?"):
        parse_gate("ece_equalmass <= 0.02 per partition")
    with pytest.raises(ValueError, match=r"'zzz' is not a figure of the metric schema; gate one of bce"):
        parse_gate("zzz >= 1")
    with pytest.raises(ValueError, match=r"further threshold \(at_<t>/…\) are reported, not gated"):
        parse_gate("at_0.3/recall >= 0.95")
