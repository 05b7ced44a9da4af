"""MLflow's tracking server, its UI opening in the model-training view: ``mlflow server --app-name bce-eval``.

MLflow 3.17's UI keeps one view switch per browser (GenAI or model training) in localStorage, under
``mlflow.workflowType_v1``, GenAI when unset, and follows it over an experiment's
``mlflow.experimentKind`` tag. This app is MLflow's own, with one change: the page it serves sets
that switch to model training when the browser has none yet (a reviewer's own choice is kept), and
keeps the assistant panel from opening by itself on the first visit.
`bce-eval ui` runs it; links bce-eval prints also carry ``?workflowType=machine_learning`` for
servers that do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the UI's own storage keys and values (JSON, as the UI writes them), set only where the browser has
#: none: the model-training view, and the assistant panel not opened by itself on the first visit
#: (it needs an LLM provider; a reviewer can still open it)
_DEFAULTS = {"mlflow.workflowType_v1": '"machine_learning"', "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}
_DEFAULT_VIEW = (
    "<script>try{"
    + "".join(f"localStorage.getItem({k!r})===null&&localStorage.setItem({k!r},{v!r});" for k, v in _DEFAULTS.items())
    + "}catch(e){}</script>"
).encode()


def index_page() -> bytes:
    """MLflow's index.html with the default-view script first in its head."""
    import mlflow.server

    page = (Path(mlflow.server.__file__).parent / "js" / "build" / "index.html").read_bytes()
    if b"<head>" not in page:
        raise RuntimeError("MLflow's index.html has no <head>: this MLflow version is not the one bce-eval's UI app was written for")
    return page.replace(b"<head>", b"<head>" + _DEFAULT_VIEW, 1)


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
