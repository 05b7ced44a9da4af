"""Declared slicings: how ``--slice`` names the groups a run reports, and the finest cross they share.

A slicing is one or more *terms* joined by ``*`` (a cross), as TFMA's ``SlicingSpec`` names
feature keys and crosses:

- ``region``: one slice per value of a column (a hive key or a column inside the files);
- ``age:18,30,45,65``: numeric bins with those edges (``< 18``, ``[18, 30)``, …, ``>= 65``, and
  ``null``);
- ``country=de``: a value filter: only rows whose ``country`` is ``de``, one slice.

``region*age:30,60`` is the cross of two terms; ``region*country=de`` slices the German rows by
region. Overall is always reported.

The pass runs once over the *finest cross*: the partition keys and every distinct cell column of
every slicing (a column by value and the same column in bins are two cell columns). Every slicing
is an exact roll-up of it: its sums add, its histograms add.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import polars as pl

from tasks.errors import InputError

_TERM = re.compile(r"^(?P<column>[^:=*]+?)\s*(?::(?P<edges>[^=*]+)|=(?P<value>[^*]*))?$")


@dataclass(frozen=True)
class CellColumn:
    """A column of the finest cross: a data column by value, or in numeric bins (``edges``)."""

    column: str
    edges: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        """Its column in the tables: the data column, or ``age[18,30,45]`` for bins."""
        return f"{self.column}[{','.join(f'{e:g}' for e in self.edges)}]" if self.edges else self.column

    def bin_labels(self) -> list[str]:
        """The label of each bin code: ``< e0``, ``[e0, e1)``, …, ``>= e_last``, then ``null``."""
        e = [f"{x:g}" for x in self.edges]
        inner = [f"[{a}, {b})" for a, b in zip(e, e[1:])]
        return [f"< {e[0]}", *inner, f">= {e[-1]}", "null"]


@dataclass(frozen=True)
class Term:
    """One term of a slicing: its cell column, and the value it keeps when it is a filter."""

    cell: CellColumn
    value: str | None = None


@dataclass(frozen=True)
class Slicing:
    """One declared slicing: a cross of terms (see the module docstring)."""

    spec: str
    terms: tuple[Term, ...]

    @property
    def name(self) -> str:
        """Its name in tables, artifacts and MLflow keys: the terms' columns joined by ``×``."""
        return "×".join(t.cell.name + (f"={t.value}" if t.value is not None else "") for t in self.terms)

    @property
    def key(self) -> str:
        """Its name as a valid MLflow key part (ASCII; ``_x_`` for the cross); many edges: ``age_40bins_1f2e3d``."""
        words = [_key_word(t) for t in self.terms]
        return re.sub(r"[^A-Za-z0-9_\-.]", "_", "_x_".join(words))

    @property
    def columns(self) -> list[str]:
        """The cell columns of the finest cross it rolls up to (filters included)."""
        return [t.cell.name for t in self.terms]


def _key_word(term: Term) -> str:
    if len(term.cell.edges) > 4:  # the edges would make a key longer than its reader wants: their count and digest
        digest = hashlib.blake2b(repr(term.cell.edges).encode(), digest_size=3).hexdigest()
        return f"{term.cell.column}_{len(term.cell.edges) + 1}bins_{digest}"
    return term.cell.name + (f"={term.value}" if term.value is not None else "")


def parse_slicing(text: str) -> Slicing:
    """The :class:`Slicing` ``text`` spells; raises :class:`InputError` naming what is wrong."""
    terms = []
    for part in text.split("*"):
        m = _TERM.match(part.strip())
        if not part.strip() or m is None:
            raise InputError(
                f"--slice {text!r}: cannot read {part.strip()!r}; write a column ('region'), numeric bins "
                "('age:18,30,45'), a value filter ('country=de'), or a cross of them joined by '*'."
            )
        column = m["column"].strip()
        edges = _parse_edges(text, m["edges"]) if m["edges"] is not None else ()
        terms.append(Term(CellColumn(column, edges), m["value"].strip() if m["value"] is not None else None))
    names = [t.cell.column for t in terms]
    if len(set(names)) < len(names):
        raise InputError(f"--slice {text!r}: a column appears twice; cross different columns.")
    return Slicing(text.strip(), tuple(terms))


def _parse_edges(text: str, raw: str) -> tuple[float, ...]:
    try:
        edges = tuple(float(x) for x in raw.split(","))
    except ValueError:
        raise InputError(f"--slice {text!r}: bin edges must be numbers, as in 'age:18,30,45,65'.") from None
    if not edges or any(not math.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise InputError(f"--slice {text!r}: bin edges must be finite and increasing, as in 'age:18,30,45,65'.")
    return edges


def cell_expression(cell: CellColumn) -> pl.Expr:
    """The cell column as an expression over a frame's rows: the value, or its bin's label (null and NaN: "null")."""
    if not cell.edges:
        return pl.col(cell.column).alias(cell.name)
    labels = cell.bin_labels()
    binned = (
        pl.col(cell.column).cast(pl.Float64).fill_nan(None).cut(list(cell.edges), labels=labels[:-1], left_closed=True)
    )
    return binned.cast(pl.String).fill_null("null").cast(pl.Enum(labels)).alias(cell.name)


def category_expression(column: str) -> pl.Expr:
    """A text slice column read by the scan as categories numbered once per process (on Polars' threads, beside the
    decode), so each batch's codes are a lookup (:class:`tasks.metrics.cells.CellIndex`), not a pass over its text."""
    return pl.col(column).cast(pl.Categorical(pl.Categories(f"bce-eval.slice.{column}")))


def finest_cross(slicings: list[Slicing] | tuple[Slicing, ...]) -> tuple[CellColumn, ...]:
    """The distinct cell columns of all slicings, in the order they are first named."""
    return tuple(dict.fromkeys(t.cell for s in slicings for t in s.terms))


def slice_source_columns(slicings: list[Slicing] | tuple[Slicing, ...]) -> tuple[str, ...]:
    """The data columns the slicings read."""
    return tuple(dict.fromkeys(c.column for c in finest_cross(slicings)))
