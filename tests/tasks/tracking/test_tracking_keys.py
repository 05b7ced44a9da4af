"""The pure helpers of tasks/tracking/adapter.py: redact_uri, metric_key_suffix, partition_label."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, _validate_metric_name

from tasks.data.naming import metric_key_suffix, partition_label
from tasks.redact import redact_uri

MLFLOW_KEY = re.compile(r"^[/\w.\- :]*$")  # mlflow.utils.validation, non-Windows
PREFIX = "bce_by_partition/"  # how tasks/review/run_content.py uses the suffix


# --- redact_uri -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("https://alice:s3cret@mlflow.example.com:5000/api?token=abc", "https://mlflow.example.com:5000/api"),
        ("postgresql://mlflow:hunter2@db.internal:5432/mlflow", "postgresql://db.internal:5432/mlflow"),
        ("mysql+pymysql://root:pw@127.0.0.1/mlflow?ssl=1", "mysql+pymysql://127.0.0.1/mlflow"),
        ("http://tracking.example.com/path?access_token=xyz&x=1", "http://tracking.example.com/path"),
        ("https://token@host/path", "https://host/path"),
    ],
)
def test_redact_uri_removes_credentials_and_query(uri, expected):
    out = redact_uri(uri)
    assert out == expected
    for secret in ("s3cret", "hunter2", "pw@", "token=", "access_token", "alice", "ssl=1"):
        assert secret not in out


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////abs/path/mlflow.db",
        "sqlite:///relative/mlflow.db",
        "file:///tmp/mlruns",
        "http://localhost:5000",
        "https://mlflow.example.com/some/path",
        "databricks",
        "/plain/local/path",
    ],
)
def test_redact_uri_leaves_clean_uris_untouched(uri):
    assert redact_uri(uri) == uri


def test_redact_uri_unparseable_still_drops_credentials():
    out = redact_uri("http://user:s3cret@[::1/broken?token=abc")
    assert "s3cret" not in out and "abc" not in out and "user" not in out


_host = st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z]{2,5}){0,2}", fullmatch=True)
_path = st.from_regex(r"(/[a-z0-9_]{1,8}){0,3}", fullmatch=True)
_secret = st.text(min_size=1, max_size=20).map(lambda s: "SECRET" + s)


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "postgresql", "mysql+pymysql", "mssql+pyodbc"]),
    user=st.from_regex(r"[a-z]{1,8}", fullmatch=True),
    password=_secret,
    host=_host,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    path=_path,
    query=st.one_of(st.none(), _secret),
)
def test_redact_uri_property(scheme, user, password, host, port, path, query):
    netloc = f"{host}:{port}" if port else host
    uri = f"{scheme}://{user}:{quote(password, safe='')}@{netloc}{path}"
    if query is not None:
        uri += "?q=" + quote(query, safe="")
    out = redact_uri(uri)
    assert "SECRET" not in out and "@" not in out and "?" not in out
    assert out == f"{scheme}://{netloc}{path}"


REDACT_BUG = (
    "BUG: tasks/tracking/adapter.py redact_uri: relies on urllib.parse.urlsplit, which ends the netloc at the "
    "first '/', '?' or '#'; SQLAlchemy (MLflow's database store URIs) takes everything up to the last "
    "'@' as user:password, so a password containing '/', '#' or '?' is returned unredacted "
    "(e.g. 'postgresql://mlflow:se/cret@db:5432/mlflow' comes back unchanged, "
    "'postgresql://mlflow:pa?ss@db/x' becomes 'postgresql://mlflow:pa')"
)


@pytest.mark.parametrize("password", ["se/cret", "pa#ss", "pa?ss"])
def test_redact_uri_password_with_url_delimiters(password):
    from sqlalchemy.engine import make_url

    uri = f"postgresql://mlflow:{password}@db.internal:5432/mlflow"
    parsed = make_url(uri)
    assert parsed.password == password and parsed.host == "db.internal"  # a URI MLflow would use as is
    out = redact_uri(uri)
    assert "mlflow:" + password[:2] not in out  # not even the part before the delimiter
    assert out == "postgresql://db.internal:5432/mlflow"


# --- metric_key_suffix ---------------------------------------------------------------------------


def assert_valid_mlflow_key(suffix: str) -> None:
    assert "/" not in suffix, suffix
    assert suffix, "empty suffix"
    key = PREFIX + suffix
    assert MLFLOW_KEY.match(key), key
    assert len(key) <= MAX_ENTITY_KEY_LENGTH
    try:
        _validate_metric_name(key)  # MLflow's own check, including the '..' / normpath rules
    except MlflowException as exc:  # pragma: no cover - the assertion message is the point
        pytest.fail(f"MLflow rejects {key!r}: {exc}")


HOSTILE = [
    "north",
    "North",
    "NORTH",
    "a b",
    "a_b",
    "a/b",
    "a\\b",
    "..",
    "../..",
    "./x",
    ".",
    "",
    " ",
    "  padded  ",
    "x" * 500,
    "x" * 499 + "y",
    "Zürich",
    "Zurich",
    "東京",
    "😀",
    "tab\there",
    "new\nline",
    "semi;colon",
    "col:on",
    "100%",
    "a%2Fb",
    "__HIVE_DEFAULT_PARTITION__",
    "all",
    "-",
    "a..b",
    "a...b",
    "ä",
    "Ä",
]


def test_hostile_values_give_valid_unique_keys():
    suffixes = [metric_key_suffix({"region": v}) for v in HOSTILE]
    for s in suffixes:
        assert_valid_mlflow_key(s)
    assert len(set(suffixes)) == len(HOSTILE)
    # unique even on a case-insensitive store (MySQL's default collation)
    assert len({s.lower() for s in suffixes}) == len(HOSTILE)


def test_plain_values_stay_readable():
    # a value already valid and lower case is kept as is: no hash, no mangling
    assert metric_key_suffix({"region": "north"}) == "region_north"
    assert metric_key_suffix({"region": "north", "year": 2024}) == "region_north.year_2024"
    assert metric_key_suffix({}) == "all"
    # changed ones keep a readable stem
    assert metric_key_suffix({"region": "North"}).startswith("region_North-")
    assert metric_key_suffix({"region": "a/b"}).startswith("region_a_b-")


def test_empty_and_all_partition_do_not_collide():
    assert metric_key_suffix({}) != metric_key_suffix({"region": "all"})


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=30), st.one_of(st.text(max_size=600), st.integers(), st.floats()), max_size=3
    )
)
def test_suffix_is_always_a_valid_key(values):
    assert_valid_mlflow_key(metric_key_suffix(values))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=300), min_size=2, max_size=20, unique=True))
def test_suffix_is_unique_per_value(values):
    suffixes = [metric_key_suffix({"region": v}) for v in values]
    assert len(set(suffixes)) == len(values)
    assert len({s.lower() for s in suffixes}) == len(values)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(categories=["Lu", "Ll"]), min_size=1, max_size=40))
def test_values_differing_only_in_case(value):
    variants = {value, value.lower(), value.upper(), value.swapcase()}
    suffixes = {metric_key_suffix({"region": v}) for v in variants}
    assert len(suffixes) == len(variants)
    assert len({s.lower() for s in suffixes}) == len(variants)


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=130, max_size=600), st.text(min_size=1, max_size=5))
def test_long_values_differing_after_the_cut(stem, tail1):
    other = tail1 + "#"
    a = metric_key_suffix({"region": stem + tail1})
    b = metric_key_suffix({"region": stem + other})
    assert a != b
    assert_valid_mlflow_key(a)
    assert_valid_mlflow_key(b)


KEY_JOIN_BUG = (
    "BUG: tasks/tracking/adapter.py metric_key_suffix: the raw key '.'.join(f'{k}_{v}') is not injective, and "
    "a raw key made only of [A-Za-z0-9_.- ] in lower case is returned without a hash, so distinct "
    "partitions get the same MLflow metric key (report.py's dict then silently keeps only one): "
    "{'a': 'x.b_y', 'b': 'z'} and {'a': 'x', 'b': 'y.b_z'} both give 'a_x.b_y.b_z'; likewise a null "
    "value and the string 'None' both give 'region_None-<same hash>'"
)


def test_two_key_partitions_with_dots_do_not_collide():
    assert metric_key_suffix({"a": "x.b_y", "b": "z"}) != metric_key_suffix({"a": "x", "b": "y.b_z"})


def test_null_and_the_string_none_do_not_collide():
    assert metric_key_suffix({"region": None}) != metric_key_suffix({"region": "None"})


# --- partition_label ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        ({}, "all"),
        ({"region": "north"}, "region=north"),
        ({"region": "Zürich", "year": 2024}, "region=Zürich/year=2024"),
        ({"region": "a/b", "shop": " ..  "}, "region=a/b/shop= ..  "),
        ({"region": "North"}, "region=North"),
        ({"region": "x" * 500}, "region=" + "x" * 500),
    ],
)
def test_partition_label_keeps_original_values(values, expected):
    assert partition_label(values) == expected


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
        st.text(alphabet=st.characters(exclude_characters="/="), max_size=50),
        min_size=1,
        max_size=3,
    )
)
def test_partition_label_round_trips(values):
    label = partition_label(values)
    parsed = dict(part.split("=", 1) for part in label.split("/"))
    assert parsed == values
