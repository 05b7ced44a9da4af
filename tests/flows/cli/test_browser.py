"""A reviewer's walk through the MLflow UI that `bce-eval ui` serves, in headless Chromium: the plain
address opens the experiments list, the experiment's runs show BCE and the gate's verdict as columns
in the model-training view with a failed gate marked, a reviewer's own columns are kept, and the
run's report, its metrics, table and plot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.flows.test_servers import _free_port, _stop, _wait_http

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: the runs table's columns as MLflow's UI names them (its ag-grid col-id)
BCE, GATE = "metrics.`bce`", "tags.`quality_gate`"

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)"),
]


def _headers_in_view(page) -> dict[str, str]:
    """The runs table's column headers a reviewer sees without scrolling: col-id -> header text, those
    whose box lies within the table's visible width (as the screenshot shows it)."""
    return page.evaluate(
        """() => {
            const grid = document.querySelector('.ag-root-wrapper').getBoundingClientRect();
            const out = {};
            for (const h of document.querySelectorAll('.ag-header-cell[col-id]')) {
                const r = h.getBoundingClientRect();
                if (r.width > 0 && r.left >= grid.left && r.right <= grid.right) out[h.getAttribute('col-id')] =
                h.innerText.trim();
            }
            return out;
        }"""
    )


def _cell(page, run_id: str, column: str):
    return page.locator(f'.ag-center-cols-container [row-id="{run_id}"] [col-id="{column}"]')


def _wait_for_columns_in_view(page, *columns: str) -> None:
    # the UI applies its column order once the grid has drawn: wait for it, not for a fixed time
    page.wait_for_function(
        """cols => { const g = document.querySelector('.ag-root-wrapper'); if (!g) return false;
            const right = g.getBoundingClientRect().right;
            return cols.every(c => { const h = document.querySelector(`.ag-header-cell[col-id="${c}"]`);
                return h && h.getBoundingClientRect().width > 0 && h.getBoundingClientRect().right <= right; }); }""",
        arg=list(columns),
        timeout=30_000,
    )


