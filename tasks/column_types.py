"""Column types across the files of a dataset: the checks on used columns, and how widths widen."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from tasks.errors import InputError


def _kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_null(t):
        return "null"
    return "other"


def _string_like(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _string_like(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def unified_type(name: str, seen: dict[pa.DataType, str], role: str) -> pl.DataType | None:
    """The Polars type that reads every file's ``name`` losslessly, as pyarrow.dataset would widen it.

    ``seen`` maps each distinct Arrow type to the first file that has it. None when all files agree
    (nothing to cast). A column of type null (pandas writes an empty frame's columns so) takes the
    others' type; integers of any width widen to Int64 (Float64 beside floats or uint64), floats to
    Float64; text partition columns (string, large_string, pandas' category) are read as text;
    booleans, decimals and text mixed with anything else are a real conflict.
    """
    typed = {t: f for t, f in seen.items() if not pa.types.is_null(t)}
    if len(typed) < 2:
        # one type beside nulls: read the null files' column as that type (the first file may be one)
        return polars_type(next(iter(typed))) if typed and len(seen) > 1 else None
    types = list(typed)
    if role == "partition" and all(_string_like(t) for t in types):
        return pl.String
    kinds = {_kind(t) for t in types}
    plain = all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types)
    if not plain or not kinds <= {"int", "float"}:
        (t1, f1), (t2, f2) = list(typed.items())[:2]
        raise InputError(
            f"{f2}: {role} column {name!r} is {t2} but {f1} has {t1}; the files' schemas disagree. "
            "Rewrite the files with one type for this column (for example cast it to int64 or float64)."
        )
    if kinds == {"int"} and not any(t == pa.uint64() for t in types):
        return pl.Int64
    return pl.Float64


def polars_type(t: pa.DataType) -> pl.DataType:
    return pl.from_arrow(pa.schema([pa.field("c", t)]).empty_table()).schema["c"]


def check_columns(
    ref_file: str, ref_schema: pa.Schema, hive_keys: tuple[str, ...], label: str,
    features: tuple[str, ...], extra_columns: tuple[str, ...], parts: tuple[str, ...],
) -> None:
    """The label, feature, score and partition columns exist and have usable types."""
    available = set(ref_schema.names) | set(hive_keys)
    for role, cols in (("label", (label,)), ("feature", features), ("score", extra_columns), ("partition", parts)):
        for col in cols:
            if col not in available:
                raise InputError(f"{ref_file}: no {role} column {col!r}; columns are {sorted(available)}.")
    if label in features:
        raise InputError(f"column {label!r} is both the label and a feature; drop it from --features.")
    for col in (*features, *extra_columns):
        if col in hive_keys:
            raise InputError(f"{col!r} is a hive partition key (text), it cannot be a numeric feature.")
        kind = _kind(ref_schema.field(col).type)
        if kind not in {"int", "float", "bool"}:
            raise InputError(
                f"{ref_file}: feature column {col!r} has type {ref_schema.field(col).type}, "
                "not numeric; cast it to a number or drop it from --features."
            )
    if label not in hive_keys and _kind(ref_schema.field(label).type) not in {"int", "float", "bool", "null"}:
        raise InputError(
            f"{ref_file}: label column {label!r} has type {ref_schema.field(label).type}; "
            "labels must be 0/1 numbers or booleans."
        )
