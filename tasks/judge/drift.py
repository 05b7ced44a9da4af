"""The nightly series: an evaluation's earlier runs, read back from MLflow, and the band of each
partition's own history.

Runs of one series share the tag ``bce_eval.series``: the deployment's id for a deployment's runs,
else the data's location and label (a repeated ``bce-eval evaluate`` of the same data), and in both
cases the model's lineage (:func:`model_lineage`): another model on the same data has a history of
its own, so a change of model is never taken for drift. The band of a partition (and of the overall
BCE) over its last runs is

    median(h) ± k · sqrt((1.4826 · MAD(h))² + se²)

where ``h`` are its past BCEs, MAD the median absolute deviation (1.4826 · MAD estimates a standard
deviation robustly: one bad night does not widen the band), ``se`` the current BCE's standard error
(so a quiet series does not flag sampling noise), and ``k`` 3 by default (``--max-drift K`` sets it
and makes leaving the band a gate). A band needs ``MIN_HISTORY`` past runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from tasks.data.naming import metric_key_suffix
from tasks.errors import InputError
from tasks.redact import redact_uri

SERIES_TAG = "bce_eval.series"
PARTITION_PREFIX = "bce_by_partition/"
#: figures whose series bce-eval keeps per partition (``<figure>_by_partition/<partition>`` metrics), so a drift gate
#: can follow them: raw BCE, or normalized entropy, which a shift of the base rate moves far less
SERIES_FIGURES = ("bce", "normalized_entropy")
#: the estimate of a partition whose labels have not arrived, kept per partition beside them (never a drift point):
#: the night its labels come, the series sets the realized BCE against it (:data:`ESTIMATE_ERROR`)
ESTIMATED = "estimated_bce"
#: realized − estimated BCE of a partition estimated in the series' last run and realized now
ESTIMATE_ERROR = "estimate_error"
OVERALL = "overall"
DEFAULT_BAND = 3.0
MIN_HISTORY = 3
HISTORY_RUNS = 30


@dataclass(frozen=True)
class Series:
    """A run's series: its key, the earlier runs' BCEs, and this run's band per key (``k`` robust σ wide)."""

    key: str
    history: pl.DataFrame
    band: pl.DataFrame
    k: float = DEFAULT_BAND
    gated: bool = False  # --max-drift: leaving the band fails the run
    figure: str = "bce"  # the figure the series follows (one of SERIES_FIGURES)
    #: partitions estimated in the series' last run and realized now: :func:`estimate_errors`
    estimates: pl.DataFrame | None = None

    def estimate_line(self) -> str:
        """The estimates checked this run in words (how many, realized − estimated), or ""."""
        if self.estimates is None or not self.estimates.height:
            return ""
        e = self.estimates.get_column(ESTIMATE_ERROR)
        worst = self.estimates.sort(pl.col(ESTIMATE_ERROR).abs(), descending=True).row(0, named=True)
        return (
            f"estimates checked: {e.len()} partition(s) estimated in the last run have their labels now; realized − "
            f"estimated BCE {e.mean():+.4f} on average (largest {worst[ESTIMATE_ERROR]:+.4f}, {worst['partition']})"
        )

    def tags(self) -> dict[str, str]:
        left = self.band.filter(pl.col("drifted")).get_column("partition").to_list()
        return {SERIES_TAG: self.key, **({"drift.partitions": ",".join(left)[:4000]} if left else {})}

    @property
    def has_history(self) -> bool:
        return self.history.height > 0

    def notice(self) -> str:
        """This run's drift in words, after a "drift:" (which partitions, which band, whether it is a gate), or ""."""
        line, _ = drift_failures(self.band, self.k, self.figure)
        if line is None:
            return ""
        runs = self.history.get_column("run_id").n_unique()
        how = f"a gate (--max-drift {self.k:g})" if self.gated else "not a gate (--max-drift K fails a run on it)"
        return f"against {runs} earlier run(s) of this model on this data, {line}; {how}"