def _lands_on_the_experiments_and_opens_the_runs(
    page, base: str, experiment_name: str, runs: dict, tmp_path: Path
) -> None:
    """A browser that never chose anything opens the plain address: the experiments list, then the
    experiment by its link (the UI changes pages without loading the page again), its runs with BCE
    and the verdict in view next to the run's name, the failed gate also in the run's name."""
    page.goto(f"{base}/")
    page.get_by_role("link", name=experiment_name).wait_for(timeout=60_000)
    assert page.url == f"{base}/#/experiments"
    assert page.get_by_text("Welcome to MLflow").count() == 0
    page.screenshot(path=str(tmp_path / "experiments.png"))
    page.get_by_role("link", name=experiment_name).click()
    page.get_by_text("gate FAILED · nightly-bad").first.wait_for(timeout=60_000)
    page.get_by_text("nightly-ok", exact=True).first.wait_for(timeout=10_000)
    assert page.get_by_text("gate FAILED · nightly-ok").count() == 0
    assert page.evaluate("localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"'
    _wait_for_columns_in_view(page, BCE, GATE)
    headers = _headers_in_view(page)
    assert (headers.get(BCE), headers.get(GATE)) == ("bce", "quality_gate"), headers
    for run_id, (bce, gate) in runs.items():  # the cells against MLflow's own record of each run
        assert float(_cell(page, run_id, BCE).inner_text()) == pytest.approx(bce, rel=1e-12)
        assert _cell(page, run_id, GATE).inner_text().strip() == gate
        # every digit in view, none cut by an ellipsis
        assert _cell(page, run_id, BCE).evaluate(
            "c => [c, ...c.querySelectorAll('*')].every(e => e.scrollWidth <= e.clientWidth)"
        )
    assert page.get_by_text("Ask questions about your").count() == 0  # the assistant panel did not open by itself
    page.screenshot(path=str(tmp_path / "experiment.png"))


def _deep_link_opens_the_runs_and_keeps_the_reviewers_columns(
    page, base: str, experiment_id: str, tmp_path: Path
) -> None:
    """A link to the experiment opens it (not the list); a reviewer who unticks BCE in the Columns menu
    finds it unticked after a reload: the default fills only a choice not made yet."""
    page.goto(f"{base}/#/experiments/{experiment_id}")
    page.get_by_text("nightly-ok", exact=True).first.wait_for(timeout=60_000)
    assert page.url.startswith(f"{base}/#/experiments/{experiment_id}")
    _wait_for_columns_in_view(page, BCE, GATE)
    page.get_by_role("button", name="Columns").click()
    page.get_by_role("dialog").get_by_text("bce", exact=True).click()
    page.keyboard.press("Escape")
    page.wait_for_function(f"() => !document.querySelector('.ag-header-cell[col-id=\"{BCE}\"]')", timeout=10_000)
    page.reload()
    page.get_by_text("nightly-ok", exact=True).first.wait_for(timeout=60_000)
    _wait_for_columns_in_view(page, GATE)
    headers = _headers_in_view(page)
    assert BCE not in headers and headers.get(GATE) == "quality_gate", headers
    page.screenshot(path=str(tmp_path / "columns_kept.png"))


def _reads_the_report_metrics_and_plot(page, base: str, failed, tmp_path: Path) -> None:
    """The run's report, rendered inline by MLflow (the forest plot with the gate's bound, the
    sortable table), then its metrics, its logged table and a plot, as MLflow's own pages show them."""
    page.goto(
        f"{base}/#/experiments/{failed.experiment_id}/runs/{failed.run_id}/artifacts?workflowType=machine_learning"
    )
    page.get_by_text("report.html").first.wait_for(timeout=60_000)
    page.get_by_text("report.html").first.click()
    report = page.frame_locator("iframe").first
    report.locator("table.sortable").first.wait_for(timeout=30_000)
    plot = report.locator('img[alt="plots/bce_by_partition.png"]')
    plot.wait_for(timeout=30_000)
    assert plot.evaluate("i => i.complete && i.naturalWidth >= 500")  # decoded, not a broken image
    assert report.locator("tr.failed").count() >= 1
    assert "quality gate failed" in report.locator("body").inner_text()
    plot.scroll_into_view_if_needed()  # the report scrolls inside its frame: the forest plot in the screenshot
    page.screenshot(path=str(tmp_path / "report.png"))
    run_page = f"{base}/#/experiments/{failed.experiment_id}/runs/{failed.run_id}"
    page.goto(run_page)
    page.get_by_text("bce", exact=True).first.wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "run.png"))
    page.goto(run_page + "/artifacts")
    page.get_by_text("bce_by_partition.json").first.wait_for(timeout=60_000)
    page.get_by_text("bce_by_partition.json").first.click()
    page.get_by_text("region").first.wait_for(timeout=30_000)  # the table's partition column
    page.get_by_text("plots", exact=True).first.click()
    page.get_by_text("bce_by_partition.png").first.click()
    # the UI fetches the artifact and shows it from a blob: URL once it has decoded
    page.wait_for_function(
        "() => [...document.images].some(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth >= 500)",
        timeout=30_000,
    )
    page.screenshot(path=str(tmp_path / "plot.png"))


def test_reviewer_lands_on_the_runs_sees_the_failed_gate_and_reads_the_report(
    prefect_server, mlflow_uri, hive_data, tmp_path
):
    """Screenshots of each step go to this test's folder (tmp_path): experiments.png, experiment.png,
    columns_kept.png, report.png, run.png, plot.png."""
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    from flows.evaluate import evaluate_flow
    from flows.settings import EvaluateSettings

    base = dict(data=str(hive_data), label="label", features=["a", "b", "c"])
    ok = evaluate_flow(
        EvaluateSettings(**base, run_name="nightly-ok", gates={"max_partition_bce": 5.0, "judge_on": "point"})
    )
    failed = evaluate_flow(
        EvaluateSettings(**base, run_name="nightly-bad", gates={"max_partition_bce": 0.3, "judge_on": "point"}),
        return_state=True,
    ).result(raise_on_failure=False)
    assert ok.gate_passed and not failed.gate_passed
    client = MlflowClient(mlflow_uri)
    runs = {
        r: (client.get_run(r).data.metrics["bce"], client.get_run(r).data.tags["quality_gate"])
        for r in (ok.run_id, failed.run_id)
    }
    assert [gate for _, gate in runs.values()] == ["passed", "failed"]
    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "ui", "--port", str(port)],
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri},
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health", ui)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
            )
            # each page its own browser context: a browser that never chose a view or columns
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _lands_on_the_experiments_and_opens_the_runs(
                page, url, client.get_experiment(failed.experiment_id).name, runs, tmp_path
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _deep_link_opens_the_runs_and_keeps_the_reviewers_columns(page, url, failed.experiment_id, tmp_path)
            _reads_the_report_metrics_and_plot(page, url, failed, tmp_path)
            browser.close()
    finally:
        _stop(ui)
    print(f"screenshots: {tmp_path}")
