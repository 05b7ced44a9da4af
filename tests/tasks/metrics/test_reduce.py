"""tasks/metrics/reduce.py: per-partition sufficient statistics, merged, against scikit-learn."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import expit
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.naive_bayes import GaussianNB
from sklearn.tree import DecisionTreeClassifier

from tasks.data.dataset import Dataset, discover_dataset, group_files
from tasks.errors import InputError
from tasks.metrics.loss import compute_bce
from tasks.metrics.reduce import (
    finalize_table,
    merge_histograms,
    merge_records,
    overall_row,
    reduce_chunk,
    summarize_records,
)
from tasks.models.scoring import make_scorer, stored_scorer
from tests.conftest import make_frame, write_hive

FEATURES = ["a", "b", "c"]


# --- helpers ------------------------------------------------------------------------------------


def run(ds: Dataset, scorer, target_rows: int | None = None, exact_auc: bool = True):
    chunks = [list(ds.files)] if target_rows is None else group_files(ds, target_rows)
    records, hists = [], []
    for chunk in chunks:
        r, h = reduce_chunk(ds, scorer, chunk, exact_auc=exact_auc)
        records.append(r)
        hists.append(h)
    table, overall = summarize_records(records, hists, list(ds.partition_by))
    return table, overall, len(chunks)


def rows_by_partition(ds: Dataset, key: str = "region") -> dict[str, pl.DataFrame]:
    """The raw rows of each partition, read straight from the files (not through scan_files)."""
    out: dict[str, list[pl.DataFrame]] = {}
    for f in ds.files:
        out.setdefault(f.hive[key], []).append(pl.read_parquet(f.path))
    return {k: pl.concat(v) for k, v in out.items()}


def exact_logit_losses(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """-[y log σ(z) + (1-y) log(1-σ(z))] with math.log1p, row by row (independent of tasks.metrics.loss)."""

    def log_sigmoid(t: float) -> float:
        return -math.log1p(math.exp(-t)) if t >= 0 else t - math.log1p(math.exp(t))

    return np.array([-(yi * log_sigmoid(zi) + (1 - yi) * log_sigmoid(-zi)) for yi, zi in zip(y.tolist(), z.tolist())])


def table_row(table: pl.DataFrame, key: str, value: str) -> dict:
    rows = table.filter(pl.col(key) == value).to_dicts()
    assert len(rows) == 1, f"{value}: {len(rows)} rows"
    return rows[0]


def fitted_logistic(seed: int = 99, n: int = 600) -> LogisticRegression:
    df = make_frame(n, seed, noise=0.1)
    return LogisticRegression().fit(df.select(FEATURES).to_numpy(), df["label"].to_numpy())


# --- linear model (Polars expression path) --------------------------------------------------------


def test_linear_model_matches_sklearn_per_partition_and_overall(hive_data: Path):
    ds = discover_dataset(hive_data, "label", FEATURES)
    model = fitted_logistic()
    scorer = make_scorer(model, ds.features)
    assert scorer.expression is not None and scorer.kind == "logit"
    table, overall, _ = run(ds, scorer)

    parts = rows_by_partition(ds)
    assert sorted(table["region"].to_list()) == sorted(parts)
    all_y, all_p, all_z = [], [], []
    for region, df in parts.items():
        X = df.select(FEATURES).to_numpy()
        y = df["label"].to_numpy()
        p = model.predict_proba(X)[:, 1]
        z = model.decision_function(X)
        row = table_row(table, "region", region)
        assert row["n_rows"] == len(y) and row["n_pos"] == int(y.sum())
        assert row["bce"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9)
        assert row["bce_pos"] == pytest.approx(log_loss(y[y == 1], p[y == 1], labels=[0, 1]), rel=1e-9)
        assert row["bce_neg"] == pytest.approx(log_loss(y[y == 0], p[y == 0], labels=[0, 1]), rel=1e-9)
        assert row["accuracy"] == pytest.approx(accuracy_score(y, model.predict(X)), rel=1e-12)
        assert row["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-9)
        assert row["mean_predicted"] == pytest.approx(p.mean(), rel=1e-9)
        assert row["positive_rate"] == pytest.approx(y.mean(), rel=1e-15)
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        losses = exact_logit_losses(y, z)
        assert row["bce_se"] == pytest.approx(
            losses.std(ddof=1) / math.sqrt(len(y)), rel=1e-9
        )  # sample variance (tasks.metrics.schema.standard_error)
        assert row["note"] == ""
        all_y.append(y), all_p.append(p), all_z.append(z)

    y, p, z = np.concatenate(all_y), np.concatenate(all_p), np.concatenate(all_z)
    assert overall["n_rows"] == len(y) == 750 and overall["n_pos"] == int(y.sum())
    assert overall["n_partitions"] == 4
    assert overall["bce"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9)
    assert overall["accuracy"] == pytest.approx(accuracy_score(y, (z > 0).astype(int)), rel=1e-12)
    assert overall["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-9)
    losses = exact_logit_losses(y, z)
    assert overall["bce_se"] == pytest.approx(
        losses.std(ddof=1) / math.sqrt(len(y)), rel=1e-9
    )  # sample variance (tasks.metrics.schema.standard_error)
    # overall AUC from the histogram: within its stated bound of the exact one
    sk_auc = roc_auc_score(y, p)
    assert 0 <= overall["roc_auc_bound"] < 0.01
    assert abs(overall["roc_auc"] - sk_auc) <= overall["roc_auc_bound"] + 1e-12


def test_overall_bce_is_row_weighted_not_mean_of_means(hive_data: Path):
    ds = discover_dataset(hive_data, "label", FEATURES)
    table, overall, _ = run(ds, make_scorer(fitted_logistic(), ds.features))
    n = table["n_rows"].to_numpy().astype(float)
    bce = table["bce"].to_numpy()
    weighted = float((n * bce).sum() / n.sum())
    unweighted = float(bce.mean())
    assert overall["bce"] == pytest.approx(weighted, rel=1e-12)
    assert abs(weighted - unweighted) > 1e-4  # the fixture's partitions differ: the test can tell
    assert abs(overall["bce"] - unweighted) > 1e-4


def test_flat_dataset_without_partitions(tmp_path: Path):
    for i in range(3):
        make_frame(80, i).write_parquet(tmp_path / f"part-{i}.parquet")
    ds = discover_dataset(tmp_path, "label", FEATURES)
    model = fitted_logistic()
    table, overall, _ = run(ds, make_scorer(model, ds.features))
    df = pl.concat([pl.read_parquet(tmp_path / f"part-{i}.parquet") for i in range(3)])
    X, y = df.select(FEATURES).to_numpy(), df["label"].to_numpy()
    p = model.predict_proba(X)[:, 1]
    assert table.height == 1 and table["partition"].to_list() == ["all"]
    assert table["bce"][0] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9)
    assert table["roc_auc"][0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert overall["bce"] == pytest.approx(table["bce"][0], rel=1e-15)


def test_boolean_labels_in_reduce(tmp_path: Path):
    frames = {"x": make_frame(100, 5), "y": make_frame(60, 6)}
    root = write_hive(tmp_path / "d", {k: v.with_columns(pl.col("label").cast(pl.Boolean)) for k, v in frames.items()})
    ds = discover_dataset(root, "label", FEATURES)
    model = fitted_logistic()
    table, _, _ = run(ds, make_scorer(model, ds.features))
    for k, df in frames.items():
        p = model.predict_proba(df.select(FEATURES).to_numpy())[:, 1]
        assert table_row(table, "region", k)["bce"] == pytest.approx(
            log_loss(df["label"].to_numpy(), p, labels=[0, 1]), rel=1e-9
        )


# --- single-class partitions ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [0, 1])
def test_single_class_partition_gets_note_and_no_auc(tmp_path: Path, cls: int):
    solo = make_frame(40, 7).with_columns(pl.lit(cls, dtype=pl.Int64).alias("label"))
    root = write_hive(tmp_path / "d", {"mixed": make_frame(120, 8), "solo": solo})
    ds = discover_dataset(root, "label", FEATURES)
    model = fitted_logistic()
    table, overall, _ = run(ds, make_scorer(model, ds.features))
    row = table_row(table, "region", "solo")
    p = model.predict_proba(solo.select(FEATURES).to_numpy())[:, 1]
    y = solo["label"].to_numpy()
    assert row["note"] == f"single class (all {cls})"
    assert row["roc_auc"] is None
    assert math.isfinite(row["bce"])
    assert row["bce"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9)
    if cls == 0:
        assert row["bce_pos"] is None and row["bce_neg"] == pytest.approx(row["bce"], rel=1e-12)
    else:
        assert row["bce_neg"] is None and row["bce_pos"] == pytest.approx(row["bce"], rel=1e-12)
    assert table_row(table, "region", "mixed")["roc_auc"] is not None
    assert overall["roc_auc"] is not None  # both classes exist overall


# --- chunking invariance ----------------------------------------------------------------------------


def _many_partitions(root: Path) -> Path:
    sizes = {"a": [120, 30], "b": [50], "c": [40, 40, 20], "d": [90], "e": [15], "f": [60, 5]}
    seed = 10
    for region, ns in sizes.items():
        folder = root / f"region={region}"
        folder.mkdir(parents=True)
        for i, n in enumerate(ns):
            make_frame(n, seed, shift=0.3 * (seed % 3), noise=0.05 * (seed % 5)).write_parquet(
                folder / f"part-{i}.parquet"
            )
            seed += 1
    return root


NUMERIC = ["n_rows", "n_pos", "bce", "bce_se", "accuracy", "brier", "mean_predicted", "bce_pos", "bce_neg", "roc_auc"]


@pytest.mark.parametrize("target_rows", [1, 100, 160])
def test_chunking_invariance(tmp_path: Path, target_rows: int):
    ds = discover_dataset(_many_partitions(tmp_path / "d"), "label", FEATURES)
    scorer = make_scorer(fitted_logistic(), ds.features)
    one_table, one_overall, n1 = run(ds, scorer)
    table, overall, n = run(ds, scorer, target_rows=target_rows)
    assert n1 == 1 and n >= 3
    one_table, table = one_table.sort("region"), table.sort("region")
    assert table["region"].to_list() == one_table["region"].to_list()
    for col in NUMERIC:
        np.testing.assert_allclose(table[col].to_numpy(), one_table[col].to_numpy(), rtol=1e-12, atol=0, err_msg=col)
    for k, v in one_overall.items():
        if isinstance(v, float):
            assert overall[k] == pytest.approx(v, rel=1e-12, abs=1e-300), k
        elif isinstance(v, dict) and k == "reliability":  # lists of floats (a bin's Σ p: float sums)
            assert all(overall[k][name] == pytest.approx(x, rel=1e-12) for name, x in v.items()), k
        else:
            assert overall[k] == v, k


def test_records_of_one_partition_from_several_chunks_add_up(tmp_path: Path):
    """Reducing file by file splits partitions: the sums still add up; the AUC cannot and is None."""
    ds = discover_dataset(_many_partitions(tmp_path / "d"), "label", FEATURES)
    model = fitted_logistic()
    scorer = make_scorer(model, ds.features)
    one_table, one_overall, _ = run(ds, scorer)
    recs, hists = zip(*(reduce_chunk(ds, scorer, [f], exact_auc=True) for f in ds.files))
    merged = merge_records(recs, ["region"])
    table = finalize_table(merged).sort("region")
    one_table = one_table.sort("region")
    for col in ["n_rows", "n_pos", "bce", "accuracy", "brier"]:
        np.testing.assert_allclose(table[col].to_numpy(), one_table[col].to_numpy(), rtol=1e-12, err_msg=col)
    split = {f.hive["region"] for f in ds.files if sum(g.hive["region"] == f.hive["region"] for g in ds.files) > 1}
    assert split == {"a", "c", "f"}
    for row in table.to_dicts():
        if row["region"] in split:
            assert row["roc_auc"] is None
        else:
            assert row["roc_auc"] == pytest.approx(table_row(one_table, "region", row["region"])["roc_auc"], abs=1e-15)
    over = overall_row(merged, merge_histograms(hists))
    assert over["bce"] == pytest.approx(one_overall["bce"], rel=1e-12)
    assert over["roc_auc"] == pytest.approx(one_overall["roc_auc"], abs=1e-15)


def test_binned_auc_per_partition_is_within_its_bound(hive_data: Path):
    """The default AUC (no sort): per partition from its histogram, within the stated bound of sklearn's."""
    ds = discover_dataset(hive_data, "label", FEATURES)
    model = fitted_logistic()
    table, overall, _ = run(ds, make_scorer(model, ds.features), exact_auc=False)
    exact_table, exact_overall, _ = run(ds, make_scorer(model, ds.features), exact_auc=True)
    for region, df in rows_by_partition(ds).items():
        row = table_row(table, "region", region)
        exact = roc_auc_score(df["label"].to_numpy(), model.decision_function(df.select(FEATURES).to_numpy()))
        assert 0 < row["roc_auc_bound"] < 0.01
        assert abs(row["roc_auc"] - exact) <= row["roc_auc_bound"] + 1e-12
        assert table_row(exact_table, "region", region)["roc_auc_bound"] == 0.0
    # everything else is the same with or without the sort
    for col in ["n_rows", "bce", "bce_se", "accuracy", "brier"]:
        np.testing.assert_allclose(
            table.sort("region")[col].to_numpy(), exact_table.sort("region")[col].to_numpy(), rtol=1e-12, atol=0
        )
    assert overall["roc_auc"] == exact_overall["roc_auc"]


