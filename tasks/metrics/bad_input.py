"""Bad input found by the streaming pass, turned into one clear error naming the file and column."""

from __future__ import annotations

import polars as pl

from tasks.data.dataset import DataFile, Dataset, scan_files
from tasks.errors import InputError
from tasks.models.scoring import Scorer


def check_exprs(dataset: Dataset, scorer: Scorer, unlabelled: bool = False) -> list[pl.Expr]:
    """Counts of bad input, computed in the same pass as the scoring (with ``unlabelled``, a null label is a label
    not arrived yet, not bad input: :mod:`tasks.metrics.late_labels`)."""
    raw_y = pl.col(dataset.label)
    y = raw_y.cast(pl.Float64)
    exprs = [
        *([] if unlabelled else [raw_y.is_null().sum().alias("bad_label_null")]),
        (~y.is_in([0.0, 1.0])).fill_null(False).sum().alias("bad_label_value"),
    ]
    for i, col in enumerate(scorer.features):
        if col in dataset.text_features:  # text: only a missing value is bad (the model decides the rest)
            exprs.append(pl.col(col).is_null().sum().alias(f"bad_feature_{i}"))
            continue
        x = pl.col(col).cast(pl.Float64)
        exprs.append((x.is_null() | ~x.is_finite()).fill_null(True).sum().alias(f"bad_feature_{i}"))
    if dataset.weight is not None:
        w = pl.col(dataset.weight).cast(pl.Float64)
        exprs.append((w.is_null() | ~w.is_finite() | (w < 0)).fill_null(True).sum().alias("bad_weight"))
    if scorer.column is not None:
        s = pl.col(scorer.column).cast(pl.Float64)
        bad = s.is_null() | ~s.is_finite()
        if scorer.kind == "probability":
            bad = bad | (s < 0) | (s > 1)
        exprs.append(bad.fill_null(True).sum().alias("bad_score"))
    return exprs


def raise_bad_input(
    dataset: Dataset, scorer: Scorer, files: list[DataFile], checks: dict[str, int], unlabelled: bool = False
) -> None:
    """Turn non-zero bad-input counts into one clear error naming the file and column (``unlabelled``: as
    :func:`check_exprs`)."""
    culprit = None
    for f in files:  # only on the error path: find the first file at fault, column by column
        row = scan_files(dataset, [f]).select(check_exprs(dataset, scorer, unlabelled)).collect().row(0, named=True)
        if any(v for v in row.values()):
            culprit, checks = f.path, row
            break
    if culprit is not None and checks.get("bad_weight"):
        raise InputError(
            f"{culprit}: weight column {dataset.weight!r} has {checks['bad_weight']} negative, null or non-finite "
            "value(s); weights must be finite numbers >= 0 (drop those rows or fix their weights)."
        )
    if culprit is None and scorer.model is not None and scorer.kind == "probability":
        # every column is clean, yet the model's output is not a probability
        raise InputError(
            f"{files[0].path}: the model's output ({scorer.description}) is not a probability in [0, 1] for "
            f"{checks.get('bad_score', '?')} row(s); if it returns logits, pass --score-kind logit."
        )
    if culprit is None:
        # every column is clean, yet the score is not finite: the logit overflowed
        raise InputError(
            f"{files[0].path}: the model's score is not finite for {checks.get('bad_score', '?')} row(s) although the "
            "features are; feature values are too large for the model (overflow). Rescale them."
        )
    lab = dataset.label
    if checks.get("bad_label_null"):
        raise InputError(
            f"{culprit}: label column {lab!r} has {checks['bad_label_null']} null value(s); labels must be 0 or 1."
        )
    if checks.get("bad_label_value"):
        y = pl.col(lab).cast(pl.Float64)
        example = (
            scan_files(dataset, [f for f in files if f.path == culprit] or files)
            .filter(~y.is_in([0.0, 1.0]).fill_null(False))
            .select(pl.col(lab))
            .head(1)
            .collect()
            .item()
        )
        raise InputError(
            f"{culprit}: label column {lab!r} has value {example!r} ({checks['bad_label_value']} row(s) not 0/1); "
            "labels must be 0 or 1 (map the classes to 0/1 first)."
        )
    for i, col in enumerate(scorer.features):
        n_bad = checks.get(f"bad_feature_{i}", 0)
        if n_bad:
            raise InputError(
                f"{culprit}: feature column {col!r} has {n_bad} null or non-finite value(s) (null/NaN/inf); "
                "drop or impute such rows first."
            )
    if checks.get("bad_score"):
        rule = "a probability in [0, 1]" if scorer.kind == "probability" else "a finite logit"
        raise InputError(
            f"{culprit}: score column {scorer.column!r} has {checks['bad_score']} value(s) that are not {rule}."
        )


def check_frame(dataset: Dataset, scorer: Scorer, files: list[DataFile], frame: pl.DataFrame) -> None:
    """Raise :class:`InputError` (naming file and column) if ``frame`` holds bad input for ``scorer``."""
    checks = frame.select(check_exprs(dataset, scorer)).row(0, named=True)
    if any(checks.values()):
        raise_bad_input(dataset, scorer, files, checks)


def check_unlabelled(dataset: Dataset, table: pl.DataFrame, late_labels: bool) -> None:
    """Raise :class:`InputError` naming the first file of the first partition of ``table`` (its per-partition
    table) that holds both labelled rows and rows without a label, unless late labels are declared: a partition
    with no label at all is estimated (:mod:`tasks.metrics.late_labels`), never an error."""
    if late_labels or "n_unlabelled" not in table.columns:
        return
    mixed = table.filter((pl.col("n_unlabelled") > 0) & (pl.col("n_rows") > 0))
    if not mixed.height:
        return
    row = mixed.row(0, named=True)
    keys = list(dataset.partition_by)
    where = " and ".join(f"{k}={row[k]}" for k in keys) or "the data"
    # the partition's rows, by its keys' values in their own types (as the table has them from the same scan)
    inside = pl.all_horizontal(
        [pl.col(k).eq_missing(pl.lit(row[k], dtype=table.schema[k])) for k in keys] or [pl.lit(True)]
    )
    culprit, nulls = str(dataset.root), row["n_unlabelled"]
    for f in dataset.files:  # only on the error path: the first file with a null label in that partition
        n = scan_files(dataset, [f]).filter(inside).select(pl.col(dataset.label).is_null().sum()).collect().item()
        if n:
            culprit, nulls = f.path, n
            break
    more = f"; {mixed.height - 1} more partition(s) are alike" if mixed.height > 1 else ""
    raise InputError(
        f"{culprit}: label column {dataset.label!r} has {nulls} null value(s) in partition {where}, whose other rows "
        f"are labelled{more}; labels must be 0 or 1, or declare late labels (--late-labels; late_labels=True in "
        "Python) to report rows whose label has not arrived as estimated beside the labelled ones."
    )