def model_lineage(
    tags: Mapping[str, str],
    *,
    score_col: str | None = None,
    score_kind: str = "",
    features: Sequence[str] = (),
    params: Mapping[str, Any] | None = None,
) -> str:
    """Which model a run evaluates, as its series follows it: the part of the series key that is the model.

    A registered model is one lineage across its versions and alias moves (``models:/churn@champion``
    moving from v1 to v2 stays the champion's series); its flavour is part of it (a model of another
    kind is another history). An unregistered logged model is its URI; stored scores, their column;
    a model fitted by the run, its configuration (the features and the estimator's parameters, hashed):
    a nightly refit of the same configuration continues its series, other features or parameters start one.
    """
    if score_col:
        return f"scores:{score_col} ({score_kind})"
    flavor = tags.get("model_flavor", "")
    if tags.get("model_name"):
        alias = f"@{tags['model_alias']}" if tags.get("model_alias") else ""
        return f"registered:{tags['model_name']}{alias} ({flavor})"
    if tags.get("model_uri"):
        return f"model:{redact_uri(tags['model_uri'])} ({flavor})"
    config = json.dumps({"features": list(features), "params": dict(params or {})}, sort_keys=True, default=repr)
    digest = hashlib.blake2b(config.encode(), digest_size=8).hexdigest()
    return f"fit:LogisticRegression on {len(features)} feature(s) #{digest}"


def series_key(data_location: str, label: str, deployment_id: str | None, lineage: str) -> str:
    """The series a run belongs to: its deployment, else its data and label; and in both its model's lineage.

    Quotes are percent-encoded: MLflow's search takes the key between quotes and has no escape for them.
    """
    where = f"deployment:{deployment_id}" if deployment_id else f"data:{data_location}#{label}"
    key = f"{where}|{lineage}"
    return key.replace("%", "%25").replace("'", "%27").replace('"', "%22")


def _point(row: Mapping[str, Any], figure: str) -> tuple[float, float]:
    """A figure's value and standard error: NE is BCE over the entropy of the base rate, so its se is BCE's scaled."""
    value, se = float(row[figure]), float(row.get("bce_se") or 0.0)
    return value, se if figure == "bce" else se * abs(value / row["bce"]) if row.get("bce") else 0.0


def current_points(
    table: pl.DataFrame, overall: dict[str, Any], keys: tuple[str, ...], figure: str = "bce"
) -> dict[str, tuple[str, float, float]]:
    """This run's (partition, value, standard error) of ``figure`` by series key: ``overall`` and each partition's
    metric key (partitions where it is undefined, as NE of one class, are left out)."""
    # no point where the figure is undefined (no label has arrived yet; NE of one class)
    out = {OVERALL: (OVERALL, *_point(overall, figure))} if overall.get(figure) is not None else {}
    if keys:
        for row in table.select(list(dict.fromkeys([*keys, "partition", "bce", "bce_se", figure]))).iter_rows(
            named=True
        ):
            if row[figure] is not None:
                out[metric_key_suffix({k: row[k] for k in keys})] = (row["partition"], *_point(row, figure))
    return out


def history_frame(runs: list[tuple[str, int, dict[str, float]]], figure: str = "bce") -> pl.DataFrame:
    """The series' earlier runs (``(run id, start time, metrics)``, as :func:`tasks.tracking.history.search_runs`
    reads them) as one row per (run, partition key) with its ``figure`` (a column of that name), oldest first."""
    prefix = f"{figure}_by_partition/"
    rows = []
    for run_id, start_time, metrics in runs:
        for name, value in metrics.items():
            part = OVERALL if name == figure else name[len(prefix) :] if name.startswith(prefix) else None
            if part is not None:
                rows.append({"run_id": run_id, "start_time": start_time, "key": part, figure: float(value)})
    schema = {"run_id": pl.String, "start_time": pl.Int64, "key": pl.String, figure: pl.Float64}
    return pl.DataFrame(rows, schema=schema).sort("start_time")


def latest_run(history: pl.DataFrame, experiment: str) -> str:
    """The newest earlier run of the series (``--baseline-run latest``); :class:`InputError` when there is none."""
    if not history.height:
        raise InputError(
            f"--baseline-run latest: this evaluation (the same data, label and model) has no earlier FINISHED run in "
            f"experiment {experiment!r}; run it once without --max-regression, or pass a run id to --baseline-run."
        )
    return str(history.sort("start_time").get_column("run_id")[-1])