# --- non-linear classifiers (numpy path) ------------------------------------------------------------


@pytest.mark.parametrize(
    "make_model",
    [lambda: DecisionTreeClassifier(max_depth=5, random_state=0), GaussianNB],
    ids=["tree", "gaussian_nb"],
)
def test_probability_models_match_sklearn(hive_data: Path, make_model):
    ds = discover_dataset(hive_data, "label", FEATURES)
    train = make_frame(500, 42, noise=0.1)
    model = make_model().fit(train.select(FEATURES).to_numpy(), train["label"].to_numpy())
    scorer = make_scorer(model, ds.features)
    assert scorer.model is not None and scorer.kind == "probability"
    table, overall, _ = run(ds, scorer, target_rows=300)
    all_y, all_p = [], []
    for region, df in rows_by_partition(ds).items():
        X, y = df.select(FEATURES).to_numpy(), df["label"].to_numpy()
        p = model.predict_proba(X)[:, 1]
        row = table_row(table, "region", region)
        # same clip as sklearn; log1p(-p) vs log(1 - p) differ by rounding only
        assert row["bce"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-12, abs=1e-15)
        assert row["accuracy"] == pytest.approx(accuracy_score(y, model.predict(X)), rel=1e-12)
        assert row["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-12)
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        all_y.append(y), all_p.append(p)
    y, p = np.concatenate(all_y), np.concatenate(all_p)
    assert overall["bce"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-12, abs=1e-15)
    assert abs(overall["roc_auc"] - roc_auc_score(y, p)) <= overall["roc_auc_bound"] + 1e-12
    eps = np.finfo(float).eps
    assert overall["n_saturated"] == int(((p <= eps) | (p >= 1 - eps)).sum())


def test_decision_function_model_uses_exact_logits(hive_data: Path):
    ds = discover_dataset(hive_data, "label", FEATURES)
    train = make_frame(500, 43, noise=0.1)
    model = QuadraticDiscriminantAnalysis().fit(train.select(FEATURES).to_numpy(), train["label"].to_numpy())
    scorer = make_scorer(model, ds.features)
    assert scorer.model is not None and scorer.kind == "logit"
    table, overall, _ = run(ds, scorer)
    for region, df in rows_by_partition(ds).items():
        X, y = df.select(FEATURES).to_numpy(), df["label"].to_numpy()
        z = model.decision_function(X)
        p = model.predict_proba(X)[:, 1]
        row = table_row(table, "region", region)
        assert row["bce"] == pytest.approx(exact_logit_losses(y, z).mean(), rel=1e-12)
        assert row["bce"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9)
        assert row["accuracy"] == pytest.approx(accuracy_score(y, model.predict(X)), rel=1e-12)
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y, z), abs=1e-12)


