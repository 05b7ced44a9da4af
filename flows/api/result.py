"""What :func:`flows.api.evaluate` returns: the figures as data, and the report (drawn when first asked for)."""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from tasks.data.dataset import Dataset
from tasks.judge.gates import GateResult
from tasks.judge.slice_gates import SliceJudgement
from tasks.models.scoring import Scorer
from tasks.review.results import ModelInfo

if TYPE_CHECKING:
    from tasks.tracking.content import RunContent

#: the height of the report's frame in a notebook, in pixels
REPORT_HEIGHT = 720


@dataclass(frozen=True)
class ReportParts:
    """What the report and an MLflow run are drawn from, besides the figures."""

    dataset: Dataset
    scorer: Scorer  # how each row was scored (a notebook may score rows of its own with it)
    model: ModelInfo
    sample: pl.DataFrame  # the seeded sample of scored rows (every row of a small dataset)
    fitted: Any  # the LogisticRegression fitted by the call, else None
    bound: float | None  # a per-partition BCE gate's bound, drawn on the forest plot
    experiment: str
    run_name: str | None


@dataclass(frozen=True)
class BceEvaluation:
    """One evaluation's figures: overall, per partition and per slicing, with the gates' verdicts.

    ``overall`` holds every figure of the metric schema (``bce``, ``bce_low``, ``bce_high``,
    ``normalized_entropy``, ``roc_auc``, …); ``table`` one row per partition, with its verdict;
    ``slices`` one Polars table per declared slicing (by its name, e.g. ``"region"``), ``gaps`` the
    gaps between its slices. ``report_html`` is the run's ``report.html``, which Jupyter shows inline.
    """

    overall: dict[str, Any]
    table: pl.DataFrame
    judgement: SliceJudgement | None
    gate: GateResult | None
    model: str
    parts: ReportParts = field(repr=False)
    run_id: str | None = None
    _drawn: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def bce(self) -> float:
        """The overall BCE (log loss)."""
        return float(self.overall["bce"])

    @property
    def passed(self) -> bool:
        """True without a gate, or when every gate passed."""
        return self.gate is None or self.gate.passed

    @property
    def slices(self) -> dict[str, pl.DataFrame]:
        """Each slicing's table: the slice, its figures, verdict and p-value first, then the sums they come from."""
        from tasks.review.slices import shown_columns

        tables = self.judgement.tables if self.judgement else {}
        return {key: t.select(list(dict.fromkeys([*shown_columns(t), *t.columns]))) for key, t in tables.items()}

    @property
    def gaps(self) -> dict[str, pl.DataFrame]:
        return dict(self.judgement.gaps) if self.judgement else {}

    def figures(self) -> dict[str, Any]:
        """The report's figures (matplotlib) by artifact name, a forest plot per slicing among them; drawn once."""
        from tasks.review.slices import slice_figures

        sliced = slice_figures(self.judgement, self.bce) if self.judgement else {}
        return {**self._figures(), **sliced}

    def _figures(self) -> dict[str, Any]:
        if "figures" not in self._drawn:
            from tasks.review.plots import make_figures

            dataset, parts = self.parts.dataset, self.parts
            linear = None
            if parts.fitted is not None and len(dataset.features) == 1:
                linear = (float(parts.fitted.coef_.ravel()[0]), float(parts.fitted.intercept_.ravel()[0]))
            self._drawn["figures"] = make_figures(
                parts.sample,
                self.table,
                self.bce,
                dataset.features,
                linear,
                bool(dataset.partition_by),
                self.overall["n_rows"],
                parts.bound,
                self.overall,
            )
        return self._drawn["figures"]

    def content(self) -> RunContent:
        """Everything an MLflow run of this evaluation holds (the report among its text artifacts)."""
        if "content" not in self._drawn:
            from tasks.review.run_content import build_evaluation_log

            parts = self.parts
            self._drawn["content"] = build_evaluation_log(
                dataset=parts.dataset,
                table=self.table,
                overall=self.overall,
                model=parts.model,
                experiment=parts.experiment,
                run_name=parts.run_name or self._default_run_name(),
                figures=self._figures(),
                sample=parts.sample,
                fitted_model=parts.fitted,
                max_partition_metrics=100,
                tags={"bce_eval.entry": "python-api", **(self.gate.tags() if self.gate else {})},
                slices=self.judgement,
            )
        return self._drawn["content"]

    def _default_run_name(self) -> str:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")  # the report's title names the data already
        return f"{self.model} · {stamp}"

    @property
    def report_html(self) -> str:
        """The self-contained ``report.html``: the summary, the tables, the plots, a section per slicing."""
        return self.content().text_artifacts["report.html"]

    def _repr_html_(self) -> str:
        # in a frame of its own: the report's styles and script stay out of the notebook's page; the frame
        # grows to the report's height once loaded (a srcdoc frame is the page's own origin)
        return (
            f'<iframe srcdoc="{html.escape(self.report_html, quote=True)}" style="width:100%;height:{REPORT_HEIGHT}px;'
            'border:1px solid #ddd" title="bce-eval report" '
            "onload=\"this.style.height=(this.contentDocument.documentElement.scrollHeight+4)+'px'\"></iframe>"
        )

    def __repr__(self) -> str:
        o = self.overall
        return (
            f"<BceEvaluation bce={o['bce']:.6f} n_rows={o['n_rows']} slicings={list(self.slices)} passed={self.passed}>"
        )

    def __str__(self) -> str:
        o = self.overall
        lines = [
            f"BCE {o['bce']:.6f} (95% CI {o['bce_low']:.6f} to {o['bce_high']:.6f}) on {o['n_rows']:,} rows, "
            f"{self.table.height} partition(s); {self.model}",
        ]
        lines += [f"{key}: {t.height} slice(s)" for key, t in self.slices.items()]
        if self.gate is not None:
            lines.append("gate passed" if self.gate.passed else f"gate FAILED: {self.gate.message}")
        return "\n".join(lines)

    def logged(self, log_to: str) -> BceEvaluation:
        """This evaluation logged to MLflow: ``"active"`` (the active run, left open) or a tracking URI (a new run)."""
        from tasks.tracking.operations import log_evaluation, log_into_active_run

        if log_to == "active":
            run_id = log_into_active_run(self.content())
        else:
            run_id, _ = log_evaluation(self.content(), log_to)
        return dataclasses.replace(self, run_id=run_id, _drawn=self._drawn)
