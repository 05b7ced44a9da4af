"""Quality gates as data: each gate is (figure, direction, bound, scope, judged on the point or the
interval), as MLflow's ``MetricThreshold`` and TFMA's thresholds are; any figure of the metric
schema can be gated without a line of code here.

- ``overall``: the figure over all rows;
- ``partition``: each partition's figure (partitions too small to judge are never failed);
- ``baseline``: the figure minus the baseline run's, overall and per partition (a regression);
- ``drift``: how far the figure left the band of its own nightly series, in robust σ.

- ``slice``: each slice of every ``--slice`` slicing, with few false alarms (:mod:`tasks.judge.slice_gates`).

``--max-bce``, ``--max-partition-bce``, ``--max-regression`` and ``--max-drift`` are spellings of
gates; ``--gate "roc_auc >= 0.7 per partition"`` spells any other (:func:`parse_gate`).

A gate never hides the evaluation: the run is logged whole and tagged ``quality_gate=failed``;
only then does the flow fail, naming the partitions at fault.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.judge.drift import SERIES_FIGURES, drift_failures
from tasks.metrics.schema import gate_targets, interval_of

Scope = Literal["overall", "partition", "slice", "baseline", "drift"]
Op = Literal["<=", ">="]
JudgeOn = Literal["interval", "point"]

_SCOPE_WORDS = {
    "overall": "overall",
    "per partition": "partition",
    "per slice": "slice",
    "vs baseline": "baseline",
    "drift": "drift",
}
_GATE = re.compile(
    r"^\s*(?P<figure>[a-z_0-9]+)\s+(?P<drift>drift\s+)?(?P<op><=|>=)\s*(?P<bound>[-+]?[0-9.]+(?:e[-+]?[0-9]+)?)"
    r"(?:\s+(?P<scope>overall|per partition|per slice|vs baseline))?(?:\s+on\s+(?P<on>point|interval))?\s*$"
)


class Gate(BaseModel):
    """One gate: ``figure op bound`` in a scope; ``judge_on`` None takes the settings' rule."""

    model_config = ConfigDict(frozen=True)

    figure: str
    op: Op
    bound: float
    scope: Scope = "overall"
    judge_on: JudgeOn | None = None

    @model_validator(mode="after")
    def _known_figure(self) -> "Gate":
        if self.figure not in gate_targets():
            near = difflib.get_close_matches(self.figure, gate_targets(), n=1)
            raise ValueError(
                f"--gate {self.describe()!r}: {self.figure!r} is not a figure of the metric schema"
                + (f"; did you mean {near[0]!r}? Gate" if near else "; gate")
                + f" one of {', '.join(gate_targets())}."
            )
        if self.scope == "drift" and self.figure not in SERIES_FIGURES:
            raise ValueError(
                f"--gate {self.describe()!r}: the nightly series keeps {', '.join(SERIES_FIGURES)} per partition, "
                f"not {self.figure}; gate its drift on one of those."
            )
        if self.scope == "drift" and (self.op != "<=" or self.bound <= 0):
            raise ValueError(
                f"--gate {self.describe()!r}: a drift gate bounds the robust σ a value may leave its band by: "
                f"'{self.figure} drift <= K', K > 0."
            )
        return self

    def describe(self) -> str:
        """The gate as ``--gate`` spells it."""
        if self.scope == "drift":
            return f"{self.figure} drift {self.op} {self.bound:g}"
        scope = {v: k for k, v in _SCOPE_WORDS.items()}[self.scope]
        return f"{self.figure} {self.op} {self.bound:g} {scope}" + (f" on {self.judge_on}" if self.judge_on else "")