# --- stored score columns ---------------------------------------------------------------------------


def _stored_scores(root: Path) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(5)
    parts = {}
    for region, n in {"x": 150, "y": 80, "z": 40}.items():
        y = rng.integers(0, 2, n)
        z = rng.normal(scale=8.0, size=n) + (2 * y - 1)
        z[:3] = [45.0, -45.0, 0.0]
        p = expit(rng.normal(scale=3.0, size=n) + (2 * y - 1))
        p[:4] = [0.0, 1.0, 0.5, 1e-20]
        parts[region] = pl.DataFrame({"label": y, "z_model": z, "p_model": p})
    write_hive(root, parts)
    return parts


def test_stored_probability_column(tmp_path: Path):
    parts = _stored_scores(tmp_path / "d")
    ds = discover_dataset(tmp_path / "d", "label", [], extra_columns=["p_model"])
    table, overall, _ = run(ds, stored_scorer("p_model", "probability"))
    for region, df in parts.items():
        y, p = df["label"].to_numpy(), df["p_model"].to_numpy()
        row = table_row(table, "region", region)
        assert row["bce"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-12, abs=1e-15)
        assert row["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-12)
        assert row["accuracy"] == pytest.approx(accuracy_score(y, (p > 0.5).astype(int)), rel=1e-12)
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    y = np.concatenate([d["label"].to_numpy() for d in parts.values()])
    p = np.concatenate([d["p_model"].to_numpy() for d in parts.values()])
    assert overall["bce"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-12, abs=1e-15)
    # saturated: within machine epsilon of 0 or 1, where scikit-learn's clipping binds
    eps = np.finfo(float).eps
    assert overall["n_saturated"] == int(((p <= eps) | (p >= 1 - eps)).sum()) >= 6


def test_stored_logit_column(tmp_path: Path):
    parts = _stored_scores(tmp_path / "d")
    ds = discover_dataset(tmp_path / "d", "label", [], extra_columns=["z_model"])
    table, overall, _ = run(ds, stored_scorer("z_model", "logit"))
    for region, df in parts.items():
        y, z = df["label"].to_numpy(), df["z_model"].to_numpy()
        row = table_row(table, "region", region)
        assert row["bce"] == pytest.approx(exact_logit_losses(y, z).mean(), rel=1e-12)
        assert row["brier"] == pytest.approx(brier_score_loss(y, expit(z)), rel=1e-12)
        assert row["accuracy"] == pytest.approx(accuracy_score(y, (z > 0).astype(int)), rel=1e-12)
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y, z), abs=1e-12)
    y = np.concatenate([d["label"].to_numpy() for d in parts.values()])
    z = np.concatenate([d["z_model"].to_numpy() for d in parts.values()])
    # |z| = 45 rows cost their true loss: 45 + log1p(e^-45) for the wrong side, not sklearn's 36.04
    assert overall["bce"] == pytest.approx(exact_logit_losses(y, z).mean(), rel=1e-12)
    assert overall["bce"] > log_loss(y, expit(z), labels=[0, 1]) + 1e-3


