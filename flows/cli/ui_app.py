"""MLflow's tracking server, its UI opening on the experiments in the model-training view with BCE
and the gate among the run list's columns: ``mlflow server --app-name bce-eval``.

This app is MLflow's own, with one change: the page it serves starts with a small script that sets
the UI's own defaults where the browser has no choice yet (a reviewer's own choice is kept):

- the view switch: MLflow 3.17's UI keeps one per browser (GenAI or model training) in localStorage,
  under ``mlflow.workflowType_v1``, GenAI when unset, and follows it over an experiment's
  ``mlflow.experimentKind`` tag; the script sets model training;
- the assistant panel does not open by itself on the first visit (it needs an LLM provider);
- the runs table's columns: the UI keeps them per experiment (per set of experiments compared) in
  localStorage, under ``MLflowLocalStorage-1.1-ExperimentPage-["<id>"]-ReactComponentState`` (the
  experiment page's whole state: search, columns, their order and widths), and shows Source, Models
  and Dataset where that key is unset; the first time the UI reads such a key and finds it unset, the
  script writes there MLflow's columns plus ``bce`` and the ``quality_gate`` tag, those two right
  after the run's name and date. The experiment ids are only known as the reviewer opens an
  experiment (the UI changes pages without loading this one again), hence a hook on that read rather
  than a key written up front;
- the plain address (``/``, no route) opens the experiments list instead of MLflow's welcome page;
  links to a page (``/#/experiments/1``...) open that page.

`bce-eval ui` runs it; links bce-eval prints also carry ``?workflowType=machine_learning`` for
servers that do not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: the UI's own storage keys and values (JSON, as the UI writes them), set only where the browser has
#: none: the model-training view, and the assistant panel not opened by itself on the first visit
#: (it needs an LLM provider; a reviewer can still open it)
_DEFAULTS = (
    ("mlflow.workflowType_v1", '"machine_learning"'),
    ("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true"),
)
#: the storage key of an experiment page's state (its LocalStorageUtils store "ExperimentPage-<ids>")
_EXPERIMENT_PAGE_STATE = r"^MLflowLocalStorage-1\.1-ExperimentPage-.*-ReactComponentState$"
#: the runs table's columns as the UI names them: MLflow's own default ones, then the overall BCE and
#: the gate's verdict (tasks/judge/gates.py's tag: passed or failed; empty for a run without a gate)
_RUN_COLUMNS = (
    "attributes.`Source`",
    "attributes.`Models`",
    "attributes.`Dataset`",
    "metrics.`bce`",
    "tags.`quality_gate`",
)
#: their order, as the UI keeps it when a reviewer drags a column: BCE and the verdict right after
#: the run's name and date (MLflow keeps those two first), in view before the wide Dataset column
_COLUMN_ORDER = (
    "attributes.`Run Name`",
    "runDateAndNestInfo",
    "metrics.`bce`",
    "tags.`quality_gate`",
    "attributes.`Dataset`",
    "duration",
    "attributes.`Source`",
    "attributes.`Models`",
)
#: BCE's column wide enough for a float's every digit (the UI shows them all, cut with an ellipsis)
_COLUMN_WIDTHS = (("metrics.`bce`", 160),)
#: where the plain address leads (a hash route of MLflow's UI)
_START_ROUTE = "#/experiments"


def default_view_script() -> str:
    """The script that sets the UI's defaults where the browser has none (see the module's docstring).
    JSON strings are JavaScript string literals."""
    q = json.dumps
    # the UI fills in the rest of the page's state (search, sort, pinned or hidden runs) from its own defaults
    state = q(
        {
            "selectedColumns": list(_RUN_COLUMNS),
            "columnOrder": list(_COLUMN_ORDER),
            "columnWidths": dict(_COLUMN_WIDTHS),
        }
    )
    view = "".join(f"s.getItem({q(k)})===null&&s.setItem({q(k)},{q(v)});" for k, v in _DEFAULTS)
    columns = (
        f"var get=Storage.prototype.getItem,page=new RegExp({q(_EXPERIMENT_PAGE_STATE)});"
        "Storage.prototype.getItem=function(k){var v=get.call(this,k);"
        f"if(v===null&&this===s&&page.test(k)){{v={q(state)};this.setItem(k,v);}}return v;}};"
    )
    start = (
        "if(/^#?\\/?$/.test(location.hash))"
        f"history.replaceState(history.state,'',location.pathname+location.search+{q(_START_ROUTE)});"
    )
    # a function of its own: its names stay out of the page's global scope
    return f"<script>(function(){{try{{var s=window.localStorage;{view}{columns}{start}}}catch(e){{}}}})();</script>"


def index_page() -> bytes:
    """MLflow's index.html with the default-view script first in its head."""
    import mlflow.server

    page = (Path(mlflow.server.__file__).parent / "js" / "build" / "index.html").read_bytes()
    if b"<head>" not in page:
        raise RuntimeError(
            "MLflow's index.html has no <head>: this MLflow version is not the one bce-eval's UI app was written for"
        )
    return page.replace(b"<head>", b"<head>" + default_view_script().encode(), 1)


def create_app() -> Any:
    """MLflow's app (a factory: MLflow's server settings are in the environment by then) with its
    page at ``/`` served by a route of its own, first, so MLflow's security middleware (frame
    options, allowed hosts) still applies to it."""
    from mlflow.server.fastapi_app import app
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    page = index_page()

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    app.router.routes.insert(0, Route("/", index, methods=["GET", "HEAD"]))
    return app