def parse_gate(text: str) -> Gate:
    """``"roc_auc >= 0.7 per partition"`` → :class:`Gate`. Scope: ``overall`` (the default), ``per
    partition``, ``vs baseline`` (the figure minus the baseline run's), or ``FIGURE drift <= K``;
    ``on point`` or ``on interval`` overrides ``--judge-on``. :class:`ValueError` naming the text otherwise."""
    m = _GATE.match(text.lower())
    if m is None and re.match(r"^\s*at_[^/\s]+/", text):  # a figure at a further threshold (--also-at)
        raise ValueError(
            f"--gate {text!r}: figures at a further threshold (at_<t>/…) are reported, not gated; gate the first "
            "threshold's figure instead, e.g. --threshold 0.3 --gate 'recall >= 0.9'."
        )
    if m is None:
        raise ValueError(
            f"--gate {text!r}: expected 'FIGURE <=|>= BOUND [overall|per partition|per slice|vs baseline] [on point|on "
            "interval]' "
            f"or 'FIGURE drift <= K', e.g. 'roc_auc >= 0.7 per partition'."
        )
    if m["drift"] and m["scope"]:
        raise ValueError(f"--gate {text!r}: a drift gate judges overall and every partition; drop {m['scope']!r}.")
    scope = "drift" if m["drift"] else _SCOPE_WORDS[m["scope"] or "overall"]
    try:
        return Gate(figure=m["figure"], op=m["op"], bound=float(m["bound"]), scope=scope, judge_on=m["on"])
    except ValidationError as exc:  # the rule's own words, not pydantic's report around them
        err = exc.errors(include_url=False)[0]
        raise ValueError(str(err.get("ctx", {}).get("error", err["msg"]))) from None


class GateSettings(BaseModel):
    """The gates of an evaluation (each spelling unset means "not checked") and who is judged."""

    max_bce: float | None = Field(default=None, gt=0, description="Fail when the overall BCE exceeds this.")
    max_partition_bce: float | None = Field(default=None, gt=0, description="Fail partitions whose BCE exceeds this.")
    max_regression: float | None = Field(
        default=None,
        ge=0,
        description="Fail when BCE exceeds the baseline's by more than this (overall or per partition).",
    )
    baseline_run_id: str | None = Field(
        default=None,
        description="The MLflow run whose figures are the baseline, or 'latest': the newest earlier run of the same "
        "evaluation (data, label and model).",
    )
    max_drift: float | None = Field(
        default=None,
        gt=0,
        description="Fail when the overall BCE or a partition's leaves the band of its own series: median ± this many "
        "robust σ.",
    )
    rules: list[Gate] = Field(
        default_factory=list,
        description="Gates on any figure, e.g. 'roc_auc >= 0.7 per partition', 'brier <= 0.2', 'accuracy >= -0.01 vs "
        "baseline'.",
    )
    min_rows: int = Field(
        default=1, ge=1, description="Partitions with fewer rows are reported as too small, not judged."
    )
    min_class_rows: int = Field(
        default=0, ge=0, description="Partitions with fewer positives or negatives are too small to judge."
    )
    fdr_level: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Per-slice gates fail the slices Benjamini–Hochberg rejects at this false discovery rate, per "
        "slicing.",
    )
    judge_on: JudgeOn = Field(
        default="interval",
        description="interval: a partition fails only when its whole 95% interval is beyond the bound (figures that "
        "have one); point: when its value is.",
    )

    @field_validator("rules", mode="before")
    @classmethod
    def _parse_rules(cls, value: Any) -> Any:
        """A deployment's parameters may spell each gate as ``--gate`` does."""
        if isinstance(value, str):
            value = [value]
        return [parse_gate(v) if isinstance(v, str) else v for v in value or []]

    @model_validator(mode="after")
    def _baseline_pairs_with_regression(self) -> "GateSettings":
        """A regression gate needs its baseline, and a baseline is read only for such a gate."""
        # messages name the CLI option first (most users start there), then the settings path
        # that a deployment's parameters use; this model is always EvaluateSettings.gates
        against = self.max_regression is not None or any(g.scope == "baseline" for g in self.rules)
        if against and not self.baseline_run_id:
            raise ValueError(
                "--max-regression needs --baseline-run RUN_ID (or latest) (settings: gates.max_regression needs "
                "gates.baseline_run_id)."
            )
        if self.baseline_run_id and not against:
            raise ValueError(
                "--baseline-run is only read for --max-regression; pass --max-regression DELTA or drop --baseline-run "
                "(settings: gates.baseline_run_id needs gates.max_regression)."
            )
        return self

    def all_gates(self) -> list[Gate]:
        """Every gate: the spelled ones first, then :attr:`rules`."""
        spelled = [
            Gate(figure="bce", op="<=", bound=self.max_bce, scope="overall", judge_on="point")
            if self.max_bce is not None
            else None,
            Gate(figure="bce", op="<=", bound=self.max_partition_bce, scope="partition")
            if self.max_partition_bce is not None
            else None,
            Gate(figure="bce", op="<=", bound=self.max_regression, scope="baseline", judge_on="point")
            if self.max_regression is not None
            else None,
            Gate(figure="bce", op="<=", bound=self.max_drift, scope="drift") if self.max_drift is not None else None,
        ]
        return [g for g in spelled if g is not None] + list(self.rules)

    @property
    def active(self) -> bool:
        return bool(self.all_gates())

    @property
    def drift_figure(self) -> str:
        """The figure the nightly series follows: the narrowest drift gate's, else BCE."""
        gates = sorted((g for g in self.all_gates() if g.scope == "drift"), key=lambda g: g.bound)
        return gates[0].figure if gates else "bce"

    @property
    def drift_k(self) -> float | None:
        """The width of the drift band a gate asks for (the narrowest), or None."""
        ks = [g.bound for g in self.all_gates() if g.scope == "drift"]
        return min(ks) if ks else None

    def partition_bound(self, figure: str = "bce") -> float | None:
        """The bound a per-partition gate puts on ``figure`` (the forest plot draws it), or None."""
        bounds = [g.bound for g in self.all_gates() if g.scope == "partition" and g.figure == figure]
        return min(bounds) if bounds else None