def test_stored_scorer_rejects_unknown_kind():
    with pytest.raises(InputError, match=r"--score-kind must be 'logit' or 'probability', not 'odds'"):
        stored_scorer("s", "odds")  # type: ignore[arg-type]


# --- bad input inside the data ----------------------------------------------------------------------


def _hive_with_bad(tmp_path: Path, mutate) -> tuple[Dataset, Path]:
    parts = {"north": make_frame(60, 1), "south": make_frame(60, 2), "west": make_frame(60, 3)}
    parts = {k: v.with_columns(pl.Series("p_model", expit(v["a"].to_numpy()))) for k, v in parts.items()}
    parts["south"] = mutate(parts["south"])
    root = write_hive(tmp_path / "d", parts)
    ds = discover_dataset(root, "label", FEATURES, extra_columns=["p_model"])
    return ds, root / "region=south" / "part-0.parquet"


def _set_row(col: str, value, row: int = 11):
    return lambda df: df.with_columns(
        pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(pl.col(col)).alias(col)
    )


def _scorers():
    train = make_frame(300, 9)
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(
        train.select(FEATURES).to_numpy(), train["label"].to_numpy()
    )
    return {"linear": make_scorer(fitted_logistic(), FEATURES), "tree": make_scorer(tree, FEATURES)}


