"""A reviewer's walk through the MLflow UI that `bce-eval ui` serves, in headless Chromium."""

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


def test_reviewer_finds_run_table_and_plot(prefect_server, mlflow_uri, hive_data, tmp_path):
    from playwright.sync_api import sync_playwright

    from flows.evaluate import evaluate_flow
    from flows.settings import EvaluateSettings

    ev = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"], run_name="reviewed-run"))
    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "ui", "--port", str(port)],
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}, cwd=REPO, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", ui)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            base = f"http://127.0.0.1:{port}/#/experiments/{ev.experiment_id}/runs/{ev.run_id}"
            page.goto(base)
            page.get_by_text("reviewed-run").first.wait_for(timeout=60_000)
            page.get_by_text("bce", exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "run.png"))

            page.goto(base + "/artifacts")
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