@dataclass
class GateResult:
    """The verdict: passed, and if not, one line per failure and the partitions at fault."""

    passed: bool
    failures: list[str] = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)
    too_small: list[str] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)

    @property
    def message(self) -> str:
        if self.passed:
            return "quality gate passed"
        return "quality gate failed: " + "; ".join(self.failures)

    def tags(self) -> dict[str, str]:
        out = {"quality_gate": "passed" if self.passed else "failed"}
        if not self.passed:
            out["quality_gate.failures"] = self.message[:4000]
            out["quality_gate.partitions"] = ",".join(self.partitions)[:4000]
        return out


@dataclass
class _Judging:
    """What every scope's judge reads and writes."""

    settings: GateSettings
    judged: pl.DataFrame  # partitions large enough to judge
    overall: dict[str, Any]
    baseline: dict[str, Any] | None
    drift: pl.DataFrame | None
    drift_figure: str = "bce"
    failures: list[str] = field(default_factory=list)
    at_fault: list[str] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)

    def fail(self, line: str, partitions: list[str]) -> None:
        self.failures.append(line)
        self.at_fault.extend(p for p in partitions if p not in self.at_fault)
        self.verdicts.update({p: "failed" for p in partitions if p in self.verdicts})


def check_gates(
    table: pl.DataFrame,
    overall: dict[str, Any],
    gates: GateSettings,
    baseline: dict[str, Any] | None = None,
    drift: pl.DataFrame | None = None,
) -> GateResult:
    """Judge an evaluation against every gate of ``gates``.

    ``baseline`` is ``{"overall": {figure: value}, "partitions": {label: {figure: value}}}`` of the
    baseline run (:func:`tasks.review.results.baseline_from`); ``drift`` the series' band
    (:func:`tasks.judge.drift.drift_band`), already computed with the gate's width.
    """
    if "partition" not in table.columns:
        table = table.with_columns(pl.lit("all").alias("partition"))
    small = (pl.col("n_rows") < gates.min_rows) | (
        pl.min_horizontal(pl.col("n_pos"), pl.col("n_rows") - pl.col("n_pos")) < gates.min_class_rows
    )
    if gates.judge_on == "interval" and "bce_se" in table.columns:
        small = small | pl.col("bce_se").is_null()  # one row: no interval to judge
    # no label yet: judged only by a gate on an estimated figure (the realized ones are null there)
    estimated = (pl.col("n_rows") == 0) & (pl.col("n_unlabelled") > 0) if "n_unlabelled" in table.columns else None
    small = small if estimated is None else small & ~estimated
    too_small = table.filter(small).get_column("partition").to_list()
    judging = _Judging(gates, table.filter(~small), overall, baseline, drift, gates.drift_figure)
    judging.verdicts = (
        dict.fromkeys(too_small, "too small")
        | dict.fromkeys(judging.judged.get_column("partition").to_list(), "passed")
        | dict.fromkeys([] if estimated is None else table.filter(estimated).get_column("partition"), "estimated")
    )
    for gate in gates.all_gates():
        _JUDGES[gate.scope](gate, judging)
    return GateResult(not judging.failures, judging.failures, judging.at_fault, too_small, judging.verdicts)


def _breaks(gate: Gate, value: float, low: float | None, high: float | None, on: JudgeOn) -> bool:
    """Whether a value (its whole interval, when judged on it) is beyond the bound."""
    if on == "interval" and low is not None and high is not None:
        value = low if gate.op == "<=" else high
    return value > gate.bound if gate.op == "<=" else value < gate.bound