NAN_SCORE_BUG = (
    "BUG: tasks/metrics/reduce.py _reduce_chunk: a NaN score (NaN feature on the Polars-expression path of a "
    "linear model, or a NaN stored score) reaches _hist_bin, whose strict cast to Int32 makes "
    "pl.collect_all raise polars InvalidOperationError ('conversion from f64 to i32 failed in column "
    "__score ... [NaN]') before the bad-input counts are checked; reduce_chunk only converts "
    "ComputeError/SchemaError/OSError, so the user gets a raw Polars error instead of an InputError "
    "naming the file and column"
)

BAD_ROWS = [
    ("label_3", _set_row("label", 3), r"label column 'label' has value 3 \(1 row\(s\) not 0/1\)"),
    ("nan_feature", _set_row("b", float("nan")), r"feature column 'b' has 1 null or non-finite value\(s\)"),
    ("inf_feature", _set_row("c", float("inf")), r"feature column 'c' has 1 null or non-finite value\(s\)"),
    ("null_feature", _set_row("a", None), r"feature column 'a' has 1 null or non-finite value\(s\)"),
]


@pytest.mark.parametrize(
    "path, mutate, message",
    [
        pytest.param(
            path,
            mutate,
            message,
            id=f"{name}-{path}",
            marks=[],
        )
        for path in ("linear", "tree")
        for name, mutate, message in BAD_ROWS
    ],
)
def test_bad_rows_raise_input_error_naming_file_and_column(tmp_path: Path, path, mutate, message):
    ds, victim = _hive_with_bad(tmp_path, mutate)
    scorer = _scorers()[path]
    with pytest.raises(InputError, match=re.escape(str(victim)) + ": " + message):
        reduce_chunk(ds, scorer, list(ds.files))


