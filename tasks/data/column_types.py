"""Column types across the files of a dataset: the checks on used columns, and how widths widen."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from tasks.data.slicing import CellColumn
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
    if role in ("partition", "slice") and all(_string_like(t) for t in types):
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


#: MLflow signature types a column of each kind can feed (a model's signature, ``ColSpec.type``)
_ACCEPTS = {
    "number": {"double", "float", "long", "integer", "boolean"},
    "text": {"string"},
}
_INTEGER_TYPES = {"long", "integer"}


def _feature_kind(col: str, ref_schema: pa.Schema, hive_keys: tuple[str, ...]) -> str:
    if col in hive_keys:
        return "text"  # hive keys are read as text
    t = ref_schema.field(col).type
    if _string_like(t):
        return "text"
    return "number" if _kind(t) in {"int", "float", "bool"} else "other"


def check_columns(
    ref_file: str,
    ref_schema: pa.Schema,
    hive_keys: tuple[str, ...],
    label: str,
    features: tuple[str, ...],
    extra_columns: tuple[str, ...],
    parts: tuple[str, ...],
    model_types: dict[str, str] | None = None,
    model_name: str = "",
) -> tuple[str, ...]:
    """The label, feature, score and partition columns exist and have usable types.

    Features must be numeric, unless ``model_types`` (a logged model's signature: column → MLflow
    type name, for the model ``model_name``) says the model takes text there. Returns the text features.
    """
    available = set(ref_schema.names) | set(hive_keys)
    needs = f" (model {model_name} needs it)" if model_name else ""
    for role, cols in (("label", (label,)), ("feature", features), ("score", extra_columns), ("partition", parts)):
        for col in cols:
            if col not in available:
                why = needs if role == "feature" else ""
                raise InputError(f"{ref_file}: no {role} column {col!r}{why}; columns are {sorted(available)}.")
    if label in features:
        raise InputError(f"column {label!r} is both the label and a feature; drop it from --features.")
    text: list[str] = []
    for col in (*features, *extra_columns):
        kind = _feature_kind(col, ref_schema, hive_keys)
        wanted = (model_types or {}).get(col) if col in features else None
        shown = "text (a hive key)" if col in hive_keys else str(ref_schema.field(col).type)
        if wanted is not None:
            _check_model_type(ref_file, col, kind, shown, ref_schema, hive_keys, wanted, model_name)
            if kind == "text":
                text.append(col)
            continue
        if kind != "number" and col in hive_keys:
            raise InputError(
                f"{col!r} is a hive partition key (text), it cannot be a numeric feature; "
                "a model whose signature takes it as a string can use it."
            )
        if kind != "number":
            raise InputError(
                f"{ref_file}: feature column {col!r} has type {shown}, not numeric; "
                "cast it to a number, drop it from --features, or use a model whose signature takes text there."
            )
    if label not in hive_keys and _kind(ref_schema.field(label).type) not in {"int", "float", "bool", "null"}:
        raise InputError(
            f"{ref_file}: label column {label!r} has type {ref_schema.field(label).type}; "
            "labels must be 0/1 numbers or booleans."
        )
    return tuple(text)


def _check_model_type(
    ref_file: str,
    col: str,
    kind: str,
    shown: str,
    ref_schema: pa.Schema,
    hive_keys: tuple[str, ...],
    wanted: str,
    model_name: str,
) -> None:
    """The column's type is one the model's signature accepts (integers only where it takes integers:
    MLflow's schema enforcement refuses a float column for an integer input)."""
    ok = wanted in _ACCEPTS.get(kind, set())
    if ok and wanted in _INTEGER_TYPES and col not in hive_keys:
        ok = _kind(ref_schema.field(col).type) in {"int", "bool"}
    if not ok:
        raise InputError(
            f"{ref_file}: feature column {col!r} has type {shown}, but model {model_name} takes {wanted} there; "
            "cast the column to that type or evaluate a model whose signature matches the data."
        )


def check_slice_columns(
    ref_file: str,
    ref_schema: pa.Schema,
    hive_keys: tuple[str, ...],
    cells: tuple[CellColumn, ...],
    weight: str | None,
) -> None:
    """Every ``--slice`` column exists (binned ones are numbers), and ``--weight-col`` is a numeric file column."""
    available = set(ref_schema.names) | set(hive_keys)
    for cell in cells:
        if cell.column not in available:
            raise InputError(f"{ref_file}: no column {cell.column!r} to slice by; columns are {sorted(available)}.")
        if cell.edges and cell.column not in hive_keys and not _is_number(ref_schema.field(cell.column).type):
            raise InputError(
                f"{ref_file}: --slice {cell.name}: column {cell.column!r} is {ref_schema.field(cell.column).type}, "
                "not a number; bins need a numeric column (slice it by value instead: --slice "
                f"{cell.column})."
            )
    if weight is None:
        return
    if weight not in ref_schema.names:
        where = "a hive key" if weight in hive_keys else "not a column"
        raise InputError(
            f"{ref_file}: --weight-col {weight!r} is {where}; weights must be a numeric column of the files "
            f"(columns are {sorted(ref_schema.names)})."
        )
    if not _is_number(ref_schema.field(weight).type):
        raise InputError(
            f"{ref_file}: --weight-col {weight!r} is {ref_schema.field(weight).type}, not a number; "
            "weights must be finite numbers >= 0."
        )


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)
