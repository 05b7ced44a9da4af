"""A reviewer's walk through the MLflow UI that `bce-eval ui` serves, in headless Chromium: the
experiment's runs in the model-training view with a failed gate marked, the run's report, its
metrics, table and plot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_servers import _free_port, _stop, _wait_http

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)")


def test_reviewer_lands_on_the_runs_sees_the_failed_gate_and_reads_the_report(prefect_server, mlflow_uri, hive_data, tmp_path):
    """Screenshots of each step go to this test's folder (tmp_path): experiment.png, report.png, run.png, plot.png."""
    from playwright.sync_api import sync_playwright

    from flows.evaluate import evaluate_flow
    from flows.settings import EvaluateSettings

    base = dict(data=str(hive_data), label="label", features=["a", "b", "c"])
    evaluate_flow(EvaluateSettings(**base, run_name="nightly-ok"))
    failed = evaluate_flow(EvaluateSettings(**base, run_name="nightly-bad", gates={"max_partition_bce": 0.3, "judge_on": "point"}),
                           return_state=True).result(raise_on_failure=False)
    assert not failed.gate_passed
    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "ui", "--port", str(port)],
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}, cwd=REPO, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", ui)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # the experiment, opened by hand (no view in the link, a browser that never chose one), shows
            # its runs in the model-training view, the failed gate in the run's name
            page.goto(f"http://127.0.0.1:{port}/#/experiments/{failed.experiment_id}")
            page.get_by_text("gate FAILED · nightly-bad").first.wait_for(timeout=60_000)
            page.get_by_text("nightly-ok", exact=True).first.wait_for(timeout=10_000)
            assert page.get_by_text("gate FAILED · nightly-ok").count() == 0
            assert page.evaluate("localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"'
            page.screenshot(path=str(tmp_path / "experiment.png"))
            assert page.get_by_text("Ask questions about your").count() == 0  # the assistant panel did not open by itself
            page.screenshot(path=str(tmp_path / "experiment.png"))
            # the run's report, rendered inline by MLflow: the forest plot and the sortable table
            page.goto(f"http://127.0.0.1:{port}/#/experiments/{failed.experiment_id}/runs/{failed.run_id}/artifacts?workflowType=machine_learning")
            page.get_by_text("report.html").first.wait_for(timeout=60_000)
            page.get_by_text("report.html").first.click()
            report = page.frame_locator("iframe").first
            report.locator("table.sortable").first.wait_for(timeout=30_000)
            report.locator('img[alt="plots/bce_by_partition.png"]').wait_for(timeout=30_000)
            assert report.locator("tr.failed").count() >= 1
            assert "quality gate failed" in report.locator("body").inner_text()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            # the run's metrics, its logged table and a plot, as MLflow's own pages show them
            run_page = f"http://127.0.0.1:{port}/#/experiments/{failed.experiment_id}/runs/{failed.run_id}"
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
            browser.close()
    finally:
        _stop(ui)
    print(f"screenshots: {tmp_path / 'experiment.png'}, {tmp_path / 'report.png'}")
