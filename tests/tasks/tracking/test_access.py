"""tasks/tracking/access.py: the default store's URI, the command or URL that opens MLflow's UI, and
the one request that checks a tracking server accepts this process's credentials (answered here by a
tiny HTTP server on a thread of this process, which records what it was sent)."""

from __future__ import annotations

import base64
import http.server
import os
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import tasks.home
from tasks.errors import InputError
from tasks.tracking.access import check_tracking_access, default_store_uri, ui_command, ui_hint

CHECKOUT = Path(__file__).resolve().parents[3]
SCRIPT = Path(sys.executable).parent / "bce-eval"
PASSWORD = "pw-never-shown-91c2"


def test_the_default_store_is_mlflow_db_in_the_projects_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert default_store_uri() == f"sqlite:///{CHECKOUT}/mlflow/mlflow.db"
    monkeypatch.setattr(tasks.home, "CODE_ROOT", tmp_path / "site-packages")  # an installed copy: the current folder
    monkeypatch.chdir(tmp_path)
    assert default_store_uri() == f"sqlite:///{tmp_path}/mlflow/mlflow.db"


@pytest.fixture
def script_not_on_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    if not SCRIPT.exists():
        pytest.skip("the bce-eval console script is not installed beside this Python")
    monkeypatch.setenv("PATH", "/nonexistent")
    return SCRIPT


def test_ui_command_for_the_default_store_a_server_and_another_store(
    script_not_on_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(CHECKOUT)
    local = os.path.relpath(script_not_on_path)  # the venv's script, as this shell can run it
    assert ui_command(default_store_uri()) == f"{local} ui"
    assert ui_command("sqlite:////srv/other.db") == f"{local} ui --backend-store-uri sqlite:////srv/other.db"
    assert (
        ui_command("postgresql://bob:secret@db:5432/mlflow")
        == f"{local} ui --backend-store-uri postgresql://db:5432/mlflow"
    )
    assert ui_command(f"https://bob:{PASSWORD}@mlflow.example.org/?token=x") == (
        "https://mlflow.example.org/#/experiments?workflowType=machine_learning"
    )


def test_the_script_is_named_bare_when_on_path_and_in_full_from_elsewhere(
    script_not_on_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)  # a relative path from here would start with ..
    assert ui_command("sqlite:////x.db") == f"{script_not_on_path} ui --backend-store-uri sqlite:////x.db"
    monkeypatch.setenv("PATH", str(script_not_on_path.parent))
    assert ui_command("sqlite:////x.db") == "bce-eval ui --backend-store-uri sqlite:////x.db"


def test_ui_hint_says_browser_for_a_url_and_command_for_a_store(
    script_not_on_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PATH", str(script_not_on_path.parent))
    assert (
        ui_hint("http://127.0.0.1:5000")
        == "open it in a browser: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
    )
    assert ui_hint("sqlite:////x.db") == "open it with: bce-eval ui --backend-store-uri sqlite:////x.db"


# --- check_tracking_access ----------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    status = 200
    seen: list[dict[str, str]]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.seen.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


def test_a_local_store_is_not_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    asked: list[object] = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: asked.append(a))
    check_tracking_access(f"sqlite:///{tmp_path}/mlflow.db")
    check_tracking_access("postgresql://db/mlflow")
    check_tracking_access(str(tmp_path / "mlruns"))
    assert asked == []


def test_one_cheap_request_with_basic_credentials(answering: _Server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "ignored-when-a-password-is-set")
    check_tracking_access(_url(answering))
    assert answering.seen == [
        {
            "path": "/api/2.0/mlflow/experiments/search?max_results=1",
            "authorization": "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode(),
        }
    ]


def test_credentials_in_the_uri_go_in_the_header_and_never_in_a_message(answering: _Server):
    port = answering.server_address[1]
    check_tracking_access(f"http://carol:{PASSWORD}@127.0.0.1:{port}/")
    assert answering.seen == [
        {
            "path": "/api/2.0/mlflow/experiments/search?max_results=1",
            "authorization": "Basic " + base64.b64encode(f"carol:{PASSWORD}".encode()).decode(),
        }
    ]
    answering.status = 401
    with pytest.raises(InputError) as err:
        check_tracking_access(f"http://carol:{PASSWORD}@127.0.0.1:{port}/")
    assert "refused user 'carol' (401" in str(err.value) and PASSWORD not in str(err.value)


def test_a_token_goes_as_bearer(answering: _Server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t0k3n")
    check_tracking_access(_url(answering))
    assert [s["authorization"] for s in answering.seen] == ["Bearer t0k3n"]


@pytest.mark.parametrize("user, who", [(None, "a request without credentials"), ("bob", "user 'bob'")])
def test_401_is_bad_input_in_one_line_without_the_password(
    answering: _Server, monkeypatch: pytest.MonkeyPatch, user, who
):
    answering.status = 401
    if user:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    port = answering.server_address[1]
    with pytest.raises(InputError) as err:
        check_tracking_access(f"http://127.0.0.1:{port}/")
    assert str(err.value) == (
        f"the MLflow server at http://127.0.0.1:{port}/ refused {who} (401: wrong or missing credentials); "
        "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of that server"
    )
    assert len(answering.seen) == 1


def test_403_says_no_permission(answering: _Server):
    answering.status = 403
    with pytest.raises(
        InputError, match=r"refused a request without credentials \(403: no permission\); ask its admin for EDIT"
    ):
        check_tracking_access(_url(answering))


def test_other_answers_and_an_unreachable_server_are_left_to_the_logging_step(answering: _Server):
    answering.status = 500
    check_tracking_access(_url(answering))
    assert len(answering.seen) == 1
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    check_tracking_access(f"http://127.0.0.1:{closed}")
