"""tasks/metrics/bad_input.py: bad values found in a pass become ONE line naming the first file at
fault, the column, what is wrong (counted here with numpy) and the remedy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from tasks.data.dataset import Dataset, discover_dataset, scan_files
from tasks.errors import InputError
from tasks.metrics.bad_input import check_exprs, check_frame, raise_bad_input
from tasks.models.scoring import SklearnBatch, batch_scorer, make_scorer, stored_scorer

FEATURES = ["a", "b"]


def _clean(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=n), "b": rng.normal(size=n), "p": rng.random(n), "label": rng.integers(0, 2, n)}


def _dataset(tmp_path: Path, second: dict[str, object], extra: tuple[str, ...] = ()) -> tuple[Dataset, Path, Path]:
    """Two files: ``first.parquet`` clean, ``second.parquet`` with the columns ``second`` replaces."""
    first, bad = tmp_path / "k=1" / "first.parquet", tmp_path / "k=2" / "second.parquet"
    for path, columns in ((first, _clean(30, 1)), (bad, {**_clean(30, 2), **second})):
        path.parent.mkdir(parents=True)
        pl.DataFrame(columns).write_parquet(path)
    return discover_dataset(tmp_path, "label", FEATURES, extra_columns=extra), first, bad


def _linear() -> object:
    data = _clean(100, 3)
    return make_scorer(LogisticRegression().fit(np.c_[data["a"], data["b"]], data["label"]), FEATURES)


def _error(dataset: Dataset, scorer) -> str:
    frame = scan_files(dataset).collect()
    with pytest.raises(InputError) as err:
        check_frame(dataset, scorer, list(dataset.files), frame)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_clean_data_passes(tmp_path: Path):
    dataset, _, _ = _dataset(tmp_path, {}, extra=("p",))
    frame = scan_files(dataset).collect()
    check_frame(dataset, _linear(), list(dataset.files), frame)
    check_frame(dataset, stored_scorer("p", "probability"), list(dataset.files), frame)
    counts = frame.select(check_exprs(dataset, stored_scorer("p", "probability"))).row(0)
    assert counts == (0, 0, 0)  # label nulls, label values, score (a stored scorer reads no features)


def test_a_label_that_is_not_0_or_1_names_the_file_the_column_and_a_value(tmp_path: Path):
    labels = _clean(30, 2)["label"].astype(np.float64)
    labels[[4, 9]] = [2.0, 0.5]
    dataset, _, bad = _dataset(tmp_path, {"label": labels})
    n_bad = int((~np.isin(labels, [0.0, 1.0])).sum())
    assert _error(dataset, _linear()) == (
        f"{bad}: label column 'label' has value 2.0 ({n_bad} row(s) not 0/1); "
        "labels must be 0 or 1 (map the classes to 0/1 first)."
    )


def test_a_null_label_names_the_file_and_counts_the_nulls(tmp_path: Path):
    labels = [None if i in (3, 7, 8) else i % 2 for i in range(30)]
    dataset, _, bad = _dataset(tmp_path, {"label": labels})
    assert _error(dataset, _linear()) == f"{bad}: label column 'label' has 3 null value(s); labels must be 0 or 1."


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan, None])
def test_a_non_finite_feature_names_the_file_and_the_column(tmp_path: Path, value):
    b = list(_clean(30, 2)["b"])
    b[5] = b[17] = value
    dataset, _, bad = _dataset(tmp_path, {"b": pl.Series(b, dtype=pl.Float64)})
    assert _error(dataset, _linear()) == (
        f"{bad}: feature column 'b' has 2 null or non-finite value(s) (null/NaN/inf); drop or impute such rows first."
    )


def test_a_stored_score_outside_its_kind_names_the_score_column(tmp_path: Path):
    p = _clean(30, 2)["p"]
    p[[1, 2, 3]] = [1.5, -0.25, np.nan]
    dataset, _, bad = _dataset(tmp_path, {"p": p}, extra=("p",))
    assert _error(dataset, stored_scorer("p", "probability")) == (
        f"{bad}: score column 'p' has 3 value(s) that are not a probability in [0, 1]."
    )
    # read as logits, only the NaN is bad
    assert (
        _error(dataset, stored_scorer("p", "logit"))
        == f"{bad}: score column 'p' has 1 value(s) that are not a finite logit."
    )


def test_clean_columns_with_a_bad_model_output_blame_the_model(tmp_path: Path):
    dataset, first, _ = _dataset(tmp_path, {})
    data = _clean(100, 3)
    X = np.c_[data["a"], data["b"]]
    tree = batch_scorer(SklearnBatch(DecisionTreeClassifier(max_depth=2).fit(X, data["label"])), FEATURES, "tree")
    assert tree.kind == "probability"
    with pytest.raises(InputError) as err:
        raise_bad_input(dataset, tree, list(dataset.files), {"bad_score": 4})
    assert str(err.value) == (
        f"{first}: the model's output (DecisionTreeClassifier.predict_proba (clipped at eps)) "
        "is not a probability in [0, 1] for 4 row(s); if it returns logits, pass --score-kind logit."
    )
    with pytest.raises(
        InputError, match=rf"^{first}: the model's score is not finite for 2 row\(s\) although the features are;"
    ):
        raise_bad_input(dataset, _linear(), list(dataset.files), {"bad_score": 2})
