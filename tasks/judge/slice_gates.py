"""Gates per slice, with few false alarms: Benjamini–Hochberg across the slices of each slicing.

With hundreds of slices, judging each slice's 95% interval alone fails a few healthy slices every
night by chance. A ``per slice`` gate on a figure with a standard error (BCE) instead tests each
slice one-sided (H0: the slice meets the bound) and fails the slices Benjamini–Hochberg rejects at
the false discovery rate ``GateSettings.fdr_level``, per slicing. Figures without one (ROC AUC,
accuracy) are judged on their value. Slices too small to judge (``min_rows``, ``min_class_rows``)
keep the verdict ``too small``. Each slicing's table gains ``verdict`` and, where tested,
``p_value``; the gaps between its slices (:func:`tasks.judge.gaps.slicing_gaps`) come beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tasks.judge.fdr import fdr_failures
from tasks.judge.gaps import slicing_gaps
from tasks.judge.gates import Gate, GateResult, GateSettings
from tasks.metrics.schema import interval_of

#: the figures whose gaps between slices each slicing reports
GAP_FIGURES = ("bce", "normalized_entropy", "d2_log_loss", "brier", "accuracy", "roc_auc", "positive_rate")


@dataclass
class SliceJudgement:
    """Each slicing's table with verdicts, its gaps, and the failures in words."""

    tables: dict[str, pl.DataFrame]
    gaps: dict[str, pl.DataFrame]
    failures: list[str] = field(default_factory=list)
    at_fault: list[str] = field(default_factory=list)
    method: str = ""
    audits: dict[str, pl.DataFrame] = field(default_factory=dict)  # each slicing's audit (with --audit)


def judge_slices(slices: dict[str, pl.DataFrame], overall: dict, gates: GateSettings | None) -> SliceJudgement:
    """Verdicts of every ``per slice`` gate on every slicing, and each slicing's gaps."""
    rules = [g for g in (gates.all_gates() if gates else []) if g.scope == "slice"]
    out = SliceJudgement({}, {})
    judged_counts: dict[str, int] = {}
    for key, table in slices.items():
        out.gaps[key] = slicing_gaps(table, overall, [f for f in GAP_FIGURES if f in table.columns])
        if not rules:
            out.tables[key] = table.with_columns(pl.lit("not judged").alias("verdict"))
            continue
        small = _too_small(table, gates)
        verdict = np.where(small, "too small", "passed").astype(object)
        p_values = np.full(table.height, np.nan)
        for gate in rules:
            failed, p, tested = _judge(table, gate, gates, ~small)
            p_values = np.where(tested, p, p_values)
            if failed.any():
                verdict[failed] = "failed"
                names = table.get_column("slice").filter(pl.Series(failed)).to_list()
                out.failures.append(f"{len(names)} slice(s) of {key} fail {gate.describe()}: " + ", ".join(names[:20]))
                out.at_fault += [f"{key}:{n}" for n in names]
        out.tables[key] = table.with_columns(pl.Series("verdict", verdict.tolist()), pl.Series("p_value", p_values))
        judged_counts[key] = int((~small).sum())
    if judged_counts:
        counts = ", ".join(f"{n} of {key}" for key, n in judged_counts.items())
        out.method = (
            f"per-slice gates: Benjamini–Hochberg at false discovery rate {gates.fdr_level:g} within each slicing "
            f"(slices judged: {counts}; BCE tested one-sided on its standard error)"
        )
    return out


def _too_small(table: pl.DataFrame, gates: GateSettings) -> np.ndarray:
    n, n_pos = table.get_column("n_rows").to_numpy(), table.get_column("n_pos").to_numpy()
    small = (n < gates.min_rows) | (np.minimum(n_pos, n - n_pos) < gates.min_class_rows)
    return small | table.get_column("bce_se").is_null().to_numpy()


def _judge(table: pl.DataFrame, gate: Gate, gates: GateSettings, judged: np.ndarray) -> tuple[np.ndarray, ...]:
    """(failed, p-values, tested) of one gate over one slicing's slices."""
    values = table.get_column(gate.figure).cast(pl.Float64).fill_null(np.nan).to_numpy()
    interval = interval_of(gate.figure)
    if interval is not None and (gate.judge_on or gates.judge_on) == "interval":
        se = table.get_column(f"{gate.figure}_se").cast(pl.Float64).fill_null(np.nan).to_numpy()
        return fdr_failures(values, se, gate.bound, gate.op, gates.fdr_level, judged)
    beyond = values > gate.bound if gate.op == "<=" else values < gate.bound
    failed = judged & ~np.isnan(values) & beyond
    return failed, np.full(len(values), np.nan), np.zeros(len(values), bool)


def with_slice_failures(verdict: GateResult | None, slices: SliceJudgement | None) -> GateResult | None:
    """The gate's result with the per-slice gates' failures added (the run fails when a slice does)."""
    if slices is None or verdict is None:
        return verdict
    return GateResult(
        verdict.passed and not slices.failures,
        [*verdict.failures, *slices.failures],
        [*verdict.partitions, *slices.at_fault],
        verdict.too_small,
        verdict.verdicts,
    )
