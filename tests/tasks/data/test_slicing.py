"""tasks/data/slicing.py: every form of ``--slice`` read, crosses, bin labels, the finest cross, bad specs."""

from __future__ import annotations

import pytest

from tasks.data.slicing import CellColumn, Term, finest_cross, parse_slicing, slice_source_columns
from tasks.errors import InputError


def _labels_by_hand(edges: list[str]) -> list[str]:
    """Left-closed bins below, between and above the edges (as written), then the null bin."""
    out = [f"< {edges[0]}"]
    for i in range(len(edges) - 1):
        out.append(f"[{edges[i]}, {edges[i + 1]})")
    return [*out, f">= {edges[-1]}", "null"]


def test_a_column_by_value():
    s = parse_slicing("region")
    assert s.terms == (Term(CellColumn("region")),)
    assert (s.spec, s.name, s.key, s.columns) == ("region", "region", "region", ["region"])


@pytest.mark.parametrize(
    ("spec", "column", "edges", "written"),
    [
        ("age:18,30,45,65", "age", (18.0, 30.0, 45.0, 65.0), ["18", "30", "45", "65"]),
        ("score:0.1,0.5,0.9", "score", (0.1, 0.5, 0.9), ["0.1", "0.5", "0.9"]),
        ("delta:-1,0,2.5", "delta", (-1.0, 0.0, 2.5), ["-1", "0", "2.5"]),
        ("income: 1e3, 5e4", "income", (1000.0, 50000.0), ["1000", "50000"]),
        ("age:40", "age", (40.0,), ["40"]),
    ],
)
def test_numeric_bins_and_their_labels(spec, column, edges, written):
    s = parse_slicing(spec)
    (term,) = s.terms
    assert term.value is None and term.cell.column == column and term.cell.edges == edges
    assert term.cell.name == f"{column}[{','.join(written)}]" == s.name == s.columns[0]
    assert term.cell.bin_labels() == _labels_by_hand(written)
    assert len(term.cell.bin_labels()) == len(edges) + 2  # below, between, above, null


def test_a_value_filter():
    s = parse_slicing("country=de")
    assert s.terms == (Term(CellColumn("country"), "de"),)
    assert (s.name, s.key, s.columns) == ("country=de", "country_de", ["country"])


def test_crosses_of_every_form_keep_their_order_and_spaces_do_not_matter():
    s = parse_slicing(" region * age: 30, 60 * country = de ")
    assert s.terms == (
        Term(CellColumn("region")),
        Term(CellColumn("age", (30.0, 60.0))),
        Term(CellColumn("country"), "de"),
    )
    assert s.spec == "region * age: 30, 60 * country = de"
    assert s.name == "region×age[30,60]×country=de"
    assert s.key == "region_x_age_30_60__x_country_de"
    assert s.columns == ["region", "age[30,60]", "country"]
    assert parse_slicing("region*country=de").columns == ["region", "country"]


def test_the_finest_cross_has_each_cell_column_once_in_first_named_order():
    slicings = [
        parse_slicing("region"),
        parse_slicing("region*age:18,30"),
        parse_slicing("country=de"),
        parse_slicing("country"),  # the same cell column as the filter
        parse_slicing("age:18,30"),  # the same bins again
        parse_slicing("age:20"),  # other bins: another cell column
        parse_slicing("age"),  # the column by value: another cell column again
        parse_slicing("device*region"),
    ]
    expected = []
    for s in slicings:  # by hand: each term's cell, unless seen before
        for t in s.terms:
            if t.cell not in expected:
                expected.append(t.cell)
    cross = finest_cross(slicings)
    assert list(cross) == expected
    assert [c.name for c in cross] == ["region", "age[18,30]", "country", "age[20]", "age", "device"]
    assert slice_source_columns(slicings) == ("region", "age", "country", "device")
    assert finest_cross([]) == ()


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "cannot read"),
        ("region*", "cannot read"),
        ("*region", "cannot read"),
        ("region**age:18", "cannot read"),
        ("=de", "cannot read"),
        (":18,30", "cannot read"),
        ("age:18,x", "must be numbers"),
        ("age:18,,30", "must be numbers"),
        ("age:", "cannot read"),
        ("age:30,18", "increasing"),
        ("age:18,18,30", "increasing"),
        ("age:18,inf", "finite"),
        ("age:nan", "finite"),
        ("region*region", "twice"),
        ("age*age:18,30", "twice"),
        ("country=de*country", "twice"),
        ("age:18*region*age:30", "twice"),
    ],
)
def test_each_bad_spec_is_one_input_error_line_naming_it(spec, says):
    with pytest.raises(InputError) as caught:
        parse_slicing(spec)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--slice {spec!r}:"), message
    assert says in message