def drift_band(
    history: pl.DataFrame, current: dict[str, tuple[str, float, float]], k: float = DEFAULT_BAND, figure: str = "bce"
) -> pl.DataFrame:
    """Each key's band from its own history, and whether this run's BCE left it (see the module's formula).

    The history is grouped by key once (not filtered per key: a nightly series of 10,000 partitions
    has hundreds of thousands of history rows).
    """
    pasts = dict(history.group_by("key").agg(pl.col(figure)).iter_rows()) if history.height else {}
    rows = []
    for key, (partition, bce, se) in current.items():
        past = np.asarray(pasts.get(key, ()), dtype=np.float64)
        if len(past) < MIN_HISTORY:
            rows.append(
                {
                    "key": key,
                    "partition": partition,
                    "n_history": len(past),
                    "median": None,
                    "low": None,
                    "high": None,
                    figure: bce,
                    "drifted": False,
                }
            )
            continue
        median = float(np.median(past))
        sigma = math.hypot(1.4826 * float(np.median(np.abs(past - median))), se)
        low, high = median - k * sigma, median + k * sigma
        rows.append(
            {
                "key": key,
                "partition": partition,
                "n_history": len(past),
                "median": median,
                "low": low,
                "high": high,
                figure: bce,
                "drifted": not low <= bce <= high,
            }
        )
    schema = {
        "key": pl.String,
        "partition": pl.String,
        "n_history": pl.Int64,
        "median": pl.Float64,
        "low": pl.Float64,
        "high": pl.Float64,
        figure: pl.Float64,
        "drifted": pl.Boolean,
    }
    return pl.DataFrame(rows, schema=schema)


def drift_failures(band: pl.DataFrame, k: float, figure: str = "bce") -> tuple[str | None, list[str]]:
    """The line naming the partitions (labels) that left their band, with their bands, and those partitions; or (None,
    [])."""
    out = band.filter(pl.col("drifted"))
    if not out.height:
        return None, []
    names = [
        f"{r['partition']} ({r[figure]:.4f} outside [{r['low']:.4f}, {r['high']:.4f}])"
        for r in out.iter_rows(named=True)
    ]
    more = f" and {len(names) - 20} more" if len(names) > 20 else ""
    what = "" if figure == "bce" else f"{figure}: "
    return f"{what}{out.height} left the band of their own history (median ± {k:g} robust σ): " + ", ".join(
        names[:20]
    ) + more, out.get_column("partition").to_list()


def estimate_errors(
    runs: list[tuple[str, int, dict[str, float]]], table: pl.DataFrame, keys: tuple[str, ...]
) -> pl.DataFrame:
    """Partitions whose last appearance in the series' earlier runs (``runs``, as
    :func:`tasks.tracking.history.search_runs` reads them) was an estimate (no label yet) and whose every label has
    arrived now: ``(key, partition, estimated_bce, bce, estimate_error = bce − estimated_bce)``, one row each.

    The error is of the estimate on the same rows when only the labels changed (the night's files rewritten with
    them); a partition realized in part then is not checked (its estimate covered only its unlabelled rows).
    """
    schema = {"key": pl.String, "partition": pl.String, ESTIMATED: pl.Float64, "bce": pl.Float64}
    realized_prefix, estimated_prefix = "bce_by_partition/", f"{ESTIMATED}_by_partition/"
    last: dict[str, float | None] = {}  # each key's newest appearance: its estimate, or None when it was realized
    for _, _, metrics in sorted(runs, key=lambda r: r[1]):  # oldest first
        for name, value in metrics.items():
            if name.startswith(realized_prefix):  # realized then (in whole or in part): no estimate to check
                last[name[len(realized_prefix) :]] = None
            elif name.startswith(estimated_prefix) and realized_prefix + name[len(estimated_prefix) :] not in metrics:
                last[name[len(estimated_prefix) :]] = float(value)
    rows = []
    if keys and "n_unlabelled" in table.columns:
        for row in table.filter((pl.col("n_unlabelled") == 0) & pl.col("bce").is_not_null()).iter_rows(named=True):
            key = metric_key_suffix({k: row[k] for k in keys})
            if last.get(key) is not None:
                rows.append({"key": key, "partition": row["partition"], ESTIMATED: last[key], "bce": row["bce"]})
    return pl.DataFrame(rows, schema=schema).with_columns((pl.col("bce") - pl.col(ESTIMATED)).alias(ESTIMATE_ERROR))