@pytest.mark.parametrize(
    "bad",
    [1.5, -0.1, float("nan"), None],
)
def test_bad_probability_score_raises(tmp_path: Path, bad):
    ds, victim = _hive_with_bad(tmp_path, _set_row("p_model", bad))
    with pytest.raises(
        InputError,
        match=re.escape(str(victim))
        + r": score column 'p_model' has 1 value\(s\) that are not a probability in \[0, 1\]",
    ):
        reduce_chunk(ds, stored_scorer("p_model", "probability"), list(ds.files))


@pytest.mark.parametrize(
    "bad",
    [float("inf"), float("-inf"), None, float("nan")],
)
def test_bad_logit_score_raises(tmp_path: Path, bad):
    ds, victim = _hive_with_bad(tmp_path, _set_row("p_model", bad))
    with pytest.raises(
        InputError,
        match=re.escape(str(victim)) + r": score column 'p_model' has 1 value\(s\) that are not a finite logit",
    ):
        reduce_chunk(ds, stored_scorer("p_model", "logit"), list(ds.files))


def test_bad_row_in_a_later_chunk_names_its_file(tmp_path: Path):
    ds, victim = _hive_with_bad(tmp_path, _set_row("label", 3))
    scorer = _scorers()["linear"]
    chunks = group_files(ds, 1)
    assert len(chunks) == 3
    raised = []
    for chunk in chunks:
        try:
            reduce_chunk(ds, scorer, chunk)
        except InputError as exc:
            raised.append(str(exc))
    assert len(raised) == 1 and raised[0].startswith(f"{victim}: label column 'label' has value 3")


def test_exact_auc_and_bce_of_a_linear_model_over_many_batches_match_sklearn(tmp_path: Path):
    """Partitions spread over several batches (small files are read 65,536 rows at a time): the
    exact AUC keeps every batch's scores, and the logit the scan computes is the model's."""
    parts = {f"r{i}": make_frame(30_000, 20 + i, noise=0.3) for i in range(3)}
    root = write_hive(tmp_path / "big", parts)
    ds = discover_dataset(root, "label", FEATURES)
    model = LogisticRegression().fit(
        make_frame(2_000, 5).select(FEATURES).to_numpy(), make_frame(2_000, 5)["label"].to_numpy()
    )
    table, overall, _ = run(ds, make_scorer(model, FEATURES), exact_auc=True)
    for row in table.iter_rows(named=True):
        df = parts[row["region"]]
        z, y = model.decision_function(df.select(FEATURES).to_numpy()), df["label"].to_numpy()
        assert row["n_rows"] == 30_000
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y, z), abs=1e-12)
        assert row["bce"] == pytest.approx(log_loss(y, expit(z), labels=[0, 1]), rel=1e-9)


