"""The one way this package makes a Prefect task from a plain function."""

from __future__ import annotations

from typing import Any, Callable

from tasks.errors import InputError


def _is_transient(exc: BaseException) -> bool:
    """Failures worth a retry: the network, a server, a locked database. Not bad input, not bugs."""
    if isinstance(exc, InputError):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"MlflowException", "RequestException", "OperationalError", "HTTPError", "RestException", "TrackingError"})


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - classified, not swallowed: the state stays failed
        return _is_transient(exc)
    return False


def as_task(fn: Callable[..., Any], *, name: str, retries: int = 0, **kwargs: Any) -> Any:
    """A thin ``@task`` around ``fn``: no input hashing (inputs are large frames and models)."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    if retries:
        kwargs.setdefault("retry_delay_seconds", [2, 5, 15][:retries] + [15] * max(0, retries - 3))
        kwargs["retry_condition_fn"] = _retry_if_transient
    return task(fn, name=name, retries=retries, cache_policy=NO_CACHE, persist_result=False, **kwargs)