def _on(gate: Gate, judging: _Judging) -> JudgeOn:
    on = gate.judge_on or judging.settings.judge_on
    return on if interval_of(gate.figure) else "point"


def _beyond(gate: Gate) -> str:
    return "above" if gate.op == "<=" else "below"


def _judge_overall(gate: Gate, judging: _Judging) -> None:
    value = judging.overall.get(gate.figure)
    if value is None:
        return  # undefined here (ROC AUC of one class): nothing to judge, said by the table's note
    low, high = (judging.overall.get(c) for c in interval_of(gate.figure) or (None, None))
    on = _on(gate, judging)
    if _breaks(gate, value, low, high, on):
        ci = f" (95% interval [{low:.4f}, {high:.4f}])" if on == "interval" else ""
        judging.fail(f"overall {gate.figure} {value:.4f}{ci} {'>' if gate.op == '<=' else '<'} {gate.bound:g}", [])


def _judge_partitions(gate: Gate, judging: _Judging) -> None:
    on = _on(gate, judging)
    cols = ["partition", gate.figure, *(interval_of(gate.figure) if on == "interval" else ())]
    bad = []
    for row in judging.judged.select(cols).iter_rows(named=True):
        value = row[gate.figure]
        low, high = (row[c] for c in interval_of(gate.figure)) if on == "interval" else (None, None)
        if value is not None and _breaks(gate, value, low, high, on):
            bad.append((row["partition"], value, low, high))
    if not bad:
        return
    bad.sort(key=lambda r: r[1], reverse=gate.op == "<=")
    how = f"whose 95% interval lies {_beyond(gate)}" if on == "interval" else f"with {gate.figure} {_beyond(gate)}"
    names = [f"{p} ({v:.4f} [{lo:.4f}, {hi:.4f}])" if on == "interval" else f"{p} ({v:.4f})" for p, v, lo, hi in bad]
    what = "" if gate.figure == "bce" else f" ({gate.figure})"
    judging.fail(f"{len(bad)} partition(s) {how} {gate.bound:g}{what}: " + ", ".join(names[:20]), [p for p, *_ in bad])


def _judge_baseline(gate: Gate, judging: _Judging) -> None:
    if judging.baseline is None:
        return
    base_value = judging.baseline["overall"].get(gate.figure)
    value = judging.overall.get(gate.figure)
    if value is not None and base_value is not None and _breaks(gate, value - base_value, None, None, "point"):
        judging.fail(
            f"overall {gate.figure} moved by {value - base_value:+.4f} (beyond {gate.bound:+g}) against the baseline "
            f"{base_value:.4f}",
            [],
        )
    parts = judging.baseline.get("partitions", {})
    moved = []
    for p, v in judging.judged.select("partition", gate.figure).iter_rows():
        b = parts.get(p, {}).get(gate.figure)
        if v is not None and b is not None and _breaks(gate, v - b, None, None, "point"):
            moved.append((p, v - b))
    if moved:
        names = ", ".join(f"{p} ({d:+.4f})" for p, d in moved[:20])
        judging.fail(
            f"{len(moved)} partition(s) moved {gate.figure} by more than {gate.bound:+g} against the baseline: {names}",
            [p for p, _ in moved],
        )


def _judge_drift(gate: Gate, judging: _Judging) -> None:
    """A partition (or the overall figure) outside the band of its own series fails the gate."""
    if judging.drift is None:
        return
    if gate.figure != judging.drift_figure:
        return  # the series follows one figure a run: the narrowest drift gate's (GateSettings.drift_figure)
    line, left = drift_failures(judging.drift, gate.bound, gate.figure)
    if line:
        judging.fail(line, left)


_JUDGES = {
    "overall": _judge_overall,
    "partition": _judge_partitions,
    "baseline": _judge_baseline,
    "drift": _judge_drift,
    "slice": lambda gate, judging: None,  # every slicing's slices: tasks.judge.slice_gates
}


def with_verdicts(table: pl.DataFrame, result: "GateResult | None") -> pl.DataFrame:
    """The table with the gate's ``verdict`` per partition (``not judged`` without a gate)."""
    if result is None:
        return table.with_columns(pl.lit("not judged").alias("verdict"))
    names = table.get_column("partition") if "partition" in table.columns else pl.Series(["all"] * table.height)
    return table.with_columns(pl.Series("verdict", [result.verdicts.get(p, "not judged") for p in names.to_list()]))
