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
from typing import Any, Awaitable, Callable

#: the UI's own storage keys and values (JSON, as the UI writes them), set only where the browser has
#: none: the model-training view, and the assistant panel not opened by itself on the first visit
#: (it needs an LLM provider; a reviewer can still open it)
_DEFAULTS = {"mlflow.workflowType_v1": '"machine_learning"', "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}
_DEFAULT_VIEW = (
    "<script>try{"
    + "".join(f"localStorage.getItem({k!r})===null&&localStorage.setItem({k!r},{v!r});" for k, v in _DEFAULTS.items())
    + "}catch(e){}</script>"
).encode()
_INDEX_PATHS = ("/", "/index.html")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def index_page() -> bytes:
    """MLflow's index.html with the default-view script first in its head."""
    import mlflow.server

    page = (Path(mlflow.server.__file__).parent / "js" / "build" / "index.html").read_bytes()
    return page.replace(b"<head>", b"<head>" + _DEFAULT_VIEW, 1)


class ModelTrainingIndex:
    """An ASGI app: GET / is :func:`index_page`; every other request goes to MLflow's app."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self.page = index_page()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"] in _INDEX_PATHS:
            headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(self.page)).encode()),
                       (b"cache-control", b"no-cache")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": self.page if scope["method"] == "GET" else b""})
            return
        await self.app(scope, receive, send)


def create_app() -> ModelTrainingIndex:
    """The app uvicorn serves (a factory: MLflow's server settings are in the environment by then)."""
    from mlflow.server.fastapi_app import app

    return ModelTrainingIndex(app)
