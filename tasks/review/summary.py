"""What the terminal shows: the summary of an evaluation, its worst partitions, the seed's listing."""

from __future__ import annotations

import polars as pl

from tasks.metrics.auc import HIST_BINS
from tasks.metrics.calibration import ece_words
from tasks.metrics.late_labels import estimated_line
from tasks.metrics.schema import Z95
from tasks.redact import redact_uri
from tasks.review.results import Evaluation
from tasks.review.slices import format_slices

# MLflow 3.17's UI follows a global GenAI / model-training switch (default GenAI) over the
# experiment's own mlflow.experimentKind tag: links carry the switch
UI_VIEW = "workflowType=machine_learning"


def run_link(ev: Evaluation) -> str:
    """A link to the MLflow run in the UI (the tracking server's, or the local `bce-eval ui`)."""
    base = redact_uri(ev.tracking_uri or "")
    if not base.startswith(("http://", "https://")):
        base = "http://127.0.0.1:5000"
    return f"{base.rstrip('/')}/#/experiments/{ev.experiment_id}/runs/{ev.run_id}?{UI_VIEW}"


def format_table(table: pl.DataFrame, limit: int) -> str:
    """The worst ``limit`` partitions as aligned text."""
    t = table.sort("bce", descending=True, nulls_last=True).head(limit)
    rows = [("partition", "rows", "BCE", "95% interval", "accuracy", "ROC AUC", "gate", "note")]
    for r in t.iter_rows(named=True):
        auc = "" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}"
        ci = f"[{r['bce_low']:.3f}, {r['bce_high']:.3f}]" if r.get("bce_low") is not None else ""
        verdict = r.get("verdict", "")
        rows.append(
            (
                str(r["partition"]),
                f"{r['n_rows']:,}",
                _number(r["bce"], ".4f"),  # none where no label has arrived: the note says it is estimated
                ci,
                _number(r["accuracy"], ".3f"),
                auc,
                "" if verdict == "not judged" else verdict,
                r["note"],
            )
        )
    widths = [min(40, max(len(row[i]) for row in rows)) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c[:40].ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _number(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def calibration_line(o: dict) -> str:
    """Realized against expected BCE in words: the gap, its 95% interval, and what it says of the probabilities."""
    gap, low, high = (o.get(k) for k in ("calibration_gap", "calibration_gap_low", "calibration_gap_high"))
    if gap is None or low is None or high is None:
        return ""
    verdict = (
        "over-confident (more loss than its probabilities promise)"
        if low > 0
        else "under-confident (less loss than its probabilities promise)"
        if high < 0
        else "neither over- nor under-confident beyond chance (the gap tests confidence, not bias: see the ECE)"
    )
    return (
        f"calibration: realized BCE − expected (mean H(p) {o['expected_bce']:.4f}) = {gap:+.4f} "
        f"(95% {low:+.4f} to {high:+.4f}): {verdict}" + ece_words(o, "; ECE ")
    )


def decisions_line(o: dict) -> str:
    """The decision at the threshold in words: precision, recall, F1, FPR, recall at an FPR, and the costs."""
    if o.get("threshold") is None or not o.get("n_rows"):  # no labelled row: no decision to count
        return ""

    def f(name: str) -> str:
        return "n/a" if o.get(name) is None else f"{o[name]:.3f}"

    line = (
        f"decisions at p ≥ {o['threshold']:g}: precision {f('precision')}, recall {f('recall')}, F1 {f('f1')}, "
        f"FPR {f('fpr')}; recall {f('recall_at_fpr')} at FPR ≤ {o['at_fpr']:g}"
    )
    for t in o.get("also_at") or ():
        grid = round(t * HIST_BINS) / HIST_BINS
        on_grid = "" if grid == t else f" (at {grid:g} on the 1/{HIST_BINS} grid)"
        line += (
            f"; at p ≥ {t:g}{on_grid}: precision {f(f'at_{t:g}/precision')}, recall {f(f'at_{t:g}/recall')}, "
            f"F1 {f(f'at_{t:g}/f1')}, FPR {f(f'at_{t:g}/fpr')}"
        )
    if o.get("costs") and o.get("expected_cost") is not None:
        c = o["costs"]
        line += (
            f"; cost (fp={c['fp']:g}, fn={c['fn']:g}) {o['expected_cost']:.4f} a row, lowest "
            f"{o['best_cost']:.4f} at p ≥ {o['best_threshold']:.4f}"
        )
    return line


def format_summary(ev: Evaluation, dataset_name: str, top: int, ui_command: str, experiment: str = "") -> str:
    """The terminal summary: overall figures, the worst partitions, where to look in MLflow."""
    o = ev.overall
    auc = "n/a (one class)" if o.get("roc_auc") is None else f"{o['roc_auc']:.4f}"
    realized = (
        f"  overall BCE {o['bce']:.4f} (± {Z95 * o['bce_se']:.4f})   accuracy {o['accuracy']:.4f}   "
        f"ROC AUC {auc}   Brier {o['brier']:.4f}"
        if o.get("bce") is not None
        else "  overall BCE — (no label has arrived yet: nothing is realized)"
    )
    out = [
        f"BCE evaluation of {dataset_name}: {o['n_rows']:,} rows, {o['n_partitions']} partition(s)",
        *([f"  model: {ev.model}"] if ev.model else []),
        realized,
        *([f"  {estimated_line(o, ev.table)}"] if estimated_line(o, ev.table) else []),
        *([f"  {ev.estimates}"] if ev.estimates else []),
        *([f"  {calibration_line(o)}"] if calibration_line(o) else []),
        *([f"  {decisions_line(o)}"] if decisions_line(o) else []),
        *([f"  drift: {ev.drift}"] if ev.drift else []),
    ]
    if ev.partition_by and top:
        out.append(f"  worst {min(top, ev.table.height)} partition(s):")
        out.extend("    " + line for line in format_table(ev.table, top).splitlines())
    if ev.slices is not None:
        out.extend(format_slices(ev.slices, top or 5))
    if ev.audit_headline:
        out.append(f"  {ev.audit_headline}")
    if "partitions_computed" in o:
        out.append(
            f"  partitions: {o['partitions_computed']} computed, {o.get('partitions_reused', 0)} reused from the cache"
        )
    if ev.run_id:
        where = f"'{experiment}' (id {ev.experiment_id})" if experiment else str(ev.experiment_id)
        out.append(f"  MLflow run {ev.run_id} in experiment {where} at {redact_uri(ev.tracking_uri or '')}")
        out.append(
            f"  open it in a browser: {ui_command}"
            if ui_command.startswith(("http://", "https://"))
            else f"  open it with: {ui_command}"
        )
    return "\n".join(out)


def format_seed_listing(ev: Evaluation) -> str:
    """The seed article's printout: x, y, p(y) rounded to 2 places, and the log loss."""
    rows = ev.rows if ev.rows is not None else pl.DataFrame()
    x = rows.get_column(rows.columns[0]).to_list() if rows.height else []
    out = [
        "Seed article, 10 points (logistic regression, lbfgs):",
        f"  x = {x}",
        f"  y = {[int(v) for v in rows.get_column('y').to_list()] if rows.height else []}",
        f"  p(y) = {[round(float(v), 2) for v in rows.get_column('p').to_list()] if rows.height else []}",
        f"  Log Loss / Cross Entropy = {ev.overall['bce']:.4f}",
        f"  MLflow run {ev.run_id}",
    ]
    return "\n".join(out)