@pytest.mark.parametrize("delta", [+25, -25])
def test_a_file_rewritten_after_discovery_is_named_not_summed_into_the_wrong_partitions(
    tmp_path: Path, hive_data: Path, delta: int
):
    """Rows go to partitions by the footers' row counts: a file rewritten between discovery and the
    scan (an upstream job writing while the evaluation runs) would shift rows between partitions."""
    ds = discover_dataset(hive_data, "label", FEATURES)
    scorer = make_scorer(
        LogisticRegression().fit(make_frame(200, 9).select(FEATURES).to_numpy(), make_frame(200, 9)["label"]), FEATURES
    )
    victim = ds.files[1]
    before = pl.read_parquet(victim.path)
    rewritten = make_frame(before.height + delta, 11)
    rewritten.write_parquet(victim.path)
    with pytest.raises(InputError) as info:
        reduce_chunk(ds, scorer, list(ds.files))
    message = str(info.value)
    assert message.startswith(
        f"{victim.path}: changed while bce-eval read it ({before.height:,} rows when listed, {rewritten.height:,} now)"
    )
    assert "Run the evaluation again" in message
    # discovered again, the same files reduce, and each partition holds its own rows
    table, overall, _ = run(discover_dataset(hive_data, "label", FEATURES), scorer)
    assert overall["n_rows"] == sum(f.num_rows for f in ds.files) + delta


# --- property: merged overall BCE equals compute_bce on all rows ------------------------------------


@st.composite
def partitioned_logits(draw):
    n_parts = draw(st.integers(1, 4))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 20.0, 50.0]))
    parts = {}
    for i in range(n_parts):
        n = draw(st.integers(1, 40))
        y = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
        z = draw(st.lists(st.floats(-scale, scale, allow_nan=False), min_size=n, max_size=n))
        parts[f"p{i}"] = (np.array(y, dtype=np.int64), np.array(z, dtype=np.float64))
    target = draw(st.integers(1, 120))
    return parts, target


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(partitioned_logits())
def test_property_merged_bce_equals_compute_bce(data):
    parts, target = data
    with tempfile.TemporaryDirectory() as tmp:
        root = write_hive(Path(tmp), {k: pl.DataFrame({"label": y, "score": z}) for k, (y, z) in parts.items()})
        ds = discover_dataset(root, "label", [], extra_columns=["score"])
        table, overall, _ = run(ds, stored_scorer("score", "logit"), target_rows=target)
    y = np.concatenate([v[0] for v in parts.values()])
    z = np.concatenate([v[1] for v in parts.values()])
    assert overall["n_rows"] == len(y) and overall["n_pos"] == int(y.sum())
    assert overall["bce"] == pytest.approx(compute_bce(y, z), rel=1e-12)
    assert overall["bce"] == pytest.approx(exact_logit_losses(y, z).mean(), rel=1e-12)
    for k, (yk, zk) in parts.items():
        row = table_row(table, "region", k)
        assert row["bce"] == pytest.approx(compute_bce(yk, zk), rel=1e-12)
        if 0 < yk.sum() < len(yk):
            assert row["roc_auc"] == pytest.approx(roc_auc_score(yk, zk), abs=1e-12)
        else:
            assert row["roc_auc"] is None and row["note"].startswith("single class")
    if 0 < y.sum() < len(y):
        assert abs(overall["roc_auc"] - roc_auc_score(y, z)) <= overall["roc_auc_bound"] + 1e-12
    else:
        assert overall["roc_auc"] is None


def test_a_linear_model_with_more_coefficients_than_features_is_refused():
    """The logit pairs each feature with one coefficient: a model whose coefficients do not match
    (and which carries no n_features_in_ to say so) is refused before any data is read, not
    silently cut to the shorter of the two."""
    from tasks.models.scoring import LinearModel

    model = LinearModel("LogisticRegression", np.ones((1, 4)), np.zeros(1), np.array([0, 1]))
    with pytest.raises(InputError, match="the model has 4 coefficients but 3 features were given"):
        make_scorer(model, FEATURES)
